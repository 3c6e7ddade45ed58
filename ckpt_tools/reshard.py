"""`ckpt reshard`: HF shards of any size, DeepSeek's model-parallel layout, and back.

Each run plans first (`reshard_plan.plan_reshard`: the source checked against its tensor
plan, every output tensor described as slices of source tensors), proves the plan covers
every source element exactly once (`prove_coverage`) and only then writes, one job per
output file. Tensors are copied as byte runs of the source files: whole tensors and dim-0
slices are one run, column slices one run per row, rank pieces interleave back row by
row. Runs go through the kernel (copy_file_range, no user-space buffer) or, when short or
when replicas must be compared, through bounded pread buffers; no shard and no rank's
state dict is ever held in memory. Afterwards the output headers are re-read and the
writers' element counts compared with the plan; the proof goes to `DST.reshard-report.json`
and into the returned report. An interrupted run resumes after the files it finished
(`OutputDir` journal).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, computed_field

from .config import read_config_file
from .config_layouts import INFERENCE_CONFIG_FILE, family_at, to_inference_layout
from .dtypes import itemsize
from .errors import (ArgumentError, ConfigError, OutputError, UnsupportedModelError,
                     VerificationError)
from .index import INDEX_FILE, ShardIndex, write_index, write_json_atomic
from .mp_layout import MpLayout
from .output import JOURNAL_FILE, REPORT_FILE, drop_stale_lock, report_file, source_fingerprint
from .parallel import WORKER_MEMORY, ExecutorName, Job, NodeWork, run_jobs, workers_for
from .progress import Progress
from .reader_pool import ReaderPool
from .remote.output import check_executor, open_output, write_json_file
from .remote.path import RemotePath, is_remote, job_source
from .reshard_plan import (
    DEFAULT_MAX_SHARD_SIZE,
    Key,
    Mode,
    OutFile,
    OutTensor,
    ReshardPlan,
    plan_reshard,
    planned_counts,
    prove_coverage,
)
from .results import Result
from .safetensors_io import CHUNK_BYTES, SafetensorsWriter, read_header
from .side_files import copy_file_atomic, copy_side_files
from .sizes import Size, parse_size
from .sources import CONFIG_FILE
from .tensor_plan import Layout

REPLICA_CHUNK_MIN = 1 << 20
KERNEL_COPY_MIN_RUN = 512  # shorter runs are cut from whole rows in memory instead
# A job holds one chunk being written plus, when interleaving rank pieces or comparing
# replicas, the pieces it joins or compares (about another chunk), with headroom.
JOB_MEMORY = WORKER_MEMORY + 3 * CHUNK_BYTES

__all__ = ["reshard", "reshard_by_size", "to_deepseek_mp", "from_deepseek_mp", "iter_layout",
           "execute_plan", "plan_reshard", "ReshardReport", "Coverage", "REPORT_FILE",
           "report_file",
           "DEFAULT_MAX_SHARD_SIZE"]


# -- reports -------------------------------------------------------------------------------
class Coverage(Result):
    """Proof that every source element is accounted for exactly once."""

    source_files: int
    source_tensors: int
    source_elements: int
    placed_elements: int = Field(description="Source elements written to the outputs, each once")
    replica_elements: int = Field(
        description="Extra copies written of tensors replicated on every rank (to deepseek-mp)")
    compared_elements: int = Field(
        description="Replicas on ranks other than 0 checked equal to rank 0's copy (to hf)")
    dropped_tensors: int = Field(description="Source tensors left out on purpose (MTP)")
    dropped_elements: int
    output_tensors: int
    output_elements: int
    counted_elements: int = Field(
        description="Output elements counted by this run's writers, plus those of files a "
                    "previous run finished, whose headers were re-checked")
    complete: bool = Field(
        description="placed + compared + dropped == source elements, no tensor twice")


class OutputFileReport(Result):
    name: str
    tensors: int
    bytes: int = Field(description="Bytes of tensor data in the file")


# Fields that depend on the run, not on the inputs: kept out of DST/reshard-report.json so
# an interrupted-and-resumed run writes the same bytes as an uninterrupted one.
RUN_FIELDS = {"resumed_files", "seconds", "nodes"}


class ReshardReport(Result):
    """Result of `ckpt reshard` (also written to DST/reshard-report.json)."""

    mode: Mode = Field(description="size: HF shards by size; deepseek-mp: DeepSeek's "
                                   "model{i}-mp{N} layout; hf: back from it")
    source: str
    destination: str
    layout: Layout
    model_parallel: int | None = Field(None, description="Ranks (deepseek-mp, hf)")
    ranks: list[int] | None = Field(
        None, description="deepseek-mp: the ranks whose files this run wrote, when only some "
                          "were asked for (a serving node writes what it loads)")
    max_shard_size: int | None = Field(None, description="Shard size limit in bytes (size, hf)")
    files: list[OutputFileReport] = Field(description="Output tensor files, in order")
    total_size: int = Field(description="Bytes of tensor data written (an HF index's total_size)")
    side_files: list[str] = Field(description="Tokenizer and other files copied unchanged")
    mtp: Literal["kept", "dropped", "absent"] = Field(
        description="The MTP layer: kept, dropped (deepseek-mp default) or absent from the source")
    notes: list[str]
    coverage: Coverage
    job_id: str | None = Field(
        None, description="SHA-256 of the job (command, options, every source file's size and "
                          "mtime): a rerun of the same job finds its finished output by it")
    resumed_files: int = Field(
        0, description="Files an interrupted run had finished, kept as they were (run-specific: "
                       "not in the report file)")
    seconds: float = Field(0.0, description="Wall time of the run (not in the report file)")
    nodes: list[NodeWork] = Field(
        default_factory=list, description="Per machine: files written, bytes, seconds (Ray "
                                          "nodes with --executor ray; not in the report file)")

    @computed_field(description="Every source element accounted for exactly once "
                                "(coverage.complete)")
    @property
    def ok(self) -> bool:
        return self.coverage.complete


# -- streaming one output file ---------------------------------------------------------------
def _counted(chunks: Iterator[bytes], key: Key, counts: Counter) -> Iterator[bytes]:
    for chunk in chunks:
        counts[key] += len(chunk)
        yield chunk


def _same_as(chunks: Iterator[bytes], replicas: list[Iterator[bytes]],
             where: str) -> Iterator[bytes]:
    """Yield `chunks`, checking each replica yields the same bytes (same chunking)."""
    for chunk in chunks:
        for i, other in enumerate(replicas):
            if next(other, None) != chunk:
                raise VerificationError(f"{where}: the copy on rank {i + 1} differs from rank 0's")
        yield chunk
    if any(next(other, None) is not None for other in replicas):
        raise VerificationError(f"{where}: a replica is longer than rank 0's copy")


def _tensor_chunks(readers: ReaderPool, t: OutTensor, written: Counter, compared: Counter,
                   chunk_bytes: int) -> Iterator[bytes]:
    if len(t.parts) == 1:
        p = t.parts[0]
        r = readers(p.file)
        whole = p.dim is None or (p.start, p.stop) == (0, r.entry(p.tensor).shape[p.dim])
        if not t.replicas:
            chunks = (r.iter_chunks(p.tensor, chunk_bytes) if whole
                      else r.iter_slice(p.tensor, p.dim, p.start, p.stop, chunk_bytes))
            yield from _counted(chunks, (p.file, p.tensor), written)
            return
        size = max(REPLICA_CHUNK_MIN, chunk_bytes // (1 + len(t.replicas)))
        others = [_counted(readers(q.file).iter_chunks(q.tensor, size), (q.file, q.tensor),
                           compared) for q in t.replicas]
        first = _counted(r.iter_chunks(p.tensor, size), (p.file, p.tensor), written)
        yield from _same_as(first, others, f"{readers.root}: tensor '{p.tensor}'")
        return
    outer = math.prod(t.shape[:t.dim])
    if outer == 1:  # pieces follow each other
        for p in t.parts:
            yield from _counted(readers(p.file).iter_chunks(p.tensor, chunk_bytes),
                                (p.file, p.tensor), written)
        return
    # interleave: each outer index (row) is the concatenation of every piece's run
    run = t.nbytes // outer // len(t.parts)
    rows = max(1, chunk_bytes // (run * len(t.parts)))
    for o0 in range(0, outer, rows):
        o1 = min(outer, o0 + rows)
        blocks = []
        for p in t.parts:
            data = readers(p.file).read_range(p.tensor, o0 * run, o1 * run)
            written[(p.file, p.tensor)] += len(data)
            blocks.append(np.frombuffer(data, np.uint8).reshape(o1 - o0, run))
        yield np.concatenate(blocks, axis=1).tobytes()


def _kernel_spans(readers: ReaderPool, t: OutTensor,
                  written: Counter) -> Iterator[tuple[int, int, int]] | None:
    """The (fd, offset, length) runs `t` is made of, when copying them in the kernel beats
    slicing rows in memory (no replicas to compare, runs not tiny); else None. Counts the
    bytes each source tensor gives into `written`."""
    if t.replicas:
        return None
    if len(t.parts) == 1:
        p = t.parts[0]
        r = readers(p.file)
        entry = r.entry(p.tensor)
        if p.dim is None:
            nbytes = entry.nbytes
        else:
            shape = entry.shape
            run = (p.stop - p.start) * math.prod(shape[p.dim + 1:]) * itemsize(t.dtype)
            if run < KERNEL_COPY_MIN_RUN and math.prod(shape[:p.dim]) > 1 \
                    and p.stop - p.start != shape[p.dim]:
                return None
            nbytes = run * math.prod(shape[:p.dim])
        written[(p.file, p.tensor)] += nbytes  # write_copy fails unless all of it is copied
        return r.iter_spans(p.tensor, p.dim, p.start, p.stop)
    outer = math.prod(t.shape[:t.dim])
    run = t.nbytes // outer // len(t.parts)  # bytes of one piece per outer index
    if outer > 1 and run < KERNEL_COPY_MIN_RUN:
        return None
    pieces = []
    for p in t.parts:
        r = readers(p.file)
        entry = r.entry(p.tensor)
        written[(p.file, p.tensor)] += entry.nbytes
        pieces.append((r.fileno(), r.header.data_offset + entry.start))
    return ((fd, base + o * run, run) for o in range(outer) for fd, base in pieces)


def write_file(src: str | RemotePath, dst: str, out: OutFile,
               chunk_bytes: int = CHUNK_BYTES) -> tuple[dict[Key, int], dict[Key, int]]:
    """Write one output file (a job: runs in a worker); returns the elements it took from
    each source tensor, counted from the bytes streamed: (written, compared)."""
    readers = ReaderPool(src)
    written: Counter = Counter()
    compared: Counter = Counter()
    item = {(p.file, p.tensor): itemsize(t.dtype) for t in out.tensors
            for p in (*t.parts, *t.replicas)}
    try:
        with SafetensorsWriter(Path(dst) / out.name,
                               [(t.name, t.dtype, t.shape) for t in out.tensors]) as w:
            for t in out.tensors:
                spans = _kernel_spans(readers, t, written)
                if spans is not None:
                    w.write_copy(t.name, spans)
                else:
                    w.write_bytes(t.name,
                                  _tensor_chunks(readers, t, written, compared, chunk_bytes))
    finally:
        readers.close()
    return ({k: n // item[k] for k, n in written.items()},
            {k: n // item[k] for k, n in compared.items()})


# -- running a plan --------------------------------------------------------------------------
def _check_outputs(plan: ReshardPlan, files: list[OutFile], dst: Path | RemotePath,
                   results: dict[str, tuple[dict[Key, int], dict[Key, int]]]) -> int:
    """Re-read the header of every output file written against the plan and compare the
    writers' counts; returns the output elements accounted for."""
    counted = 0
    for f in files:
        path = dst / f.name
        header = read_header(path)  # also checks the data section is complete
        found = [(e.name, e.dtype, e.shape) for e in header.entries.values()]
        if found != [(t.name, t.dtype, t.shape) for t in f.tensors]:
            raise VerificationError(f"{path}: its tensors differ from the plan")
        written, compared = planned_counts(f, plan.sources)
        if f.name in results:
            got_written, got_compared = results[f.name]
            for want, got, what in ((written, got_written, "wrote"),
                                    (compared, got_compared, "compared")):
                bad = next((k for k in want.keys() | got.keys() if want[k] != got.get(k, 0)), None)
                if bad is not None:
                    raise VerificationError(f"{path}: {what} {got.get(bad, 0)} elements of "
                                            f"'{bad[1]}' from {bad[0]}, planned {want[bad]}")
        counted += sum(written.values())
    return counted


