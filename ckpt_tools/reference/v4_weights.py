"""Lazy, shape-checked weight access by Hub tensor name for the V4 reference decoder.

A source is anything with `.config` (Hub config keys as attributes), `name in source` and
`.read_float32(name)`; a source that also has `shape_of(name)` and
`read_float32_rows(name, start, stop)` gets its large matrices streamed through a fixed
budget of rows (quantised weights dequantised block row by block row), so an expert, an
lm_head or a 32768-wide wq_b never has to be whole in float32 at once.

V4 keeps DeepSeek's own tensor names (`layers.N.attn.wq_a.weight`, `embed.weight`, ...),
and the maths in deepseek_v4.py asks for each tensor with the shape it needs: a missing or
mis-shaped tensor fails with its name before any arithmetic. Nothing is cached.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..errors import MissingTensorError, ShapeMismatchError
from .weights import project_in_row_slices

DEFAULT_CHUNK_BYTES = 64 << 20  # float32 bytes of one streamed slice


class V4Weights:
    """Float32 tensors by Hub name, read on demand from a source and never cached.

    Args:
        source: where tensors come from (see the module docstring).
        chunk_bytes: float32 budget of one slice when streaming (row sources only).
    """

    def __init__(self, source, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        self.source = source
        self.config = source.config
        self.chunk_bytes = chunk_bytes
        self._rows = all(hasattr(source, a) for a in ("shape_of", "read_float32_rows"))
        self.label = str(getattr(source, "dir", None) or getattr(source, "path", None)
                         or type(source).__name__)

    def _present(self, name: str) -> None:
        if name not in self.source:
            raise MissingTensorError(f"{self.label}: tensor '{name}' is missing")

    def _check(self, name: str, want: tuple[int, ...], got: tuple[int, ...]) -> None:
        if tuple(got) != tuple(want):
            raise ShapeMismatchError(f"{self.label}: tensor '{name}': expected shape "
                                     f"{list(want)}, found {list(got)}")

    def _shape(self, name: str, want: tuple[int, ...]) -> None:
        """Check the stored shape before reading, when the source can tell it."""
        self._present(name)
        if self._rows:
            self._check(name, want, self.source.shape_of(name))

    def read(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """The whole tensor in float32 (norms, hc_*, router, small projections)."""
        self._shape(name, shape)
        if self._rows and len(shape) >= 1:
            array = self.source.read_float32_rows(name, 0, shape[0])
        else:
            array = np.asarray(self.source.read_float32(name), dtype=np.float32)
        self._check(name, shape, array.shape)
        return array

    def read_rows(self, name: str, start: int, stop: int, shape: tuple[int, ...]) -> np.ndarray:
        """Rows [start, stop) of a tensor of `shape` (one output group of wo_a)."""
        if not self._rows:
            return self.read(name, shape)[start:stop]
        self._shape(name, shape)
        array = self.source.read_float32_rows(name, start, stop)
        self._check(name, (stop - start, *shape[1:]), array.shape)
        return array

    def rows(self, name: str, index: Iterable[int], shape: tuple[int, ...]) -> np.ndarray:
        """Rows `index` of a 2-D tensor (embedding lookup) without reading the rest."""
        index = [int(i) for i in index]
        if not self._rows:
            return self.read(name, shape)[index]
        self._shape(name, shape)
        out = np.empty((len(index), *shape[1:]), np.float32)  # [t, d]
        for k, i in enumerate(index):
            out[k] = self.source.read_float32_rows(name, i, i + 1)[0]
        return out

    def int_rows(self, name: str, index: Iterable[int], shape: tuple[int, ...]) -> np.ndarray:
        """Rows of an integer table (tid2eid); values are exact through float32 below 2^24."""
        return self.rows(name, index, shape).astype(np.int64)

    def linear(self, x: np.ndarray, name: str, out_features: int) -> np.ndarray:
        """x @ W.T for W = `name` of shape [out_features, x.shape[-1]], streamed in row slices
        when the source allows and W is larger than the budget."""
        in_features = x.shape[-1]
        want = (out_features, in_features)
        if not self._rows or out_features * in_features * 4 <= self.chunk_bytes:
            return x @ self.read(name, want).T
        self._shape(name, want)
        return project_in_row_slices(x, self.source, name, want, self.chunk_bytes, self._check)


class DictSource:
    """An in-memory source (tests, and tensors already at hand): Hub name -> array."""

    def __init__(self, config, tensors: dict[str, np.ndarray], label: str = "tensors"):
        self.config, self.tensors, self.path = config, tensors, label

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def read_float32(self, name: str) -> np.ndarray:
        return np.asarray(self.tensors[name], dtype=np.float32)
