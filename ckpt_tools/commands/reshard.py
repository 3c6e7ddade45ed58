"""`ckpt reshard`: HF shards of any size, DeepSeek's model-parallel layout, and back.

Each run plans first (`reshard_plan.plan_reshard`: the source checked against its tensor
plan, every output tensor described as slices of source tensors), proves the plan covers
every source element exactly once (`prove_coverage`) and only then writes: each output
file in parts of about 128 MiB, several jobs at once (`reshard_write`: tensors as byte
runs of the source files, through the kernel or bounded buffers; no shard and no rank's
state dict is ever held in memory). Afterwards the output headers are re-read and the
writers' element counts compared with the plan; the proof goes to `DST.reshard-report.json`
and into the returned report. An interrupted run resumes after the files it finished
(`OutputDir` journal).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, computed_field

from ..inventory.checkpoint import checkpoint_dir, family_given
from ..configs.parse import read_config_file
from ..configs.layouts import INFERENCE_CONFIG_FILE, family_at, to_inference_layout
from ..io.dtypes import itemsize
from ..errors import (ArgumentError, ConfigError, UnsupportedModelError,
                     VerificationError)
from ..io.index import INDEX_FILE, ShardIndex, write_index, write_json_atomic
from ..inventory.mp_layout import MpLayout
from ..io.output import KEPT_DESCRIPTION, REPORT_FILE, report_file, source_fingerprint
from .convert_output import FileWork, write_files
from ..execution.parallel import ExecutorName, Job, NodeWork
from ..execution.progress import Progress
from ..io.reader_pool import ReaderPool
from ..remote.output import (
    check_executor,
    finished_before,
    job_id_of,
    kept_files,
    open_output,
    write_proof,
)
from ..remote.path import RemotePath, job_source
from .reshard_plan import (
    DEFAULT_MAX_SHARD_SIZE,
    Key,
    Mode,
    OutFile,
    OutTensor,
    ReshardPlan,
    config_file_given,
    plan_reshard,
    planned_counts,
    prove_coverage,
)
from ..results import Result
from .reshard_write import (JOB_MEMORY, PART_BYTES, combine_counts, split_file, write_file,
                            write_part)
from ..io.safetensors_io import read_header
from ..io.side_files import copy_file_atomic, copy_side_files
from ..io.source import Source
from ..sizes import Size, parse_size
from ..configs.sources import CONFIG_FILE
from ..inventory.tensor_plan import Layout

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
    kept: list[str] = Field(default_factory=list,
                            description=f"{KEPT_DESCRIPTION} (not in the report file)")
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


# -- running a plan --------------------------------------------------------------------------
def _works(plan: ReshardPlan, todo: list[OutFile], root: str | RemotePath, dst: str,
           remote: bool, resources) -> list[FileWork]:
    """The jobs writing `todo`: parts of about `PART_BYTES` per file (`split_file`), so
    a source of few large shards keeps every worker busy; one whole-file job per file for
    an object-store destination (staged here and uploaded whole, as upcast's). A job reads
    through the run's source cut down to its file's tensors (no header read again)."""
    works = []
    for f in todo:
        src = root if plan.source is None else plan.source.for_tensors(
            plan.src, [(plan.src / p.file, [p.tensor]) for t in f.tensors for p in t.parts])
        if remote:
            works.append(FileWork(f.name, [Job(f.name, f.nbytes, (write_file, src, dst, f),
                                               JOB_MEMORY, resources(f))]))
            continue
        works.append(FileWork(
            f.name, [Job(f.name, sum(p.stop - p.start for p in pieces),
                         (write_part, src, dst, f.name, pieces), JOB_MEMORY, resources(f))
                     for pieces in split_file(f, PART_BYTES)],
            [(t.name, t.dtype, t.shape) for t in f.tensors]))
    return works


def _elements(rows: list, plan: ReshardPlan) -> tuple[dict[Key, int], dict[Key, int]]:
    """A file's (written, compared) elements per source tensor, from its jobs' bytes."""
    written, compared = {}, {}
    for file, tensor, w, c in rows:
        size = itemsize(plan.sources[(file, tensor)][0])
        written[(file, tensor)], compared[(file, tensor)] = w // size, c // size
    return written, compared


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
                          f"{len(plan.files) - 1} of a {plan.model_parallel}-way "
                          f"model-parallel layout")
    return [plan.files[r] for r in sorted(set(ranks))]


def _rank_of(plan: ReshardPlan, f: OutFile) -> int | None:
    return plan.files.index(f) if plan.mode == "deepseek-mp" else None


def execute_plan(plan: ReshardPlan, dst: str | Path, *, workers: int | None = None,
                 overwrite: bool = False, progress: Progress | None = None,
                 executor: ExecutorName = "local", ranks: Sequence[int] | None = None,
                 rank_resource: str | None = None) -> ReshardReport:
    """Prove `plan` covers its source, then write it into `dst` (resuming an interrupted
    run of the same job) and return the report (also written beside DST, to
    `report_file(dst)`). Jobs of about `PART_BYTES` of a file each (one per file for an
    object-store destination), on `workers` processes (default: every core from 1 GiB
    up), or with executor="ray" as Ray tasks.

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
    job_id = job_id_of(job)
    if not overwrite and (done := finished_before(dst, "reshard", job_id, ReshardReport)):
        return done.model_copy(update={"resumed_files": len(done.files),
                                       "seconds": time.monotonic() - t0})
    with open_output(dst, sources=[src], overwrite=overwrite, job=job) as out:
        todo = [f for f in selected if not out.is_done(f.name)]
        resources = (lambda f: {f"{rank_resource}{_rank_of(plan, f)}": 1}) if rank_resource \
            else (lambda f: None)
        found, nodes = write_files(out, _works(plan, todo, job_source(src), str(out.path),
                                               out.remote, resources),
                                   workers=workers, executor=executor, progress=progress,
                                   label=f"reshard to {plan.mode}", combine=combine_counts)
        results = {name: _elements(rows, plan) for name, rows in found.items()}
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
            kept=kept_files(dst, side),
            notes=plan.notes, coverage=Coverage(**coverage, counted_elements=counted,
                                                complete=counted == planned), job_id=job_id,
            resumed_files=len(selected) - len(todo), seconds=time.monotonic() - t0,
            nodes=nodes)
        if not report.coverage.complete:
            raise VerificationError(f"{out.path}: writers counted {counted} output elements, "
                                    f"planned {planned}")
        # Beside the checkpoint, not in it: an upload of DST must carry only the model.
        # Written while the journal still exists: a run killed in between resumes and
        # writes it, a run killed after finds it (`finished_before`): never unproven.
        write_proof(dst, "reshard", report)
    return report