def _write_config(plan: ReshardPlan, dst: Path) -> None:
    """config.json (MTP undeclared when dropped); for deepseek-mp also the inference config
    DeepSeek's generate.py takes."""
    if plan.config_path is None:
        return
    target = dst / CONFIG_FILE
    if plan.drop_mtp_from_config or plan.mtp_layers_written is not None:
        raw = json.loads(plan.config_path.read_text(encoding="utf-8"))
        raw["num_nextn_predict_layers"] = plan.mtp_layers_written or 0
        write_json_atomic(target, raw)
    else:
        copy_file_atomic(plan.config_path, target)
    if plan.mode == "deepseek-mp":
        write_json_atomic(dst / INFERENCE_CONFIG_FILE,
                          to_inference_layout(read_config_file(plan.config_path)))


def _rank_files(plan: ReshardPlan, ranks: Sequence[int] | None) -> list[OutFile]:
    if ranks is None:
        return plan.files
    if plan.mode != "deepseek-mp":
        raise ArgumentError("ranks apply to the deepseek-mp layout only")
    bad = [r for r in ranks if not 0 <= r < len(plan.files)]
    if bad or not ranks:
        raise ConfigError(f"{plan.src}: rank {bad[0] if bad else 'list'} is outside 0-"
                          f"{len(plan.files) - 1} of a {plan.model_parallel}-way model-parallel layout")
    return [plan.files[r] for r in sorted(set(ranks))]


