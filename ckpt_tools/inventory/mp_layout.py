"""DeepSeek's model-parallel inference layout (`model{i}-mp{N}.safetensors`), as data.

DeepSeek's `inference/convert.py` renames every HF tensor to its demo model's name,
splits column-parallel weights on dim 0 and row-parallel weights on dim 1 across N ranks,
sends each routed expert whole to rank e // (E / N) and copies everything else to every
rank (docs/architecture.md, "Model-parallel layout"). Here that is one table keyed by the
exact HF name of each tensor-plan family, derived from the families' rows
(`ckpt_tools.inventory.modules`; no substring replace), so a family the table does not
know is an error instead of a silent rename. Scales travel with their weights: an FP8
weight is split only where every rank's piece starts on a block boundary, so each rank's
`scale` is exactly the `ceil(out/128) x ceil(in/128)` grid DeepSeek's `Linear` allocates.

The MTP layer (`model.layers.{num_hidden_layers}.*`) is dropped by default, as convert.py
does: the demo model has no MTP module. `keep_mtp=True` keeps it under names of our own,
split like the main model's embedding and head.

`MpCheckpoint` reads such a directory back with the HF names, for the forward pass and
for `ckpt reshard --to hf`.
"""

from __future__ import annotations

from functools import cached_property, partial
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..configs.parse import read_config_file
from ..errors import (
    ConfigError,
    FormatError,
    MissingTensorError,
    UnexpectedTensorError,
    UnsupportedModelError,
)
from ..formats.fp8_block import dequantize, dequantize_rows
from ..io.index import (  # noqa: F401
    MP_FILE,
    MP_FILE_GLOB,
    MP_FILE_RE,
    chosen_mp_set,
    MP_SCALE_SUFFIX,
    mp_file_name,
    mp_layout_of,
    mp_rank_sets,
)
from .modules import COLUMN, EXPERT, MODULES, ROW, Rule  # noqa: F401  (COLUMN, ROW: API)
from ..io.reader_pool import PooledFiles, ReaderPool
from ..remote.path import RemotePath
from ..io.safetensors_io import SafetensorsReader
from ..io.source import Source
from ..configs.sources import CONFIG_FILE
from .tensor_plan import SCALE_SUFFIX, Group, TensorPlan, TensorSpec


def _family_table() -> dict[str, tuple[str, Rule]]:
    """Every HF family template -> (DeepSeek name template, rule), from the module table.
    convert.py's `mapping`, expanded to whole names: a `weight_scale_inv` travels with its
    weight and is named `scale` (DeepSeek's Linear.scale)."""
    table: dict[str, tuple[str, Rule]] = {}
    for m in MODULES:
        if m.mp_template is None:  # a derived family's row DeepSeek's layout has no place for
            continue
        table[m.hf_template] = (m.mp_template, m.split)
        if m.fp8:
            table[m.hf_template + SCALE_SUFFIX] = (
                m.mp_template.removesuffix(".weight") + MP_SCALE_SUFFIX, m.split)
    return table


MP_FAMILIES = _family_table()


class MpPiece(NamedTuple):
    """The part of one HF tensor that one rank holds."""

    rank: int
    name: str  # the demo model's name
    hf_name: str
    dim: int | None  # split dim of the HF tensor; None: the whole tensor
    start: int
    stop: int
    shape: tuple[int, ...]
    dtype: str