# -- the public calls -------------------------------------------------------------------------
def reshard_by_size(src: str | Path, dst: str | Path, max_shard_size: Size, *,
                    workers: int | None = None, overwrite: bool = False,
                    progress: Progress | None = None, executor: ExecutorName = "local",
                    config: str | Path | None = None) -> ReshardReport:
    """Rewrite an HF checkpoint into shards of at most `max_shard_size` bytes.

    Greedy in tensor-plan order; a weight and its scale share a shard; a tensor larger than
    the limit gets a shard of its own; one shard is named `model.safetensors` (no index),
    several get `model-0000i-of-0000n.safetensors` and an index with `total_size`.
    config.json and side files (tokenizer, ...) are copied; `config`: a config.json or a
    checkpoint directory for a `src` without config.json, copied instead.
    """
    max_shard_size = parse_size(max_shard_size, argument="max_shard_size")
    source = Source.open(src)  # the one place reshard_by_size resolves `src`
    plan = plan_reshard(source, max_shard_size=max_shard_size, config=config)
    return execute_plan(plan, dst, workers=workers, overwrite=overwrite, progress=progress,
                        executor=executor)


def _refuse_mp_layout(src, family) -> None:
    if family.no_mp_layout is not None:
        raise UnsupportedModelError(f"{src}: DeepSeek's model-parallel layout is not meaningful "
                                    f"for {family.title}: {family.no_mp_layout}")