def _rank_of(plan: ReshardPlan, f: OutFile) -> int | None:
    return plan.files.index(f) if plan.mode == "deepseek-mp" else None


def execute_plan(plan: ReshardPlan, dst: str | Path, *, workers: int | None = None,
                 overwrite: bool = False, progress: Progress | None = None,
                 executor: ExecutorName = "local", ranks: Sequence[int] | None = None,
                 rank_resource: str | None = None) -> ReshardReport:
    """Prove `plan` covers its source, then write it into `dst` (resuming an interrupted
    run of the same job) and return the report (also written beside DST, to
    `report_file(dst)`). One job per output file, on `workers` processes (default: every
    core from 1 GiB up), or with executor="ray" one Ray task per file.

    `ranks` (deepseek-mp): write only these ranks' files (the proof still covers the whole
    plan; the writers' counts are checked for the files written). `rank_resource` (Ray):
    rank i's job asks for one unit of the custom resource `{rank_resource}{i}`, so it runs
    on the node started with it (`ray start --resources '{"rank3": 1}'`).

    Raises:
        VerificationError: the plan or the written files fail the coverage proof.
        OutputError: `dst` cannot be used (see `OutputDir`).
        ConfigError: a rank outside the plan's ranks.
        ArgumentError: `ranks` or `rank_resource` where they do not apply.
    """
    t0 = time.monotonic()
    if rank_resource is not None and (executor != "ray" or plan.mode != "deepseek-mp"):
        raise ArgumentError("rank_resource places deepseek-mp ranks on Ray nodes: it needs "
                            "executor='ray'")
    check_executor(dst, executor)
    coverage = prove_coverage(plan)  # before anything is written
    selected = _rank_files(plan, ranks)
    src = plan.src
    inputs = {src / f for f, _ in plan.sources}
    inputs |= {p for p in (plan.config_path, src / INDEX_FILE) if p is not None and p.is_file()}
    job = {"command": "reshard", "mode": plan.mode, "max_shard_size": plan.max_shard_size,
           "model_parallel": plan.model_parallel, "mtp": plan.mtp,
           "ranks": sorted(set(ranks)) if ranks is not None else None,
           "config": str(plan.config_path.resolve()) if plan.config_path else None,
           "sources": source_fingerprint(inputs)}
    job_id = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()
    if not overwrite and (done := _finished_before(dst, job_id)) is not None:
        return done.model_copy(update={"resumed_files": len(done.files),
                                       "seconds": time.monotonic() - t0})
    with open_output(dst, sources=[src], overwrite=overwrite, job=job) as out:
        todo = [f for f in selected if not out.is_done(f.name)]
        results: dict[str, tuple[dict[Key, int], dict[Key, int]]] = {}

        def finished(i: int, result) -> None:
            out.mark_done(todo[i].name)
            results[todo[i].name] = result

        job_src = job_source(src)
        jobs = [Job(f.name, f.nbytes, (job_src, str(out.path), f), JOB_MEMORY,
                    {f"{rank_resource}{_rank_of(plan, f)}": 1} if rank_resource else None)
                for f in todo]
        ran = run_jobs(write_file, jobs, workers=workers_for(sum(f.nbytes for f in todo), workers),
                       executor=executor, progress=progress, label=f"reshard to {plan.mode}",
                       on_result=finished)
        counted = _check_outputs(plan, selected, out.written_root(), results)
        planned = sum(math.prod(t.shape) for f in selected for t in f.tensors)
        side = copy_side_files(src, out.path, exclude={REPORT_FILE})
        _write_config(plan, out.path)
        if plan.mode != "deepseek-mp" and len(plan.files) > 1:
            weight_map = {t.name: f.name for f in plan.files for t in f.tensors}
            write_index(out.path / INDEX_FILE,
                        ShardIndex(weight_map, sum(f.nbytes for f in plan.files)))
        report = ReshardReport(
            mode=plan.mode, source=str(src.resolve()), destination=out.destination,
            layout=plan.layout, model_parallel=plan.model_parallel,
            ranks=sorted(set(ranks)) if ranks is not None else None,
            max_shard_size=plan.max_shard_size,
            files=[OutputFileReport(name=f.name, tensors=len(f.tensors), bytes=f.nbytes)
                   for f in selected],
            total_size=sum(f.nbytes for f in selected), side_files=side, mtp=plan.mtp,
            notes=plan.notes, coverage=Coverage(**coverage, counted_elements=counted,
                                                complete=counted == planned), job_id=job_id,
            resumed_files=len(selected) - len(todo), seconds=time.monotonic() - t0,
            nodes=ran.nodes)
        if not report.coverage.complete:
            raise VerificationError(f"{out.path}: writers counted {counted} output elements, "
                                    f"planned {planned}")
        # Beside the checkpoint, not in it: an upload of DST must carry only the model.
        # Written while the journal still exists: a run killed in between resumes and
        # writes it, a run killed after finds it (`_finished_before`): never unproven.
        write_json_file(report_file(dst), report.model_dump(mode="json",
                                                             exclude=RUN_FIELDS | {"ok"}))
    return report