class MpLayout:
    """Where every tensor of an HF tensor plan goes among `model_parallel` ranks.

    Raises `ConfigError` at construction when the plan cannot be split N ways (a dimension
    N does not divide, FP8 blocks straddling ranks, experts or heads not divisible), and
    `UnexpectedTensorError` for a family without a mapping: before anything is written.
    """

    def __init__(self, plan: TensorPlan, model_parallel: int, *, keep_mtp: bool = False):
        if model_parallel < 1:
            raise ConfigError(f"model_parallel must be at least 1, found {model_parallel}")
        if plan.prefix:
            raise UnsupportedModelError(
                f"a wrapped language model (tensors under '{plan.prefix}'): DeepSeek's "
                f"model-parallel layout holds a bare DeepSeek model only")
        self.plan = plan
        self.model_parallel = n = model_parallel
        self.keep_mtp = keep_mtp
        c = plan.config
        if c.n_routed_experts % n:
            raise ConfigError(f"model_parallel {n} does not divide n_routed_experts "
                              f"{c.n_routed_experts}: experts go whole to one rank each")
        if c.num_attention_heads % n:
            raise ConfigError(f"model_parallel {n} does not divide num_attention_heads "
                              f"{c.num_attention_heads}: each rank holds whole heads")
        self.experts_per_rank = c.n_routed_experts // n
        for family, groups in plan.families.items():
            if not keep_mtp and all(g.mtp for g in groups):
                continue
            self._check_family(family, groups[0])

    def _check_family(self, family: str, group: Group) -> None:
        rule = self.rule(family)
        n = self.model_parallel
        if not isinstance(rule, int):
            return
        name = family.format(L=group.layer, E=0)  # name one real tensor in the message
        size = group.shape[rule]
        if size % n:
            raise ConfigError(f"model_parallel {n} does not divide dim {rule} ({size}) of "
                              f"'{name}' {list(group.shape)}")
        if group.scale_family is not None and n > 1:
            block = self.plan.block[rule]
            if (size // n) % block:
                raise ConfigError(
                    f"model_parallel {n} splits dim {rule} of FP8 '{name}' {list(group.shape)} "
                    f"into {size // n}-wide pieces, not a multiple of the {block}-wide scale "
                    f"block: its weight_scale_inv cannot be split with it")

    @cached_property
    def specs(self) -> list[TensorSpec]:
        """The HF tensors this layout places (the plan's, MTP only with keep_mtp)."""
        return [s for s in self.plan.specs if self.keep_mtp or not s.mtp]

    @cached_property
    def dropped(self) -> list[TensorSpec]:
        return [s for s in self.plan.specs if s.mtp and not self.keep_mtp]

    @staticmethod
    def rule(family: str) -> Rule:
        entry = MP_FAMILIES.get(family)
        if entry is None:
            raise UnexpectedTensorError(f"tensor family '{family}' has no DeepSeek "
                                        f"model-parallel mapping")
        return entry[1]

    @staticmethod
    def mp_name(spec: TensorSpec) -> str:
        entry = MP_FAMILIES.get(spec.family)
        if entry is None:
            raise UnexpectedTensorError(f"tensor '{spec.name}' has no DeepSeek model-parallel "
                                        f"mapping")
        return entry[0].format(L=spec.layer, E=spec.expert)

    def pieces(self, spec: TensorSpec) -> list[MpPiece]:
        """The per-rank pieces of one HF tensor, by rank."""
        rule, name, n = self.rule(spec.family), self.mp_name(spec), self.model_parallel
        if rule == EXPERT:
            rank = spec.expert // self.experts_per_rank
            return [MpPiece(rank, name, spec.name, None, 0, 0, spec.shape, spec.dtype)]
        if rule is None:
            return [MpPiece(r, name, spec.name, None, 0, 0, spec.shape, spec.dtype)
                    for r in range(n)]
        part = spec.shape[rule] // n
        shape = spec.shape[:rule] + (part,) + spec.shape[rule + 1:]
        return [MpPiece(r, name, spec.name, rule, r * part, (r + 1) * part, shape, spec.dtype)
                for r in range(n)]

    @cached_property
    def by_hf(self) -> dict[str, list[MpPiece]]:
        return {s.name: self.pieces(s) for s in self.specs}

    @cached_property
    def ranks(self) -> list[list[MpPiece]]:
        """Each rank's pieces, in tensor-plan order."""
        out: list[list[MpPiece]] = [[] for _ in range(self.model_parallel)]
        for pieces in self.by_hf.values():
            for p in pieces:
                out[p.rank].append(p)
        return out

    def file_name(self, rank: int) -> str:
        return mp_file_name(rank, self.model_parallel)


def rank_plan(config, rank_tensor_names) -> TensorPlan:
    """The HF tensor plan a set of rank files holds: the layout their names show, and the MTP
    layer only when rank 0 holds it (DeepSeek's convert.py drops it)."""
    layout = mp_layout_of(rank_tensor_names)
    full = TensorPlan(config, layout)
    stored = full.stored_dtypes_in(lambda name: _stored_dtype(full, name, rank_tensor_names))
    full = TensorPlan(config, layout, stored_dtypes=stored) if stored else full
    if any(MpLayout.mp_name(s) in rank_tensor_names for s in full.specs if s.mtp):
        return full
    return TensorPlan(config, layout, include_mtp=False, stored_dtypes=stored)


def _stored_dtype(plan: TensorPlan, hf_name: str, entries) -> str | None:
    """The dtype rank 0 stores an HF tensor in (replicated and split tensors are on every
    rank), None when absent."""
    entry = entries.get(MpLayout.mp_name(plan.by_name[hf_name]))
    return entry.dtype if entry is not None else None


def find_mp_files(path: Path | RemotePath) -> dict[int, Path]:
    """rank -> file of a model-parallel directory (resolved: `Source.open`); N is read from
    the names.

    Raises:
        FormatError: no such files, files of different N, or a rank missing.
    """
    found = mp_rank_sets(path)
    if not found:
        raise FormatError(f"{path}: no model{{i}}-mp{{N}}.safetensors files")
    n = chosen_mp_set(found)  # as the inventory reads it: other files are extra, not wrong
    files = found[n]
    missing = [r for r in range(n) if r not in files]
    if missing:
        raise FormatError(f"{path}: {mp_file_name(missing[0], n)} is missing "
                          f"(expected ranks 0..{n - 1})")
    return {rank: path / files[rank] for rank in range(n)}


class MpCheckpoint(PooledFiles):
    """Read-only view of a model-parallel directory with HF tensor names.

    Offers the reading interface of `Checkpoint` that the forward pass uses: `.config`,
    `.plan` (the HF tensor plan of what the files hold: MTP only when present),
    `name in ckpt`, `.shape_of(name)`, `.read(name)` (stored dtype, reassembled from the
    rank pieces), `.read_rows(name, start, stop)`, `.read_float32(name)` (FP8 dequantised
    with its reassembled scale) and `.read_float32_rows(name, start, stop)` (bounded
    memory). It checks nothing: `inventory.open_checkpoint` opens it after the
    inventory has judged the rank files.
    """

    def __init__(self, path: str | Path | Source, config: Path | RemotePath | None = None, *,
                 plan: TensorPlan | None = None, source: Source | None = None):
        """`source`: the run's, whose headers the readers use (the inventory's)."""
        source = source or Source.open(path)
        self.dir = source.path  # local, or remote (remote.path.RemotePath: read by range)
        if not self.dir.is_dir():
            raise FormatError(f"{self.dir}: no such directory")
        self.files = find_mp_files(self.dir)
        self.model_parallel = len(self.files)
        self.config_path = config if config is not None else self.dir / CONFIG_FILE
        if not self.config_path.is_file():
            raise ConfigError(f"{self.dir}: no {CONFIG_FILE}; give the HF config of the model "
                              f"(DeepSeek's convert.py does not write one)")
        self.config = read_config_file(self.config_path)
        self._readers = ReaderPool(source)
        self.plan = plan or rank_plan(self.config, self.reader(0).header.entries)
        self.layout = self.plan.layout
        self.has_mtp = any(s.mtp for s in self.plan.groups)
        self.mp = MpLayout(self.plan, self.model_parallel, keep_mtp=True)

    def reader(self, rank: int) -> SafetensorsReader:
        return self._readers(self.files[rank].name)

    def __contains__(self, name: str) -> bool:
        return name in self.mp.by_hf

    def pieces(self, name: str) -> list[MpPiece]:
        pieces = self.mp.by_hf.get(name)
        if pieces is None:
            raise MissingTensorError(f"{self.dir}: tensor '{name}' is not in this "
                                     f"{self.model_parallel}-rank checkpoint")
        return pieces

    def shape_of(self, name: str) -> tuple[int, ...]:
        """The HF shape of a tensor (no data read)."""
        self.pieces(name)
        return self.plan.by_name[name].shape

    def read(self, name: str) -> np.ndarray:
        """The HF tensor in its stored dtype: a view for whole pieces, else concatenated."""
        pieces = self.pieces(name)
        first = pieces[0]
        if first.dim is None:  # replicated (rank 0's copy) or a routed expert
            return self.reader(first.rank).get(first.name)
        return np.concatenate([self.reader(p.rank).get(p.name) for p in pieces], first.dim)

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the HF tensor, stored dtype, read with pread from the ranks
        that hold them (memory bounded by the rows)."""
        pieces = self.pieces(name)
        first = pieces[0]
        if first.dim is None:
            return self.reader(first.rank).read_rows(first.name, start, stop)
        if first.dim:  # split across columns: every rank holds part of each row
            return np.concatenate([self.reader(p.rank).read_rows(p.name, start, stop)
                                   for p in pieces], first.dim)
        rows = [self.reader(p.rank).read_rows(p.name, max(start, p.start) - p.start,
                                                min(stop, p.stop) - p.start)
                for p in pieces if max(start, p.start) < min(stop, p.stop)]
        if not rows:
            return self.reader(first.rank).read_rows(first.name, 0, 0)
        return rows[0] if len(rows) == 1 else np.concatenate(rows)

    def read_float32(self, name: str) -> np.ndarray:
        """The tensor in float32; an FP8 weight is dequantised with its scale."""
        array = self.read(name)
        spec = self.plan.by_name[name]
        if spec.scale_name is None:
            return array.astype(np.float32)
        return dequantize(array, self.read(spec.scale_name), self.plan.block)

    def read_float32_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of `read_float32(name)` (streamed matmuls, as `Checkpoint`)."""
        spec = self.plan.by_name[self.pieces(name)[0].hf_name]
        if spec.scale_name is None:
            return self.read_rows(name, start, stop).astype(np.float32)
        return dequantize_rows(partial(self.read_rows, name),
                               partial(self.read_rows, spec.scale_name), spec.shape[0], start,
                               stop, self.plan.block)