def to_deepseek_mp(src: str | Path, dst: str | Path, model_parallel: int, *,
                   keep_mtp: bool = False, workers: int | None = None, overwrite: bool = False,
                   progress: Progress | None = None, executor: ExecutorName = "local",
                   ranks: Sequence[int] | None = None, rank_resource: str | None = None,
                   config: str | Path | None = None) -> ReshardReport:
    """Write DeepSeek's inference layout: `model{i}-mp{N}.safetensors` for each rank i.

    Equivalent to DeepSeek's convert.py (names, splits, expert placement), streaming, with
    config.json and side files copied. The MTP layer is dropped unless `keep_mtp`.
    `ranks` writes only those ranks' files; `rank_resource` places rank i's job on the Ray
    node holding custom resource `{rank_resource}{i}` (see `execute_plan`). `config`: a
    config.json or a checkpoint directory for a `src` without config.json.

    Raises:
        ConfigError: a dimension `model_parallel` does not divide (before anything is
            written; DST is not even created).
    """
    source = Source.open(src)  # the one place to_deepseek_mp resolves `src`
    given = config_file_given(src, config)
    family = family_given(checkpoint_dir(source), given, "to_mp", "reshard --to deepseek-mp")
    _refuse_mp_layout(src, family)
    if family.has_hook("to_mp"):  # its own convert.py rules (DeepSeek-V4: MTP always kept)
        return family.hook("to_mp")(source, dst, model_parallel, workers=workers,
                                    overwrite=overwrite, progress=progress, executor=executor,
                                    ranks=ranks, rank_resource=rank_resource)
    plan = plan_reshard(source, model_parallel=model_parallel, keep_mtp=keep_mtp, config=given)
    return execute_plan(plan, dst, workers=workers, overwrite=overwrite, progress=progress,
                        executor=executor, ranks=ranks, rank_resource=rank_resource)


def from_deepseek_mp(src: str | Path, dst: str | Path, *, max_shard_size: Size | None = None,
                     config: str | Path | None = None, workers: int | None = None,
                     overwrite: bool = False, progress: Progress | None = None,
                     executor: ExecutorName = "local") -> ReshardReport:
    """Rebuild the HF layout from `model{i}-mp{N}.safetensors` files (N from the names).

    Tensors are reassembled bit for bit; replicated tensors are checked equal on every
    rank. `config` is the HF config.json (or a checkpoint directory holding it) when `src`
    has none (DeepSeek's convert.py writes none). Shards of at most `max_shard_size` bytes
    (default 5 GB).
    """
    if max_shard_size is not None:
        max_shard_size = parse_size(max_shard_size, argument="max_shard_size")
    source = Source.open(src)  # the one place from_deepseek_mp resolves `src`
    given = config_file_given(src, config)
    config = given and given.file
    family = family_at(checkpoint_dir(source), config)
    _refuse_mp_layout(src, family)
    if family.has_hook("from_mp"):
        if config is not None:
            raise ConfigError(f"{src}: for {family.title} rank files, put config.json beside "
                              f"them")
        return family.hook("from_mp")(source, dst, overwrite=overwrite, executor=executor,
                                      **({"max_shard_size": max_shard_size} if max_shard_size
                                         else {}))
    plan = plan_reshard(source, to_hf=True, max_shard_size=max_shard_size, config=config)
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
    `config`, every layout: a config.json or checkpoint directory when `src` has no
    config.json). `executor`: "local" or "ray" (see `run_jobs`).

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
    common = dict(workers=workers, overwrite=overwrite, progress=progress, executor=executor)
    if to == "deepseek-mp":
        if model_parallel is None or max_shard_size is not None:
            raise ArgumentError("to='deepseek-mp' needs model_parallel and no max_shard_size "
                                "(one file per rank)")
        return to_deepseek_mp(src, dst, model_parallel, keep_mtp=keep_mtp, ranks=ranks,
                              rank_resource=rank_resource, config=config, **common)
    if to == "hf":
        return from_deepseek_mp(src, dst, max_shard_size=max_shard_size, config=config, **common)
    return reshard_by_size(src, dst, max_shard_size, config=config, **common)


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