def _finished_before(dst: str | Path, job_id: str) -> ReshardReport | None:
    """The report of a finished run of this very job into `dst` (its proof beside DST, no
    journal left, every file it lists present), or None."""
    if isinstance(dst, str) and is_remote(dst):
        return None
    proof, dst = Path(report_file(dst)), Path(dst)
    if not proof.is_file() or (dst / JOURNAL_FILE).exists():
        return None
    try:
        report = ReshardReport.model_validate_json(proof.read_text())
    except (OSError, ValueError):
        return None
    if report.job_id != job_id or not all((dst / f.name).is_file() for f in report.files):
        return None
    if not drop_stale_lock(dst):
        raise OutputError(f"{dst}: another ckpt run is writing here (lock held)")
    return report.model_copy(update={"notes": [*report.notes, "already complete: this job "
                                               "finished before; nothing was written"]})


# -- the public calls -------------------------------------------------------------------------
def reshard_by_size(src: str | Path, dst: str | Path, max_shard_size: Size, *,
                    workers: int | None = None, overwrite: bool = False,
                    progress: Progress | None = None,
                    executor: ExecutorName = "local") -> ReshardReport:
    """Rewrite an HF checkpoint into shards of at most `max_shard_size` bytes.

    Greedy in tensor-plan order; a weight and its scale share a shard; a tensor larger than
    the limit gets a shard of its own; one shard is named `model.safetensors` (no index),
    several get `model-0000i-of-0000n.safetensors` and an index with `total_size`.
    config.json and side files (tokenizer, ...) are copied.
    """
    max_shard_size = parse_size(max_shard_size, argument="max_shard_size")
    plan = plan_reshard(src, max_shard_size=max_shard_size)
    return execute_plan(plan, dst, workers=workers, overwrite=overwrite, progress=progress,
                        executor=executor)


