"""Read a DeepSeek-V4 checkpoint directory by Hub tensor name, dequantising on the fly.

Layouts (detected from the tensor names):
- `deepseek`: DeepSeek's Hub names (`layers.N.attn.wq_a.weight`, `embed.weight`, ...), as
  released (dense FP8 e4m3 with an F8_E8M0 `.scale` per 128x128 block, routed experts as
  MXFP4: I8 bytes holding two e2m1 values, low nibble first, with one E8M0 `.scale` per 32
  inputs) or upcast (BF16 / F32, no scales).
- `hf`: transformers' names (`model.layers.N.self_attn.q_a_proj.weight`, routed experts
  stacked as `mlp.experts.gate_up_proj` [E, 2I, D] (w1 rows then w3 rows) and
  `mlp.experts.down_proj` [E, D, I]); MTP tensors keep the Hub names, as `ckpt upcast
  --layout hf` writes them.

Every read is by row range with pread (`read_float32_rows`): an FP8 weight is read whole
128-row blocks at a time with its scale rows, an FP4 expert row by row with its own scales,
so memory is bounded by the rows asked for. Nothing is cached.

The config is read by `config.read_config_file` (`config_v4.DeepseekV4Config`), the number
formats decoded by `ckpt_tools.formats`, the names mapped by `families.deepseek_v4`: one
place for each.
"""

from __future__ import annotations

import math
from functools import cached_property
from pathlib import Path

import numpy as np

from ..configs.parse import read_config_file
from ..configs.v4 import DeepseekV4Config
from ..io.dtypes import DTYPES
from ..errors import ConfigError, FormatError, MissingTensorError, ShapeMismatchError
from ..families.deepseek_v4 import EMBED, expert_of, hf_name, stacked_names
from ..families.deepseek_v4.mp_layout import rank_pieces
from ..families.deepseek_v4.tensor_plan import V4TensorPlan
from ..formats import SCALE_SUFFIX, mp_scale_name
from ..formats.mxfp4 import decode_rows
from ..io.index import INDEX_FILE, SINGLE_FILE, read_index
from ..inventory.mp_layout import find_mp_files
from ..io.safe_paths import safe_member
from ..io.safetensors_io import SafetensorsReader
from ..io.source import Source
from ..configs.sources import CONFIG_FILE


class _Where:
    """Where a Hub tensor's rows live: stored tensor, first row, row count, row shape."""

    __slots__ = ("name", "offset", "rows", "row_shape")

    def __init__(self, name: str, offset: int, rows: int, row_shape: tuple[int, ...]):
        self.name, self.offset, self.rows, self.row_shape = name, offset, rows, row_shape


def load_config(path: Path) -> DeepseekV4Config:
    """The V4 config (Hub keys as attributes), read as every command reads it."""
    config = read_config_file(path)
    if not isinstance(config, DeepseekV4Config):
        raise ConfigError(f"{path}: expected model_type 'deepseek_v4', found "
                          f"{config.reading.original_model_type!r}")
    return config


