"""DeepSeek-V4's model-parallel inference layout (`model{i}-mp{N}.safetensors`), both ways.

DeepSeek's V4 `inference/convert.py` keeps the Hub names (they are already its model's
names) and, per tensor, by the module it belongs to:
- splits on dim 0: `embed`, `head` (vocab), `wq_b` (the attention's and the indexer's:
  heads), `wo_a` (groups), `attn_sink` (heads), `weights_proj` (indexer heads);
- splits on dim 1: `wo_b`;
- sends routed expert e whole to rank e // (E / N);
- copies everything else to every rank (norms, `wq_a`, `wkv`, compressors, `hc_*`, router,
  shared experts, `tid2eid`, the MTP block's own projections);
- a scale travels with its weight (same dim, so each rank's share must be whole 128-blocks);
- then dequantises each rank's `wo_a` to BF16 with its scale (the scale is dropped),
  because the inference code uses it in a BF16 einsum.
The MTP block is kept (V4 has no MTP embedding or head to skip). MXFP4 expert bytes are
written as the Hub's I8 [out, in/2]; DeepSeek's script retags the same bytes as
`float4_e2m1fn_x2` (safetensors "F4" [out, in]), which this project's I/O does not model.

Back (`from_deepseek_mp_v4`): pieces are concatenated on their split dim, replicas taken
from rank 0, and `wo_a` re-quantised to FP8 with ue8m0 block scales; that is lossless on
V4's grid (the BF16 values are e4m3 codes times powers of two) and gives back the same
bytes when the source scales follow the ue8m0 rule (amax / 448 rounded up to a power of two).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Literal

import numpy as np

from ...inventory.checkpoint import Checkpoint
from ...configs.parse import read_config_file
from ...io.dtypes import itemsize
from ...errors import (
    ARGUMENT_PLACEHOLDER,
    ArgumentError,
    ConfigError,
    MissingTensorError,
    ShapeMismatchError,
    VerificationError,
)
from ...formats import FP8_BLOCK
from ...formats.fp8_block import BF16
from ...formats.mxfp4 import dequantize_fp8, quantize_fp8
from ...io.index import (
    INDEX_FILE,
    SINGLE_FILE,
    ShardIndex,
    shard_file_name,
    write_index,
    write_json_atomic,
)
from ...inventory.inspect import require
from ...inventory.mp_layout import find_mp_files, mp_file_name
from ...execution.parallel import ExecutorName, Job, run_jobs, workers_for
from ...execution.progress import Progress
from ...io.reader_pool import ReaderPool
from ...io.output import REPORT_FILE, report_file
from ...remote.output import RUN_FIELDS, check_executor, kept_files, open_output, write_json_file
from ...io.source import Source
from ...commands.reshard import Coverage, OutputFileReport, ReshardReport
from ...commands.reshard_plan import pack_by_size, refuse_model_parallel_source
from ...io.safetensors_io import SafetensorsWriter
from ...io.side_files import copy_side_files
from ...configs.sources import CONFIG_FILE
from .convert import _checked_source  # pairing and the V4 plan, as upcast checks them
from .mp_layout import Piece, check_blocks, rank_pieces
from .tensor_plan import V4TensorPlan

STEP_ROWS_BYTES = 4 << 20


def _wo_a_note(pieces: list[Piece], direction: str) -> str:
    count = sum(p.dequantize_with is not None for p in pieces)
    return (f"{count} wo_a weights dequantised to BF16 on every rank with their scales (the "
            f"scales are applied, not written), as DeepSeek's convert.py does"
            if direction == "deepseek-mp" else
            f"{count} wo_a weights re-quantised to FP8 with ue8m0 block scales")


def _numel(p) -> int:
    return math.prod(p.shape)


def _file_report(name: str, pieces) -> OutputFileReport:
    return OutputFileReport(name=name, tensors=len(pieces),
                            bytes=sum(_numel(p) * itemsize(p.dtype) for p in pieces))


def _mtp(plan: V4TensorPlan) -> Literal["kept", "absent"]:
    return "kept" if plan.config.num_mtp_layers else "absent"  # DeepSeek's V4 convert keeps it


def _coverage(plan: V4TensorPlan, ranks: list[list[Piece]], source_files: int,
              counted: int, planned: int, *, joined: bool) -> Coverage:
    """The proof V2/V3's reshard gives, over V4's rank layout: each source element placed
    once (split pieces and experts on their rank, a replica once, a wo_a scale applied to
    its weight), the replicas' copies written (to deepseek-mp) or compared (`joined`: back
    to the Hub layout), and the writers' count equal to the plan's."""
    specs = {s.name: s for s in plan.specs}
    copies: dict[str, int] = {}
    placed = replicas = 0
    for p in (p for rank in ranks for p in rank):
        copies[p.name] = copies.get(p.name, 0) + 1
        if p.dim is None and copies[p.name] > 1:
            replicas += _numel(p)
        else:
            placed += _numel(p)
    applied = [specs[p.dequantize_with] for p in ranks[0] if p.dequantize_with]
    placed += sum(map(_numel, applied))
    source = sum(map(_numel, plan.specs))
    pieces = [p for rank in ranks for p in rank]
    rank_elements = sum(map(_numel, pieces))
    return Coverage(
        source_files=source_files,
        source_tensors=len(pieces) if joined else len(specs),
        source_elements=rank_elements if joined else source,
        placed_elements=rank_elements - replicas if joined else placed,
        replica_elements=0 if joined else replicas,
        compared_elements=replicas if joined else 0, dropped_tensors=0, dropped_elements=0,
        output_tensors=len(specs) if joined else len(pieces),
        output_elements=source if joined else rank_elements, counted_elements=counted,
        complete=placed == source and counted == planned and set(copies) | {
            s.name for s in applied} == set(specs))


def _row_ranges(rows: int, row_bytes: int, align: int = 1):
    step = max(1, STEP_ROWS_BYTES // max(row_bytes, 1) // align) * align
    for r0 in range(0, rows, step):
        yield r0, min(rows, r0 + step)


def _bytes(a: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8))


def _piece_chunks(reader, scale_reader, p: Piece, full_shape):
    if p.dim is None:
        yield from reader.iter_chunks(p.name)
        return
    row_bytes = math.prod(full_shape[1:]) * itemsize(reader.entry(p.name).dtype)
    if p.dim == 1:
        for r0, r1 in _row_ranges(full_shape[0], row_bytes):
            yield _bytes(reader.read_rows(p.name, r0, r1)[:, p.start:p.stop])
        return
    if p.dequantize_with is None:
        for r0, r1 in _row_ranges(p.stop - p.start, row_bytes):
            yield _bytes(reader.read_rows(p.name, p.start + r0, p.start + r1))
        return
    block = FP8_BLOCK[0]
    scale = scale_reader.read_rows(p.dequantize_with, p.start // block, p.stop // block)
    for r0, r1 in _row_ranges(p.stop - p.start, row_bytes, block):
        w = reader.read_rows(p.name, p.start + r0, p.start + r1)
        yield _bytes(dequantize_fp8(w, scale[r0 // block: r1 // block], BF16))


def _rank_source(ck: Checkpoint, pieces: list[Piece], where: dict[str, str]) -> Source:
    """The header entries one rank's job reads (its pieces and wo_a's scales), from the
    run's source: the worker reads no header."""
    names = [p.name for p in pieces] + [p.dequantize_with for p in pieces if p.dequantize_with]
    return ck.source.for_tensors(ck.dir, [(ck.shard_path(where[n]), [n]) for n in names])