def _refuse_mp_layout(src, family) -> None:
    if family.no_mp_layout is not None:
        raise UnsupportedModelError(f"{src}: DeepSeek's model-parallel layout is not meaningful "
                                    f"for {family.title}: {family.no_mp_layout}")


def to_deepseek_mp(src: str | Path, dst: str | Path, model_parallel: int, *,
                   keep_mtp: bool = False, workers: int | None = None, overwrite: bool = False,
                   progress: Progress | None = None, executor: ExecutorName = "local",
                   ranks: Sequence[int] | None = None,
                   rank_resource: str | None = None) -> ReshardReport:
    """Write DeepSeek's inference layout: `model{i}-mp{N}.safetensors` for each rank i.

    Equivalent to DeepSeek's convert.py (names, splits, expert placement), streaming, with
    config.json and side files copied. The MTP layer is dropped unless `keep_mtp`.
    `ranks` writes only those ranks' files; `rank_resource` places rank i's job on the Ray
    node holding custom resource `{rank_resource}{i}` (see `execute_plan`).

    Raises:
        ConfigError: a dimension `model_parallel` does not divide (before anything is
            written; DST is not even created).
    """
    family = family_at(src)
    _refuse_mp_layout(src, family)
    if family.has_hook("to_mp"):  # its own convert.py rules (DeepSeek-V4: MTP always kept)
        return family.hook("to_mp")(src, dst, model_parallel, workers=workers,
                                    overwrite=overwrite, progress=progress, executor=executor,
                                    ranks=ranks, rank_resource=rank_resource)
    plan = plan_reshard(src, model_parallel=model_parallel, keep_mtp=keep_mtp)
    return execute_plan(plan, dst, workers=workers, overwrite=overwrite, progress=progress,
                        executor=executor, ranks=ranks, rank_resource=rank_resource)


