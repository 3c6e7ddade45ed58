"""DeepSeek's model-parallel inference layout (`model{i}-mp{N}.safetensors`), as data.

DeepSeek's `inference/convert.py` renames every HF tensor to its demo model's name,
splits column-parallel weights on dim 0 and row-parallel weights on dim 1 across N ranks,
sends each routed expert whole to rank e // (E / N) and copies everything else to every
rank (`ARCHITECTURE.md` section 3.2). Here that is one table keyed by the exact HF module
path of each tensor-plan family (no substring replace), so a family the table does not
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

import re
from functools import cached_property
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from .config import read_config_file
from .errors import (ConfigError, FormatError, MissingTensorError, ShapeMismatchError,
                     UnexpectedTensorError, UnsupportedModelError)
from .fp8 import dequantize
from .index import MP_FILE_GLOB
from .safetensors_io import SafetensorsReader
from .sources import CONFIG_FILE
from .tensor_plan import EXPERT_PREFIX, LAYER_PREFIX, SCALE_SUFFIX, Group, TensorPlan, TensorSpec

COLUMN, ROW = 0, 1  # the dim a column-/row-parallel weight ([out, in]) is split on
EXPERT = "expert"  # routed experts go whole to one rank
Rule = int | Literal["expert"] | None  # None: replicated on every rank

MP_FILE = "model{rank}-mp{n}.safetensors"
MP_FILE_RE = re.compile(r"model(\d+)-mp(\d+)\.safetensors")
MP_LAYER_PREFIX = "layers.{L}."
MP_EXPERT_PREFIX = "ffn.experts.{E}."

# HF module -> (demo module, rule). convert.py's `mapping`, expanded to whole module paths.
GLOBAL_MODULES: dict[str, tuple[str, Rule]] = {
    "model.embed_tokens": ("embed", COLUMN),  # ParallelEmbedding: vocab rows
    "model.norm": ("norm", None),
    "lm_head": ("head", COLUMN),  # ColumnParallelLinear(dim, vocab)
}
LAYER_MODULES: dict[str, tuple[str, Rule]] = {
    "input_layernorm": ("attn_norm", None),
    "self_attn.q_proj": ("attn.wq", COLUMN),
    "self_attn.q_a_proj": ("attn.wq_a", None),
    "self_attn.q_a_layernorm": ("attn.q_norm", None),
    "self_attn.q_b_proj": ("attn.wq_b", COLUMN),
    "self_attn.kv_a_proj_with_mqa": ("attn.wkv_a", None),
    "self_attn.kv_a_layernorm": ("attn.kv_norm", None),
    "self_attn.kv_b_proj": ("attn.wkv_b", COLUMN),
    "self_attn.o_proj": ("attn.wo", ROW),
    # V3.2's lightning indexer: replicated whole on every rank (convert.py maps it with no dim)
    "self_attn.indexer.wq_b": ("attn.indexer.wq_b", None),
    "self_attn.indexer.wk": ("attn.indexer.wk", None),
    "self_attn.indexer.k_norm": ("attn.indexer.k_norm", None),
    "self_attn.indexer.weights_proj": ("attn.indexer.weights_proj", None),
    "post_attention_layernorm": ("ffn_norm", None),
    "mlp.gate_proj": ("ffn.w1", COLUMN),
    "mlp.down_proj": ("ffn.w2", ROW),
    "mlp.up_proj": ("ffn.w3", COLUMN),
    "mlp.gate": ("ffn.gate", None),
    EXPERT_PREFIX + "gate_proj": (MP_EXPERT_PREFIX + "w1", EXPERT),
    EXPERT_PREFIX + "down_proj": (MP_EXPERT_PREFIX + "w2", EXPERT),
    EXPERT_PREFIX + "up_proj": (MP_EXPERT_PREFIX + "w3", EXPERT),
    "mlp.shared_experts.gate_proj": ("ffn.shared_experts.w1", COLUMN),
    "mlp.shared_experts.down_proj": ("ffn.shared_experts.w2", ROW),
    "mlp.shared_experts.up_proj": ("ffn.shared_experts.w3", COLUMN),
    # The MTP module's own tensors (kept only with keep_mtp; the demo model has none).
    "embed_tokens": ("embed", COLUMN),
    "enorm": ("enorm", None),
    "hnorm": ("hnorm", None),
    "eh_proj": ("eh_proj", None),
    "shared_head.norm": ("shared_head.norm", None),
    "shared_head.head": ("shared_head.head", COLUMN),
}
# weight_scale_inv travels with its weight and is named `scale` (DeepSeek's Linear.scale);
# a bias (only the indexer's k_norm LayerNorm has one) keeps its name.
PARAMS = {"weight": "weight", "weight" + SCALE_SUFFIX: "scale", "bias": "bias"}
ROUTER_BIAS = ("mlp.gate.e_score_correction_bias", "ffn.gate.bias")  # Gate.bias, fp32


def _family_table() -> dict[str, tuple[str, Rule]]:
    """Every HF family template -> (demo name template, rule), by exact key."""
    table: dict[str, tuple[str, Rule]] = {}
    for scope, demo_scope, modules in (("", "", GLOBAL_MODULES),
                                       (LAYER_PREFIX, MP_LAYER_PREFIX, LAYER_MODULES)):
        for module, (demo, rule) in modules.items():
            for param, demo_param in PARAMS.items():
                table[f"{scope}{module}.{param}"] = (f"{demo_scope}{demo}.{demo_param}", rule)
    table[LAYER_PREFIX + ROUTER_BIAS[0]] = (MP_LAYER_PREFIX + ROUTER_BIAS[1], None)
    return table


MP_FAMILIES = _family_table()


def mp_file_name(rank: int, model_parallel: int) -> str:
    return MP_FILE.format(rank=rank, n=model_parallel)


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


def find_mp_files(path: str | Path) -> dict[int, Path]:
    """rank -> file of a model-parallel directory; N is read from the names.

    Raises:
        FormatError: no such files, files of different N, or a rank missing.
    """
    path = Path(path)
    found: dict[int, dict[int, Path]] = {}
    for p in sorted(path.glob(MP_FILE_GLOB)):
        m = MP_FILE_RE.fullmatch(p.name)
        if m:
            found.setdefault(int(m[2]), {})[int(m[1])] = p
    if not found:
        raise FormatError(f"{path}: no model{{i}}-mp{{N}}.safetensors files")
    if len(found) > 1:
        raise FormatError(f"{path}: files for several model-parallel sizes "
                          f"({', '.join(map(str, sorted(found)))}); keep one set")
    (n, files), = found.items()
    missing = [r for r in range(n) if r not in files]
    if missing or len(files) != n:
        raise FormatError(f"{path}: {mp_file_name(missing[0] if missing else n, n)} is missing "
                          f"(expected ranks 0..{n - 1})")
    return dict(sorted(files.items()))


def _stored_dtype(plan: TensorPlan, hf_name: str, entries) -> str | None:
    """The dtype rank 0 stores an HF tensor in (replicated and split tensors are on every
    rank), None when absent."""
    entry = entries.get(MpLayout.mp_name(plan.by_name[hf_name]))
    return entry.dtype if entry is not None else None


class MpCheckpoint:
    """Read-only view of a model-parallel directory with HF tensor names.

    Offers the reading interface of `Checkpoint` that the forward pass uses: `.config`,
    `.plan` (the HF tensor plan of what the files hold: MTP only when present),
    `name in ckpt`, `.shape_of(name)`, `.read(name)` (stored dtype, reassembled from the
    rank pieces), `.read_rows(name, start, stop)`, `.read_float32(name)` (FP8 dequantised
    with its reassembled scale) and `.read_float32_rows(name, start, stop)` (bounded
    memory). The rank files' headers are checked against the layout on opening.
    """

    def __init__(self, path: str | Path, config: str | Path | None = None):
        self.dir = Path(path)
        if not self.dir.is_dir():
            raise FormatError(f"{self.dir}: no such directory")
        self.files = find_mp_files(self.dir)
        self.model_parallel = len(self.files)
        self.config_path = Path(config) if config is not None else self.dir / CONFIG_FILE
        if not self.config_path.is_file():
            raise ConfigError(f"{self.dir}: no {CONFIG_FILE}; pass the HF config of the model "
                              f"(DeepSeek's convert.py does not write one)")
        self.config = read_config_file(self.config_path)
        self._readers = {r: SafetensorsReader(p) for r, p in self.files.items()}
        names0 = self._readers[0].header.entries
        self.layout = "fp8" if any(n.endswith(".scale") for n in names0) else "bf16"
        full = TensorPlan(self.config, self.layout)
        stored = full.stored_dtypes_in(lambda name: _stored_dtype(full, name, names0))
        full = TensorPlan(self.config, self.layout, stored_dtypes=stored) if stored else full
        mtp_names = {MpLayout.mp_name(s) for s in full.specs if s.mtp}
        self.has_mtp = bool(mtp_names) and any(n in names0 for n in mtp_names)
        self.plan = full if self.has_mtp else TensorPlan(self.config, self.layout,
                                                         include_mtp=False, stored_dtypes=stored)
        self.mp = MpLayout(self.plan, self.model_parallel, keep_mtp=True)
        self._check_headers()

    def _check_headers(self) -> None:
        for rank, pieces in enumerate(self.mp.ranks):
            path, entries = self.files[rank], self._readers[rank].header.entries
            expected = {p.name: p for p in pieces}
            for p in pieces:
                e = entries.get(p.name)
                if e is None:
                    raise MissingTensorError(f"{path}: tensor '{p.name}' (from '{p.hf_name}') "
                                             f"is missing")
                if (e.dtype, e.shape) != (p.dtype, p.shape):
                    raise ShapeMismatchError(f"{path}: tensor '{p.name}': expected {p.dtype} "
                                             f"{list(p.shape)}, found {e.dtype} {list(e.shape)}")
            extra = [n for n in entries if n not in expected]
            if extra:
                more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
                raise UnexpectedTensorError(f"{path}: tensor '{extra[0]}' is not in the "
                                            f"{self.model_parallel}-rank layout{more}")

    def __enter__(self) -> MpCheckpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for r in self._readers.values():
            r.close()

    def reader(self, rank: int) -> SafetensorsReader:
        return self._readers[rank]

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
            return self._readers[first.rank].get(first.name)
        return np.concatenate([self._readers[p.rank].get(p.name) for p in pieces], first.dim)

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the HF tensor, stored dtype, read with pread from the ranks
        that hold them (memory bounded by the rows)."""
        pieces = self.pieces(name)
        first = pieces[0]
        if first.dim is None:
            return self._readers[first.rank].read_rows(first.name, start, stop)
        if first.dim:  # split across columns: every rank holds part of each row
            return np.concatenate([self._readers[p.rank].read_rows(p.name, start, stop)
                                   for p in pieces], first.dim)
        rows = [self._readers[p.rank].read_rows(p.name, max(start, p.start) - p.start,
                                                min(stop, p.stop) - p.start)
                for p in pieces if max(start, p.start) < min(stop, p.stop)]
        if not rows:
            return self._readers[first.rank].read_rows(first.name, 0, 0)
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
        block = self.plan.block
        # whole row blocks, so each scale row meets the rows it was computed on
        first, last = start // block[0], -(-stop // block[0])
        lo, hi = first * block[0], min(last * block[0], spec.shape[0])
        values = dequantize(self.read_rows(name, lo, hi),
                            self.read_rows(spec.scale_name, first, last), block)
        return values if (lo, hi) == (start, stop) else values[start - lo:stop - lo].copy()
