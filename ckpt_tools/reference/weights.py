"""Lazy, checked weight access for the reference forward pass.

A `TensorSource` is anything with `.config`, `name in source` and `.read_float32(name)` (HF
tensor names): `ckpt_tools.inventory.checkpoint.Checkpoint` for HF BF16 / F16 / F32 and
block-FP8 (dequantised on the fly), the DeepSeek model-parallel reader for `model*-mp*`
files.

Nothing is read ahead: the forward pass asks for one tensor when it needs it and drops it
after use, so a routed expert is read only when a token selects it. A source that can also
read row ranges (`read_float32_rows` + `shape_of`, as `Checkpoint` does) has its large
matrices streamed through a fixed budget of rows (`chunk_bytes`), which keeps an lm_head or
a dense MLP of a 671B model out of memory as a whole.

Names come from the families' rows by role (`ckpt_tools.inventory.modules`, as `ROLES`);
each resolved name must be in the config's `TensorPlan` and every array read must have the
plan's shape, so a wrong or truncated tensor fails with its name before any math.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import numpy as np

from ..configs.parse import Config
from ..errors import MissingTensorError, ShapeMismatchError
from ..families.base import wrapped_name
from ..formats import FP8_BLOCK
from ..inventory.modules import roles
from ..inventory.tensor_plan import TensorPlan


@runtime_checkable
class TensorSource(Protocol):
    """Read access by HF tensor name; values come back as float32 arrays."""

    config: Config

    def __contains__(self, name: str) -> bool: ...

    def read_float32(self, name: str) -> np.ndarray: ...


@runtime_checkable
class RowSource(TensorSource, Protocol):
    """A source that can also read rows [start, stop) of a tensor (streamed matmuls)."""

    def shape_of(self, name: str) -> tuple[int, ...]: ...

    def read_float32_rows(self, name: str, start: int, stop: int) -> np.ndarray: ...


# role -> HF name template; {L} = layer, {E} = routed expert. DeepSeek's short module names
# (inference/model.py) are the roles, so the maths reads like the reference code.
ROLES: dict[str, str] = roles()

DEFAULT_CHUNK_BYTES = 64 << 20  # float32 rows of one streamed slice


class Weights:
    """Float32 tensors by role, read on demand from a `TensorSource` and never cached.

    Args:
        source: where tensors come from.
        chunk_bytes: float32 budget of one slice when streaming a matmul (row sources only).
    """

    def __init__(self, source: TensorSource, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        self.source = source
        self.config: Config = source.config
        self.plan = TensorPlan(self.config)  # shapes only; the stored layout does not matter
        self.chunk_bytes = chunk_bytes
        self._rows = isinstance(source, RowSource)
        self._label = str(getattr(source, "dir", None) or getattr(source, "path", None)
                          or type(source).__name__)

    # -- names --------------------------------------------------------------------------
    def name(self, role: str, layer: int | None = None, expert: int | None = None,
             copy: int = 0) -> str:
        """The HF name of `role` in `layer` (and `expert`, and `copy` where a layer holds
        several of its section), checked against the plan; the config's family's own row
        where it has the role (LongCat-Flash renames V3's)."""
        family = self.plan.architecture
        template = family.template(family.row(role), "hf") if self.has(role) else ROLES[role]
        name = wrapped_name(self.plan.prefix,
                            template.replace("{I}", str(copy)).format(L=layer, E=expert))
        if name not in self.plan:
            raise MissingTensorError(f"{self._label}: tensor '{name}' is not part of this "
                                     f"config's tensor plan")
        return name

    def has(self, role: str) -> bool:
        """Whether the config's family has a row `role` (e.g. fused experts)."""
        return any(r.role == role for r in self.plan.architecture.rows)

    def _expected(self, name: str) -> tuple[int, ...]:
        if name not in self.source:
            raise MissingTensorError(f"{self._label}: tensor '{name}' is missing")
        return self.plan.by_name[name].shape

    def _check(self, name: str, want: tuple[int, ...], got: tuple[int, ...]) -> None:
        if tuple(got) != tuple(want):
            raise ShapeMismatchError(f"{self._label}: tensor '{name}': expected shape "
                                     f"{list(want)}, found {list(got)}")

    # -- reads --------------------------------------------------------------------------
    def read(self, name: str) -> np.ndarray:
        """The whole tensor in float32 (norms, router, small projections)."""
        want = self._expected(name)
        if self._rows:  # pread: no mmap pages left behind in the resident set
            self._check(name, want, self.source.shape_of(name))
            array = self.source.read_float32_rows(name, 0, want[0])
        else:
            array = np.asarray(self.source.read_float32(name), dtype=np.float32)
        self._check(name, want, array.shape)
        return array

    def rows(self, name: str, index: Iterable[int]) -> np.ndarray:
        """Rows `index` along dim 0 (embedding lookup, one fused expert) without reading the
        rest."""
        want = self._expected(name)
        index = [int(i) for i in index]
        if not self._rows:
            return self.read(name)[index]
        self._check(name, want, self.source.shape_of(name))
        out = np.empty((len(index), *want[1:]), np.float32)  # [t, d]
        for k, i in enumerate(index):
            out[k] = self.source.read_float32_rows(name, i, i + 1)[0]
        return out

    def linear(self, x: np.ndarray, name: str) -> np.ndarray:
        """x @ W.T for W = `name` ([out, in]); W is streamed in row slices when possible."""
        want = self._expected(name)
        out_rows, in_cols = want
        if not self._rows or out_rows * in_cols * 4 <= self.chunk_bytes:
            w = self.read(name)  # [out, in]
            return x @ w.T
        self._check(name, want, self.source.shape_of(name))
        return project_in_row_slices(x, self.source, name, want, self.chunk_bytes, self._check)


def project_in_row_slices(x: np.ndarray, source, name: str, want: tuple[int, int],
                          chunk_bytes: int, check) -> np.ndarray:
    """x @ W.T with W = `name` ([out, in]) read in float32 row slices of at most `chunk_bytes`,
    so a large matrix never sits in memory whole; `check(name, want, got)` vets each slice."""
    out_rows, in_cols = want
    step = max(1, chunk_bytes // (in_cols * 4))
    step = step // FP8_BLOCK[0] * FP8_BLOCK[0] or step  # whole FP8 row blocks when it fits
    y = np.empty((*x.shape[:-1], out_rows), np.float32)  # [..., out]
    for r0 in range(0, out_rows, step):
        r1 = min(r0 + step, out_rows)
        w = source.read_float32_rows(name, r0, r1)  # [r1-r0, in]
        check(name, (r1 - r0, in_cols), w.shape)
        y[..., r0:r1] = x @ w.T
        del w
    return y