def from_deepseek_mp(src: str | Path, dst: str | Path, *, max_shard_size: Size | None = None,
                     config: str | Path | None = None, workers: int | None = None,
                     overwrite: bool = False, progress: Progress | None = None,
                     executor: ExecutorName = "local") -> ReshardReport:
    """Rebuild the HF layout from `model{i}-mp{N}.safetensors` files (N from the names).

    Tensors are reassembled bit for bit; replicated tensors are checked equal on every
    rank. `config` is the HF config.json when `src` has none (DeepSeek's convert.py writes
    none). Shards of at most `max_shard_size` bytes (default 5 GB).
    """
    if max_shard_size is not None:
        max_shard_size = parse_size(max_shard_size, argument="max_shard_size")
    family = family_at(src, config)
    _refuse_mp_layout(src, family)
    if family.has_hook("from_mp"):
        if config is not None:
            raise ConfigError(f"{src}: for {family.title} rank files, put config.json beside "
                              f"them")
        return family.hook("from_mp")(src, dst, overwrite=overwrite, executor=executor,
                                      **({"max_shard_size": max_shard_size} if max_shard_size
                                         else {}))
    plan = plan_reshard(src, to_hf=True, max_shard_size=max_shard_size, config=config)
    return execute_plan(plan, dst, workers=workers, overwrite=overwrite, progress=progress,
                        executor=executor)


