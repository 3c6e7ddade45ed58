"""Reshard plans as data, and the proof that a plan covers its source exactly once.

A conversion (`ckpt reshard`) is first described without touching tensor data: output
files, each a list of output tensors, each the concatenation of slices of source tensors
(`OutTensor`). `plan_reshard` builds that description for the three targets (HF shards of
a size, DeepSeek's model-parallel layout, and back to HF) after checking the source
against its config's tensor plan; `prove_coverage` then checks that every source element
lands in the outputs exactly once per intended copy (or is compared, or dropped on
purpose), before a byte is written. `ckpt_tools.reshard` executes plans.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from ..inventory.checkpoint import checkpoint_dir
from ..io.dtypes import itemsize
from ..errors import ARGUMENT_PLACEHOLDER, ArgumentError, FormatError, VerificationError
from ..io.index import is_model_parallel, pack_greedy, shard_file_name
from ..io.source import Source
from ..inventory.inspect import open_checkpoint, require
from ..remote.path import RemotePath
from ..configs.sources import ConfigSource, given_config, no_such_path
from ..inventory.mp_layout import MpLayout, find_mp_files
from ..configs.sources import CONFIG_FILE
from ..inventory.tensor_plan import Layout, TensorPlan, TensorSpec

DEFAULT_MAX_SHARD_SIZE = 5 * 10**9  # transformers' save_pretrained default
Mode = Literal["size", "deepseek-mp", "hf"]
Key = tuple[str, str]  # (source file, tensor name)


# -- the plan ------------------------------------------------------------------------------
class Part(NamedTuple):
    """A slice of one source tensor: the whole tensor when `dim` is None."""

    file: str  # relative to the source directory
    tensor: str
    dim: int | None = None
    start: int = 0
    stop: int = 0


class OutTensor(NamedTuple):
    name: str
    dtype: str
    shape: tuple[int, ...]
    parts: tuple[Part, ...]  # concatenated on `dim` (one part: dim unused)
    dim: int | None = None
    replicas: tuple[Part, ...] = ()  # identical copies on other ranks, checked against parts[0]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * itemsize(self.dtype)


class OutFile(NamedTuple):
    name: str
    tensors: tuple[OutTensor, ...]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


@dataclass
class ReshardPlan:
    """Every output file of one conversion, and what the source holds."""

    mode: Mode
    src: Path
    layout: Layout
    files: list[OutFile]
    sources: dict[Key, tuple[str, tuple[int, ...]]]  # every source tensor: (dtype, shape)
    copies: dict[Key, int] = field(default_factory=dict)  # intended copies, when not 1
    dropped: list[Key] = field(default_factory=list)
    model_parallel: int | None = None
    max_shard_size: int | None = None
    mtp: Literal["kept", "dropped", "absent"] = "absent"
    notes: list[str] = field(default_factory=list)
    config_path: Path | None = None
    drop_mtp_from_config: bool = False
    # the MTP layers written, when fewer than config.json declares (the source holds fewer)
    mtp_layers_written: int | None = None
    # the run's source, whose headers the inventory read: the jobs read through it
    source: Source | None = None


# -- planning ---------------------------------------------------------------------------------
Sources = dict[Key, tuple[str, tuple[int, ...]]]  # (file, tensor) -> (stored dtype, shape)


def _hf_source(src: Source, given: ConfigSource | None
               ) -> tuple[TensorPlan, dict[str, str], Sources, int]:
    """The tensor plan of what an HF checkpoint holds (MTP only when present), where each
    tensor is, the source inventory: (file, name) -> (stored dtype, shape), and the MTP
    layers config.json (or the `given` one) declares."""
    found = require(src, "reshard", config=given and given.config)
    inv = found.inventory
    plan = found.plan
    declared = plan.config.num_mtp_layers
    if not any(s.mtp and s.name in inv.entries for s in plan.specs):
        plan = plan.without_mtp()
    else:  # the policy lets `mtp-missing` through: plan the MTP layers that are there
        first = plan.config.num_hidden_layers
        held = {layer for layer in range(first, first + plan.config.num_mtp_layers)
                if all(s.name in inv.entries for s in plan.specs if s.mtp and s.layer == layer)}
        whole = next(k for k in range(len(held) + 1) if first + k not in held)
        if whole < plan.config.num_mtp_layers:
            config = plan.config.model_copy(update={"num_nextn_predict_layers": whole})
            plan = TensorPlan(config, plan.layout, prefix=plan.prefix,
                              stored_dtypes=plan.stored_dtypes)
    sources = {(inv.shard_of[n], n): (e.dtype, e.shape) for n, e in inv.entries.items()}
    return plan, inv.shard_of, sources, declared


def config_file_given(src: Path | RemotePath, config: str | Path | None) -> ConfigSource | None:
    """The config a user gave for `src` (a config.json or a checkpoint directory): reshard
    copies that file beside its output, so a preset, which has none, is refused."""
    given = given_config(config)
    if given is not None and given.file is None:
        raise ArgumentError(f"{src}: reshard writes the config.json it is given beside the "
                            f"output; give a config.json or a checkpoint directory to "
                            f"--config, not a preset")
    return given


def refuse_model_parallel_source(src: Path) -> None:
    """Every family: a rank-file directory is converted back to HF first (no direct
    model-parallel to model-parallel or by-size conversion), refused before DST exists."""
    if src.is_dir() and is_model_parallel(src):
        raise FormatError(f"{src}: holds DeepSeek's model-parallel layout "
                          f"(model{{i}}-mp{{N}}.safetensors); convert it back with "
                          f"{ARGUMENT_PLACEHOLDER} first", argument="to", value="hf")


def pack_by_size(specs: list[TensorSpec], max_bytes: int) -> list[list[TensorSpec]]:
    """Greedy shards in order; a weight and its scale always share one. A unit larger than
    `max_bytes` gets a shard of its own (as transformers does)."""
    return pack_greedy(_units(specs), max_bytes)


def _units(specs: list[TensorSpec]) -> list[tuple[list[TensorSpec], int]]:
    """The specs in order as (tensors that must share a shard, their bytes): a weight with
    its scale, every other tensor alone."""
    units: list[list[TensorSpec]] = []
    unit_of: dict[str, int] = {}
    for s in specs:
        if s.scale_of is not None and s.scale_of in unit_of:
            units[unit_of[s.scale_of]].append(s)
        else:
            unit_of[s.name] = len(units)
            units.append([s])
    return [(unit, sum(s.nbytes for s in unit)) for unit in units]


def _hf_files(plan: TensorPlan, max_bytes: int, out_tensor,
              others: list[OutTensor] = ()) -> list[OutFile]:
    """The plan's tensors (`out_tensor` of each spec), then `others`, in shards of at most
    `max_bytes`."""
    units = [([out_tensor(s) for s in unit], nbytes) for unit, nbytes in _units(plan.specs)]
    groups = pack_greedy(units + [([t], t.nbytes) for t in others], max_bytes)
    return [OutFile(shard_file_name(i, len(groups)), tuple(group))
            for i, group in enumerate(groups, start=1)]


def plan_reshard(src: str | Path | Source, *, max_shard_size: int | None = None,
                 model_parallel: int | None = None, to_hf: bool = False, keep_mtp: bool = False,
                 config: str | Path | ConfigSource | None = None) -> ReshardPlan:
    """Plan one conversion of `src` without writing anything.

    Exactly one of: `max_shard_size` (HF layout by size), `model_parallel` (to DeepSeek's
    layout), `to_hf=True` (from DeepSeek's layout; `max_shard_size` optional, default 5 GB).

    Raises:
        ConfigError: a dimension the rank count does not divide (and the like).
        CkptError: the first finding of the inventory that makes the output wrong (its
            code in brackets, as `ckpt validate` reports it).
    """
    source = Source.open(src)  # the caller's when it opened one: the run's headers
    src = checkpoint_dir(source)  # a directory (local or remote), or its index file
    if source.path != src:  # an index file was named: the run reads its directory
        source = Source(src, spec=source.spec)
    if not src.exists():
        raise no_such_path(src)
    if to_hf:
        given = config_file_given(src, config)
        return _plan_from_mp(src, max_shard_size or DEFAULT_MAX_SHARD_SIZE, given and given.file)
    if (max_shard_size is None) == (model_parallel is None):
        raise ArgumentError("pass exactly one of max_shard_size, model_parallel, to_hf")
    if not src.is_dir():
        raise FormatError(f"{src}: not a checkpoint directory")
    refuse_model_parallel_source(src)
    given = config_file_given(src, config)
    plan, where, sources, declared = _hf_source(source, given)
    config_path = given.file if given else src / CONFIG_FILE
    # a tensor is written in the dtype it is stored in (a BF16 router bias stays BF16)
    stored = {name: sources[(shard, name)][0] for name, shard in where.items()}
    has_mtp = any(s.mtp for s in plan.specs)
    fewer = plan.config.num_mtp_layers if has_mtp and plan.config.num_mtp_layers < declared \
        else None
    fewer_note = ([f"the source holds {fewer} whole MTP layer(s) of the {declared} config.json "
                   f"declares (validate: mtp-missing); those are written, and the written "
                   f"config.json says num_nextn_predict_layers {fewer}"]
                  if fewer is not None else [])
    if max_shard_size is not None:
        # a wrapper's other towers (vision, projector; Mistral Large 4's MTP head, which
        # transformers does not build): validate notes them (tensor-outside-plan), and the
        # output keeps them as stored, after the language model
        planned = {s.name for s in plan.specs}
        others = [OutTensor(name, *sources[(shard, name)], (Part(shard, name),))
                  for name, shard in where.items() if plan.prefix and name not in planned
                  and not name.startswith(plan.prefix)]
        files = _hf_files(plan, max_shard_size, lambda s: OutTensor(
            s.name, stored[s.name], s.shape, (Part(where[s.name], s.name),)), others)
        notes = ([f"the source has no MTP tensors although config.json declares "
                  f"num_nextn_predict_layers {declared}; config.json copied unchanged"]
                 if declared and not has_mtp else [])
        return ReshardPlan("size", src, plan.precision, files, sources,
                           max_shard_size=max_shard_size, notes=notes + fewer_note,
                           mtp="kept" if has_mtp else "absent", config_path=config_path,
                           mtp_layers_written=fewer, source=source)
    mp = MpLayout(plan, model_parallel, keep_mtp=keep_mtp)
    files = [OutFile(mp.file_name(r), tuple(
        OutTensor(p.name, stored[p.hf_name], p.shape,
                  (Part(where[p.hf_name], p.hf_name, p.dim, p.start, p.stop),))
        for p in pieces)) for r, pieces in enumerate(mp.ranks)]
    copies = {(where[s.name], s.name): model_parallel for s in mp.specs
              if mp.rule(s.family) is None and model_parallel > 1}
    dropped = [(where[s.name], s.name) for s in mp.dropped]
    notes = ["config.json written to the destination (DeepSeek's convert.py writes none) so "
             "the layout describes itself: `ckpt reshard --to hf` and MpCheckpoint rebuild "
             "the tensor plan from it"]
    if dropped:
        notes.append(f"MTP layer dropped ({len(dropped)} tensors), as DeepSeek's convert.py "
                     f"does: its inference model has no MTP module; config.json says "
                     f"num_nextn_predict_layers 0; keep_mtp keeps it")
    elif fewer is not None:
        notes += fewer_note
    mtp = "dropped" if dropped else ("kept" if has_mtp else "absent")
    return ReshardPlan("deepseek-mp", src, plan.layout, files, sources, copies, dropped,
                       model_parallel=model_parallel, mtp=mtp, notes=notes,
                       config_path=config_path, drop_mtp_from_config=bool(dropped),
                       mtp_layers_written=None if dropped else fewer, source=source)


def _plan_from_mp(src: Path, max_bytes: int, config: str | Path | None) -> ReshardPlan:
    find_mp_files(src)  # names a missing rank file or a directory without rank files
    with open_checkpoint(src, config=config, command="reshard") as ckpt:
        mp, n = ckpt.mp, ckpt.model_parallel
        sources = {(mp.file_name(r), e.name): (e.dtype, e.shape)
                   for r in range(n) for e in ckpt.reader(r).header.entries.values()}

        def out_tensor(s: TensorSpec) -> OutTensor:
            pieces = mp.by_hf[s.name]
            parts = tuple(Part(mp.file_name(p.rank), p.name) for p in pieces)
            dtype = sources[(parts[0].file, parts[0].tensor)][0]  # as stored
            if pieces[0].dim is not None:
                return OutTensor(s.name, dtype, s.shape, parts, pieces[0].dim)
            return OutTensor(s.name, dtype, s.shape, parts[:1], replicas=parts[1:])

        files = _hf_files(ckpt.plan, max_bytes, out_tensor)
        declared = ckpt.config.num_mtp_layers
        notes = []
        if declared and not ckpt.has_mtp:
            notes.append(f"no MTP tensors in the rank files; config.json written with "
                         f"num_nextn_predict_layers 0 (was {declared})")
        return ReshardPlan("hf", src, ckpt.layout, files, sources, model_parallel=n,
                           max_shard_size=max_bytes, notes=notes,
                           mtp="kept" if ckpt.has_mtp else ("dropped" if declared else "absent"),
                           config_path=ckpt.config_path,
                           drop_mtp_from_config=bool(declared and not ckpt.has_mtp))


# -- the coverage proof ----------------------------------------------------------------------
def _part_shape(part: Part, shape: tuple[int, ...]) -> tuple[int, ...]:
    if part.dim is None:
        return shape
    return shape[:part.dim] + (part.stop - part.start,) + shape[part.dim + 1:]


def planned_counts(out: OutFile, sources: dict[Key, tuple[str, tuple[int, ...]]]
                   ) -> tuple[Counter, Counter]:
    """Elements one output file takes from each source tensor: (written, compared)."""
    written: Counter = Counter()
    compared: Counter = Counter()
    for t in out.tensors:
        for p in t.parts:
            written[(p.file, p.tensor)] += math.prod(_part_shape(p, sources[(p.file, p.tensor)][1]))
        for q in t.replicas:
            compared[(q.file, q.tensor)] += math.prod(t.shape)
    return written, compared


def prove_coverage(plan: ReshardPlan) -> dict[str, int]:
    """Check that the planned outputs use every source element exactly once per intended
    copy (or compare it, or drop it on purpose) and that each output tensor is exactly the
    concatenation of its parts. Returns the element counts.

    Raises:
        VerificationError: naming the first tensor that is missed, doubled or misshapen.
    """
    uses: dict[Key, list[tuple[int | None, int, int]]] = defaultdict(list)
    compared: Counter = Counter()
    output_tensors = output_elements = 0
    for f in plan.files:
        for t in f.tensors:
            output_tensors += 1
            output_elements += math.prod(t.shape)
            shapes = []
            for p in (*t.parts, *t.replicas):
                if (p.file, p.tensor) not in plan.sources:
                    raise VerificationError(f"coverage: {f.name}: tensor '{t.name}' reads "
                                            f"'{p.tensor}' from {p.file}, which does not hold it")
                dtype, shape = plan.sources[(p.file, p.tensor)]
                if dtype != t.dtype:
                    raise VerificationError(f"coverage: {f.name}: tensor '{t.name}' is {t.dtype} "
                                            f"but its source '{p.tensor}' is {dtype}")
                if p.dim is not None and not 0 <= p.start < p.stop <= shape[p.dim]:
                    raise VerificationError(f"coverage: {f.name}: tensor '{t.name}': slice "
                                            f"[{p.start}:{p.stop}] of '{p.tensor}' out of range")
                shapes.append(_part_shape(p, shape))
            for p in t.parts:
                uses[(p.file, p.tensor)].append((p.dim, p.start, p.stop))
            for q in t.replicas:
                compared[(q.file, q.tensor)] += 1
            parts_shapes, replica_shapes = shapes[:len(t.parts)], shapes[len(t.parts):]
            if len(parts_shapes) == 1:
                assembled = parts_shapes[0]
            else:
                d = t.dim
                assembled = parts_shapes[0][:d] + (sum(s[d] for s in parts_shapes),) \
                    + parts_shapes[0][d + 1:]
                if any(s[:d] + s[d + 1:] != assembled[:d] + assembled[d + 1:]
                       for s in parts_shapes):
                    assembled = None
            if assembled != t.shape or any(s != t.shape for s in replica_shapes):
                raise VerificationError(f"coverage: {f.name}: tensor '{t.name}' {list(t.shape)} "
                                        f"does not match its parts {[list(s) for s in shapes]}")
    dropped = set(plan.dropped)
    placed = replicas = compared_el = dropped_el = 0
    for key, (_, shape) in plan.sources.items():
        numel, used, checked = math.prod(shape), uses.get(key, []), compared.get(key, 0)
        where = f"coverage: {key[0]}: tensor '{key[1]}'"
        if key in dropped:
            if used or checked:
                raise VerificationError(f"{where} is both dropped and written")
            dropped_el += numel
            continue
        if not used and not checked:
            raise VerificationError(f"{where} is never written")
        if checked:
            if used or checked != 1:
                raise VerificationError(f"{where} is used {len(used) + checked} times")
            compared_el += numel
            continue
        sliced = [u for u in used if u[0] is not None]
        if sliced:
            if len(sliced) != len(used) or len({u[0] for u in used}) != 1:
                raise VerificationError(f"{where} is written both whole and in slices")
            cursor = 0
            for _, start, stop in sorted(used, key=lambda u: u[1]):
                if start != cursor:
                    raise VerificationError(f"{where}: its slices {sorted(u[1:] for u in used)} "
                                            f"do not tile it exactly once")
                cursor = stop
            if cursor != shape[used[0][0]]:
                raise VerificationError(f"{where}: its slices end at {cursor}, not at "
                                        f"{shape[used[0][0]]}")
            copies = 1
        else:
            copies = len(used)
        if copies != plan.copies.get(key, 1):
            raise VerificationError(f"{where} is written {copies} times, expected "
                                    f"{plan.copies.get(key, 1)}")
        placed += numel
        replicas += (copies - 1) * numel
    source_elements = sum(math.prod(s) for _, s in plan.sources.values())
    if placed + compared_el + dropped_el != source_elements \
            or placed + replicas != output_elements:
        raise VerificationError(f"coverage: {placed} placed + {compared_el} compared + "
                                f"{dropped_el} dropped != {source_elements} source elements")
    return dict(source_files=len({k[0] for k in plan.sources}), source_tensors=len(plan.sources),
                source_elements=source_elements, placed_elements=placed,
                replica_elements=replicas, compared_elements=compared_el,
                dropped_tensors=len(dropped), dropped_elements=dropped_el,
                output_tensors=output_tensors, output_elements=output_elements)