def _write_rank(src: Source, dst: str, file: str, pieces: list[Piece],
                where: dict[str, str], shapes: dict[str, tuple[int, ...]]) -> int:
    """Write one rank's file (a job); `src` local, or remote (read by range)."""
    with ReaderPool(src) as readers, SafetensorsWriter(
            Path(dst) / file, [(p.name, p.dtype, p.shape) for p in pieces]) as w:
        for p in pieces:
            scale_reader = readers(where[p.dequantize_with]) if p.dequantize_with else None
            w.write_bytes(p.name, _piece_chunks(readers(where[p.name]), scale_reader, p,
                                                shapes[p.name]))
    return sum(map(_numel, pieces))  # the writer checked each tensor's byte count


def to_deepseek_mp_v4(src, dst, model_parallel: int, *, workers: int | None = None,
                      overwrite: bool = False, progress: Progress | None = None,
                      executor: ExecutorName = "local", ranks=None,
                      rank_resource: str | None = None) -> ReshardReport:
    """DeepSeek's V4 inference layout, streaming; config.json and side files copied.
    One job per rank file on `executor`; `ranks` writes only those ranks' files and
    `rank_resource` (Ray) places rank i's job on the node holding `{rank_resource}{i}`, as
    for V2/V3 (`reshard.execute_plan`)."""
    t0 = time.monotonic()
    if rank_resource is not None and executor != "ray":
        raise ArgumentError("rank_resource places deepseek-mp ranks on Ray nodes: it needs "
                            "executor='ray'")
    source = Source.open(src)  # the one place this resolves `src`
    refuse_model_parallel_source(source.path)
    with Checkpoint(source) as ck:
        entries, layout, experts = _checked_source(ck, "reshard")
        if layout != "fp8":
            raise ConfigError(f"{ck.dir}: DeepSeek's model-parallel layout is made from the "
                              f"released FP8/FP4 layout (DeepSeek's convert.py dequantises "
                              f"wo_a from it)")
        plan = V4TensorPlan(ck.config, layout, expert_dtype=experts)
        check_blocks(plan, model_parallel)
        ranks_ = rank_pieces(plan, model_parallel)
        selected = sorted(set(ranks)) if ranks is not None else list(range(model_parallel))
        bad = [r for r in selected if not 0 <= r < model_parallel]
        if bad or not selected:
            raise ConfigError(f"{ck.dir}: rank {bad[0] if bad else 'list'} is outside 0-"
                              f"{model_parallel - 1} of a {model_parallel}-way model-parallel "
                              f"layout")
        where = {n: shard for n, (shard, _) in entries.items()}
        shapes = {s.name: s.shape for s in plan.specs}
        files = [mp_file_name(r, model_parallel) for r in range(model_parallel)]
        job = {"command": "reshard-v4-mp", "n": model_parallel, "source": str(ck.dir.resolve()),
               "ranks": selected if ranks is not None else None}
        check_executor(dst, executor)
        with open_output(dst, sources=[ck.dir], overwrite=overwrite, job=job) as out:
            todo = [r for r in selected if not out.is_done(files[r])]
            jobs = [Job(files[r], sum(math.prod(p.shape) for p in ranks_[r]),
                        (_rank_source(ck, ranks_[r], where), str(out.path), files[r], ranks_[r],
                         where, shapes),
                        resources={f"{rank_resource}{r}": 1} if rank_resource else None)
                    for r in todo]
            counted = {r: sum(map(_numel, ranks_[r])) for r in selected if r not in todo}

            def finished(i: int, elements: int) -> None:
                out.mark_done(files[todo[i]])
                counted[todo[i]] = elements

            ran = run_jobs(_write_rank, jobs,
                           workers=workers_for(sum(j.nbytes for j in jobs), workers),
                           executor=executor, progress=progress, label="reshard",
                           on_result=finished)
            write_json_atomic(out.path / CONFIG_FILE, ck.raw_config)
            side = copy_side_files(ck.dir, out.path, exclude={REPORT_FILE})
            outputs = [_file_report(files[r], ranks_[r]) for r in selected]
            planned = sum(_numel(p) for r in selected for p in ranks_[r])
            report = ReshardReport(
                mode="deepseek-mp", source=str(src), destination=out.destination,
                layout="fp8", model_parallel=model_parallel,
                ranks=selected if ranks is not None else None, files=outputs,
                total_size=sum(f.bytes for f in outputs), side_files=side,
                kept=kept_files(dst, side), mtp=_mtp(plan),
                notes=[_wo_a_note(ranks_[0], "deepseek-mp")],
                coverage=_coverage(plan, ranks_, len(set(where.values())),
                                   sum(counted.values()), planned, joined=False),
                resumed_files=len(selected) - len(todo),
                seconds=round(time.monotonic() - t0, 3), nodes=ran.nodes)
            if not report.coverage.complete:
                raise VerificationError(f"{out.path}: the rank files do not account for every "
                                        f"source element once: {report.coverage}")
            # the proof beside DST, as V2/V3's, written while the journal still exists
            write_json_file(report_file(dst), report.model_dump(
                mode="json", exclude=RUN_FIELDS | {"ok"}))
    return report