def reshard(src: str | Path, dst: str | Path, *, max_shard_size: Size | None = None,
            to: Literal["deepseek-mp", "hf"] | None = None, model_parallel: int | None = None,
            keep_mtp: bool = False, config: str | Path | None = None,
            workers: int | None = None, overwrite: bool = False,
            progress: Progress | None = None, executor: ExecutorName = "local",
            ranks: Sequence[int] | None = None,
            rank_resource: str | None = None) -> ReshardReport:
    """Rewrite `src` into `dst` in another layout: what `ckpt reshard` does.

    `max_shard_size` alone: HF shards of at most that size (`reshard_by_size`);
    `to="deepseek-mp"` with `model_parallel`: DeepSeek's inference layout (`to_deepseek_mp`,
    where `ranks` and `rank_resource` apply); `to="hf"`: back from it (`from_deepseek_mp`,
    `config` when `src` has no config.json). `executor`: "local" or "ray" (see `run_jobs`).

    Raises:
        ArgumentError: a combination of arguments that names no single layout.
        CkptError subclasses from the call chosen.
    """
    if to not in (None, "deepseek-mp", "hf"):
        raise ArgumentError(f"to={to!r}: expected 'deepseek-mp', 'hf' or None")
    if to is None and max_shard_size is None:
        raise ArgumentError("pass max_shard_size, to='deepseek-mp' or to='hf'")
    if to != "deepseek-mp" and (model_parallel is not None or keep_mtp or ranks is not None
                                or rank_resource is not None):
        raise ArgumentError("model_parallel, keep_mtp, ranks and rank_resource go with "
                            "to='deepseek-mp'")
    if to != "hf" and config is not None:
        raise ArgumentError("config goes with to='hf'")
    common = dict(workers=workers, overwrite=overwrite, progress=progress, executor=executor)
    if to == "deepseek-mp":
        if model_parallel is None or max_shard_size is not None:
            raise ArgumentError("to='deepseek-mp' needs model_parallel and no max_shard_size "
                                "(one file per rank)")
        return to_deepseek_mp(src, dst, model_parallel, keep_mtp=keep_mtp, ranks=ranks,
                              rank_resource=rank_resource, **common)
    if to == "hf":
        return from_deepseek_mp(src, dst, max_shard_size=max_shard_size, config=config, **common)
    return reshard_by_size(src, dst, max_shard_size, **common)


def _assemble(readers: ReaderPool, t: OutTensor) -> np.ndarray:
    arrays = []
    for p in t.parts:
        a = readers(p.file).get(p.tensor)
        if p.dim is not None:
            a = a[(slice(None),) * p.dim + (slice(p.start, p.stop),)]
        arrays.append(a)
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=t.dim)


def iter_layout(src: str | Path, layout: ReshardPlan | MpLayout,
                ) -> Iterator[tuple[int, str, np.ndarray]]:
    """Lazily yield `(rank, name, array)` for every tensor of a layout, rank by rank.

    `layout` is an `MpLayout` (its model_parallel and keep_mtp are applied to `src`) or any
    plan from `plan_reshard` (then `rank` is the output file's index). Arrays are read-only
    views of the source's mmap where possible (whole tensors, slices) and new arrays where
    pieces are concatenated; nothing is read before it is asked for.
    """
    if isinstance(layout, MpLayout):
        layout = plan_reshard(src, model_parallel=layout.model_parallel, keep_mtp=layout.keep_mtp)
    readers = ReaderPool(src)
    try:
        for rank, f in enumerate(layout.files):
            for t in f.tensors:
                yield rank, t.name, _assemble(readers, t)
    finally:
        readers.close()