class V4Checkpoint:
    """Read-only V4 checkpoint (see the module docstring); the `V4Weights` source."""

    def __init__(self, path: str | Path | Source):
        self.source = Source.open(path)  # the run's: the headers the inventory read
        self.dir = self.source.path  # local, or remote (RemotePath: read by range)
        if not self.dir.is_dir():
            raise FormatError(f"{self.dir}: no such directory")
        config_path = self.dir / CONFIG_FILE
        if not config_path.is_file():
            raise ConfigError(f"{self.dir}: directory has no {CONFIG_FILE}")
        self.config = load_config(config_path)
        self._readers: dict[str, SafetensorsReader] = {}

    def close(self) -> None:
        for r in self._readers.values():
            r.close()
        self._readers.clear()

    # -- files ----------------------------------------------------------------------------
    @cached_property
    def weight_map(self) -> dict[str, str]:
        if (self.dir / INDEX_FILE).is_file():
            return read_index(self.dir / INDEX_FILE).weight_map
        if (self.dir / SINGLE_FILE).is_file():
            return {n: SINGLE_FILE for n in self._reader(SINGLE_FILE).names}
        raise FormatError(f"{self.dir}: neither {INDEX_FILE} nor {SINGLE_FILE} found")

    @cached_property
    def layout(self) -> str:
        return "hf" if EMBED.hf in self.weight_map else "deepseek"  # as the V4 checks tell

    def _reader(self, shard: str) -> SafetensorsReader:
        r = self._readers.get(shard)
        if r is None:
            r = self._readers[shard] = self.source.reader(safe_member(self.dir, shard,
                                                                      what="shard"))
        return r

    def _entry(self, stored: str):
        shard = self.weight_map.get(stored)
        if shard is None:
            raise MissingTensorError(f"{self.dir}: tensor '{stored}' is not in the index")
        reader = self._reader(shard)
        if stored not in reader.header:
            raise MissingTensorError(f"{reader.path}: tensor '{stored}' is indexed here but "
                                     f"absent from the file")
        return reader, reader.header[stored]

    # -- names ----------------------------------------------------------------------------
    def _where(self, hub: str) -> _Where | None:
        stored = hub
        if self.layout == "hf":
            expert = expert_of(hub)
            if expert is None:
                stored = hf_name(hub) or hub  # MTP keeps the Hub names
            else:  # a slice of the stacked experts
                layer, e, w = expert
                stored = stacked_names(layer)[1 if w == "w2" else 0]
                if stored not in self.weight_map:
                    return None
                _, entry = self._entry(stored)
                n_exp, rows, cols = entry.shape
                if w == "w2":
                    return _Where(stored, e * rows, rows, (cols,))
                half = rows // 2
                return _Where(stored, e * rows + (half if w == "w3" else 0), half, (cols,))
        if stored not in self.weight_map:
            return None
        _, entry = self._entry(stored)
        shape = tuple(entry.shape)
        return _Where(stored, 0, shape[0] if shape else 1, shape[1:])

    def __contains__(self, hub: str) -> bool:
        return self._where(hub) is not None

    def _located(self, hub: str) -> _Where:
        where = self._where(hub)
        if where is None:
            raise MissingTensorError(f"{self.dir}: tensor '{hub}' is missing")
        return where

    def shape_of(self, hub: str) -> tuple[int, ...]:
        """The logical (dequantised) shape: an FP4 expert's columns count two per byte."""
        where = self._located(hub)
        _, entry = self._entry(where.name)
        cols = where.row_shape
        if entry.dtype == "I8" and self._scale_name(where.name) is not None:
            cols = (cols[0] * 2,)
        return (where.rows, *cols)

    def _scale_name(self, stored: str) -> str | None:
        if not stored.endswith(".weight"):
            return None
        for name in (mp_scale_name(stored), stored + SCALE_SUFFIX):  # DeepSeek's, HF's
            if name in self.weight_map:
                return name
        return None

    # -- values ---------------------------------------------------------------------------
    def _rows(self, stored: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a stored tensor viewed as [rows, *row_shape], stored dtype."""
        reader, entry = self._entry(stored)
        row_shape = entry.shape[-1:] if len(entry.shape) == 3 else tuple(entry.shape[1:])
        dtype = DTYPES[entry.dtype].numpy
        row_bytes = math.prod(row_shape) * dtype.itemsize
        data = reader.read_range(stored, start * row_bytes, stop * row_bytes)
        return np.frombuffer(data, dtype).reshape((stop - start, *row_shape))

    def read_float32_rows(self, hub: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the tensor's float32 value (dequantised when stored so)."""
        where = self._located(hub)
        if not 0 <= start <= stop <= where.rows:
            raise ShapeMismatchError(f"{self.dir}: tensor '{hub}': rows [{start}, {stop}) "
                                     f"outside [0, {where.rows})")
        lo = where.offset
        _, entry = self._entry(where.name)
        scale = self._scale_name(where.name)
        return decode_rows(lambda a, b: self._rows(where.name, lo + a, lo + b),
                           None if scale is None else lambda a, b: self._rows(scale, a, b),
                           entry.dtype, start, stop, where.rows, hub)

    def read_float32(self, hub: str) -> np.ndarray:
        return self.read_float32_rows(hub, 0, self._located(hub).rows)


class V4MpCheckpoint:
    """Read-only DeepSeek-V4 model-parallel directory (`model{i}-mp{N}.safetensors`, as
    `ckpt reshard --to deepseek-mp` and DeepSeek's V4 convert.py write it), by Hub name.

    Which rank holds which rows or columns of a tensor comes from the rule that writes the
    files (`families/deepseek_v4/mp_layout.rank_pieces`): row-split tensors are read from
    the ranks whose rows overlap the range asked for, `wo_b` (split on dim 1) from every
    rank, replicas and routed experts from one rank; FP8 pieces keep their own scale pieces,
    `wo_a` is BF16.
    """

    layout = "deepseek-mp"

    def __init__(self, path: str | Path | Source):
        source = Source.open(path)  # the run's: the headers the inventory read
        self.dir = source.path  # local, or remote (RemotePath: read by range)
        config_path = self.dir / CONFIG_FILE
        if not config_path.is_file():
            raise ConfigError(f"{self.dir}: directory has no {CONFIG_FILE}")
        self.config = load_config(config_path)
        files = find_mp_files(self.dir)
        self._readers = {r: source.reader(p) for r, p in files.items()}
        first = self._readers[0].header.entries
        experts = "fp4" if any(e.dtype == "I8" for e in first.values()) else "fp8"
        plan = V4TensorPlan(self.config, "fp8", expert_dtype=experts)
        self._specs = {s.name: s for s in plan.specs}
        self._pieces: dict[str, list] = {}
        for r, pieces in enumerate(rank_pieces(plan, len(files))):
            for p in pieces:
                self._pieces.setdefault(p.name, []).append((r, p))

    def close(self) -> None:
        for r in self._readers.values():
            r.close()
        self._readers.clear()

    def __contains__(self, hub: str) -> bool:
        return hub in self._pieces and self._specs[hub].scale_of is None

    def _spec(self, hub: str):
        if hub not in self:
            raise MissingTensorError(f"{self.dir}: tensor '{hub}' is missing")
        return self._specs[hub]

    def shape_of(self, hub: str) -> tuple[int, ...]:
        spec = self._spec(hub)
        rows, *cols = spec.shape
        return (rows, cols[0] * 2) if spec.dtype == "I8" else (rows, *cols)

    def _reader(self, rank: int, name: str) -> SafetensorsReader:
        reader = self._readers[rank]
        if name not in reader.header:
            raise MissingTensorError(f"{reader.path}: tensor '{name}' is missing")
        return reader

    def _piece_rows(self, rank: int, piece, start: int, stop: int, name: str) -> np.ndarray:
        """Rows [start, stop) of one rank's piece (its own row numbering), as float32."""
        reader = self._reader(rank, piece.name)
        spec = self._specs[piece.name]
        scale = None if piece.dequantize_with or spec.scale_name is None else spec.scale_name
        return decode_rows(lambda a, b: reader.read_rows(piece.name, a, b),
                           None if scale is None
                           else lambda a, b: self._reader(rank, scale).read_rows(scale, a, b),
                           piece.dtype, start, stop, piece.shape[0] if piece.shape else 1, name)

    def read_float32_rows(self, hub: str, start: int, stop: int) -> np.ndarray:
        rows = self.shape_of(hub)[0]
        if not 0 <= start <= stop <= rows:
            raise ShapeMismatchError(f"{self.dir}: tensor '{hub}': rows [{start}, {stop}) "
                                     f"outside [0, {rows})")
        pieces = self._pieces[hub]
        rank, first = pieces[0]
        if first.dim is None:  # replica or routed expert: one rank holds it whole
            return self._piece_rows(rank, first, start, stop, hub)
        if first.dim == 1:
            return np.concatenate([self._piece_rows(r, p, start, stop, hub) for r, p in pieces],
                                  axis=1)
        parts = [self._piece_rows(r, p, max(start, p.start) - p.start,
                                  min(stop, p.stop) - p.start, hub)
                 for r, p in pieces if p.start < stop and start < p.stop]
        if not parts:
            return np.empty((0, *self.shape_of(hub)[1:]), np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def read_float32(self, hub: str) -> np.ndarray:
        return self.read_float32_rows(hub, 0, self.shape_of(hub)[0])


def open_source(path, kind: str):
    """The family's reader hook (`families`): Hub / HF names, or DeepSeek's rank files."""
    return V4MpCheckpoint(path) if kind == "mp" else V4Checkpoint(path)