def from_deepseek_mp_v4(src, dst, *, max_shard_size: int = 5_000_000_000,
                        expert_dtype: str | None = None, overwrite: bool = False,
                        executor: ExecutorName = "local") -> ReshardReport:
    """Rebuild the Hub layout from V4 rank files (N from the names): same names, FP8 wo_a.
    Runs in this process (no executor jobs yet: executor 'ray' is refused)."""
    t0 = time.monotonic()
    if executor != "local":
        raise ConfigError(f"{src}: DeepSeek-V4 rank files are joined in this process; "
                          f"{ARGUMENT_PLACEHOLDER} is not available for them yet",
                          argument="executor", value=executor)
    source = Source.open(src)  # the one place this resolves `src`: local, or remote
    src = source.path
    find_mp_files(src)  # names a missing rank file
    # judged as validate judges it (extra tensors, a stray index, an unknown layout ...):
    # the refusals are the inventory's, with its codes; its headers serve the readers
    found = require(source, "reshard")
    files = {r: src / name for r, name in found.rank_files.items()}
    n = found.model_parallel
    config = read_config_file(src / CONFIG_FILE)
    readers = {r: source.reader(p) for r, p in files.items()}  # headers read once
    try:
        first = readers[0].header.entries
        experts = expert_dtype or ("fp4" if any(e.dtype == "I8" for e in first.values()) else "fp8")
        plan = V4TensorPlan(config, "fp8", expert_dtype=experts)
        ranks = rank_pieces(plan, n)
        holder: dict[str, list[tuple[int, Piece]]] = {}
        stored: dict[str, str] = {}  # a float retagged on the ranks (BF16 -> F16): as stored
        for r, pieces in enumerate(ranks):
            for p in pieces:
                e = readers[r].header.entries.get(p.name)
                if e is None or e.shape != p.shape:
                    found_ = "absent" if e is None else f"{e.dtype} {list(e.shape)}"
                    raise ShapeMismatchError(f"{files[r].name}: tensor '{p.name}': expected "
                                             f"{p.dtype} {list(p.shape)}, found {found_}")
                if e.dtype != p.dtype and p.dequantize_with is None:
                    stored[p.name] = e.dtype
                holder.setdefault(p.name, []).append((r, p))
        groups = pack_by_size(plan.specs, max_shard_size)
        names = [SINGLE_FILE] if len(groups) == 1 else [shard_file_name(i, len(groups))
                                                        for i in range(1, len(groups) + 1)]
        weight_map = {}
        with open_output(dst, sources=[src], overwrite=overwrite) as out:
            for fname, group in zip(names, groups):
                specs = [(s.name, stored.get(s.name, s.dtype), s.shape) for s in group]
                with SafetensorsWriter(out.path / fname, specs) as w:
                    pending: dict[str, np.ndarray] = {}  # wo_a's re-made scale, written next
                    for s in group:
                        weight_map[s.name] = fname
                        if s.name in pending:
                            w.write(s.name, pending.pop(s.name))
                            continue
                        pieces = holder.get(s.name)
                        if pieces is None:
                            raise MissingTensorError(f"{src}: no rank file holds '{s.name}'")
                        if pieces[0][1].dequantize_with:
                            scales: list[np.ndarray] = []
                            w.write_bytes(s.name, _requantized(readers, pieces, scales))
                            pending[s.scale_name] = np.concatenate(scales)
                        else:
                            w.write_bytes(s.name, _joined(readers, pieces, s.shape,
                                                          f"{src}: tensor '{s.name}'"))
            if len(groups) > 1:
                write_index(out.path / INDEX_FILE, ShardIndex(weight_map, plan.total_bytes))
            write_json_atomic(out.path / CONFIG_FILE, json.loads((src / CONFIG_FILE).read_text()))
            side = copy_side_files(src, out.path)
    finally:
        for r in readers.values():
            r.close()
    outputs = [_file_report(name, group) for name, group in zip(names, groups)]
    written = sum(map(_numel, plan.specs))  # every tensor through a checking writer
    report = ReshardReport(
        mode="hf", source=str(src), destination=str(dst), layout="fp8", model_parallel=n,
        max_shard_size=max_shard_size, files=outputs, total_size=sum(f.bytes for f in outputs),
        side_files=side, kept=kept_files(dst, side), mtp=_mtp(plan),
        notes=[_wo_a_note(ranks[0], "hf")],
        coverage=_coverage(plan, ranks, len(files), written, written, joined=True),
        seconds=round(time.monotonic() - t0, 3))
    if not report.coverage.complete:
        raise VerificationError(f"{dst}: the rank files do not account for every tensor of "
                                f"the Hub layout once: {report.coverage}")
    return report


def _joined(readers, pieces: list[tuple[int, Piece]], shape, where: str):
    """The source tensor's bytes from its rank pieces (replicas: rank 0's copy, every
    other rank's checked equal to it, as for V2/V3)."""
    rank0, p0 = pieces[0]
    if p0.dim is None:
        others = [(r, readers[r].iter_chunks(p.name)) for r, p in pieces[1:]]
        for chunk in readers[rank0].iter_chunks(p0.name):
            for r, copy in others:
                if next(copy, None) != chunk:
                    raise VerificationError(f"{where}: the copy on rank {r} differs from "
                                            f"rank {rank0}'s")
            yield chunk
    elif p0.dim == 0:
        for r, p in pieces:
            yield from readers[r].iter_chunks(p.name)
    else:
        row_bytes = math.prod(shape[1:]) * itemsize(p0.dtype)
        for r0, r1 in _row_ranges(shape[0], row_bytes):
            yield _bytes(np.concatenate(
                [readers[r].read_rows(p.name, r0, r1) for r, p in pieces], 1))


def _requantized(readers, pieces: list[tuple[int, Piece]], scales: list[np.ndarray]):
    """wo_a back to FP8 with ue8m0 scales, 128 rows at a time (each rank's share is whole
    blocks); the scale rows are collected in `scales`."""
    block = FP8_BLOCK[0]
    for r, p in pieces:
        rows = p.shape[0]
        for r0, r1 in _row_ranges(rows, math.prod(p.shape[1:]) * 2, block):
            q, s = quantize_fp8(readers[r].read_rows(p.name, r0, r1).astype(np.float32))
            scales.append(s)
            yield _bytes(q)
