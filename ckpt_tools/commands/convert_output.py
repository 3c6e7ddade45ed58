"""What upcast and quantize share with DeepSeek-V4's (`families/deepseek_v4/convert`): the
reports, the journal identity of a run, and running the jobs that write the output files
(whole, or in byte-range parts). Apart from `convert` so that `convert` can hand V4 sources
to `families/deepseek_v4/convert` without the two importing each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, NamedTuple, TypeVar

from pydantic import Field, computed_field

from .. import __version__
from ..io import part_writer
from ..inventory.checkpoint import Checkpoint
from .convert_jobs import call
from ..io.dtypes import itemsize
from ..errors import ARGUMENT_PLACEHOLDER, UnexpectedTensorError
from ..formats.round_trip import combine_errors
from ..io.index import INDEX_FILE, ShardIndex, write_index, write_json_atomic
from ..io.output import KEPT_DESCRIPTION, OutputDir, source_fingerprint
from ..execution.parallel import ExecutorName, Job, NodeWork, run_jobs, workers_for
from ..execution.progress import Progress
from ..remote.streamed import plan_streams
from ..remote.output import check_executor, finished_before, job_id_of, open_output, write_proof
from ..results import Result
from ..io.side_files import copy_side_files
from ..configs.sources import CONFIG_FILE

ReportT = TypeVar("ReportT", bound=Result)
UpcastDtype = Literal["bf16", "f32"]
ScaleFmt = Literal["float", "ue8m0"]


# -- reports ------------------------------------------------------------------------------
class RoundTripError(Result):
    """How far FP8 -> float32 lands from the source values of one quantised tensor."""

    name: str
    max_abs_error: float = Field(
        description="max |upcast_f32(quantised) - source| over finite values")
    rel_l2_error: float = Field(description="||upcast_f32(quantised) - source|| / ||source||")
    nonfinite: int = Field(0, description="NaN/inf source values (NaN kept, inf saturated), "
                                          "left out of both statistics")


class _WrittenCheckpoint(Result):
    source: str
    destination: str
    files: list[str] = Field(description="Output shard files, in order")
    total_size: int = Field(description="Bytes of tensor data (the index's total_size)")
    resumed_files: int = Field(0, description="Shards an interrupted run had finished (kept; "
                                              "not in the proof beside DST)")
    side_files: list[str]
    kept: list[str] = Field(default_factory=list, description=KEPT_DESCRIPTION)
    notes: list[str] = Field(default_factory=list, description="What a user should know about "
                                                               "the options taken and the run")
    job_id: str | None = Field(
        None, description="SHA-256 of the job (command, options, every source file's size and "
                          "identity): a rerun of the same job finds its finished output by it")
    seconds: float = Field(0.0, description="Wall time of the run (not in the proof beside DST)")
    nodes: list[NodeWork] = Field(
        default_factory=list, description="Per machine: the shards it wrote, bytes written, "
                                          "seconds (Ray nodes with --executor ray)")

    @computed_field(description="Always true: a conversion that fails raises and leaves no output")
    @property
    def ok(self) -> bool:
        return True


class UpcastReport(_WrittenCheckpoint):
    """What `upcast` wrote; `ckpt upcast --json` prints exactly this."""

    dtype: UpcastDtype
    tensors: int = Field(description="Tensors in the output")
    dequantized: int = Field(description="FP8 weights dequantised with their scales")
    widened: int = Field(description="BF16/F16 tensors widened to F32 (--dtype f32)")
    copied: int = Field(description="Tensors copied byte for byte")
    scales_dropped: int
    layout: str = Field("hf", description="Output names: hf (transformers'), or deepseek "
                                          "(DeepSeek's own, for families stored under them)")


class QuantizeReport(_WrittenCheckpoint):
    """What `quantize` wrote, with the round-trip error per tensor; `ckpt quantize --json`
    prints exactly this."""

    scale_fmt: ScaleFmt
    block: tuple[int, int]
    tensors: int = Field(description="Tensors in the output, scales included")
    quantized: int = Field(description="Weights quantised to F8_E4M3 (each with a scale)")
    copied: int = Field(description="Tensors copied byte for byte")
    max_abs_error: float = Field(description="Largest max_abs_error over all tensors")
    max_rel_l2_error: float = Field(description="Largest rel_l2_error over all tensors")
    errors: list[RoundTripError] = Field(description="Per quantised tensor, in output order")


def copy_refusal(where, dtype: str) -> UnexpectedTensorError:
    """What `upcast` raises, without allow_copy, when nothing in the source would change."""
    return UnexpectedTensorError(
        f"{where}: no FP8 weight to dequantise{'' if dtype == 'bf16' else ' or widen'}: "
        f"the output would be a copy of the source; pass {ARGUMENT_PLACEHOLDER} "
        f"to write it anyway", argument="allow_copy")


# -- running the jobs ---------------------------------------------------------------------
class FileWork(NamedTuple):
    """The jobs that write one output file: one whole-file job (`specs` None), or parts
    writing byte ranges of a file `part_writer` creates from `specs` up front."""

    file: str
    jobs: list[Job]
    specs: list[tuple[str, str, tuple[int, ...]]] | None = None


def write_files(out: OutputDir, works: list[FileWork], *, workers: int | None,
                executor: ExecutorName, progress: Progress | None, label: str,
                combine: Callable[[dict[int, dict]], dict] | None = None
                ) -> tuple[dict[str, list], list[NodeWork]]:
    """Run the jobs writing `works`, journaling each file as it completes (a whole-file
    job's result, or `combine` of its parts' results by job index (default: quantize's
    error sums), is journaled with it and merged into the returned dict); where the jobs
    ran. On failure no `.partial` of a file written in parts stays behind (whole-file
    writers remove their own)."""
    args, files, errors = [], [], {}
    # file -> jobs still to return: its own, and the streaming jobs its reads wait for
    unfinished: dict[str, int] = {}
    in_parts: set[str] = set()  # files written in parts (committed from a .partial)
    results: dict[str, dict[int, dict]] = {}  # file -> job index -> its result
    try:
        for w in works:
            args += w.jobs
            files += [w.file] * len(w.jobs)
            unfinished[w.file] = len(w.jobs)
            if w.specs is None:
                continue
            part_writer.create(out.path / w.file, w.specs)
            in_parts.add(w.file)
            if not w.jobs:  # no tensor data: complete as created
                del unfinished[w.file]
                part_writer.commit(out.path / w.file)
                out.mark_done(w.file)
        # a hashed hf:// file one job streams: other jobs reading bytes of it wait for that
        # job's return, which checked those bytes with the rest (remote.verified)
        releases: dict[int, set[str]] = {}  # streaming job -> other files waiting for it
        for i, owners in plan_streams(args).items():
            for owner in owners:
                if files[owner] != files[i] and files[i] not in releases.setdefault(owner, set()):
                    releases[owner].add(files[i])
                    unfinished[files[i]] += 1

        def settle(file: str) -> None:
            unfinished[file] -= 1
            if unfinished[file]:
                return
            del unfinished[file]
            found = results.pop(file, {})
            if file in in_parts:  # complete with its last part
                part_writer.commit(out.path / file)
                result = (combine or _combined)(found)
                out.mark_done(file, result or None)
            else:
                result = next(iter(found.values()))
                out.mark_done(file, result)
            errors.update(result)

        def finished(i: int, result: dict[str, list]) -> None:
            results.setdefault(files[i], {})[i] = result
            settle(files[i])
            for waiting in releases.pop(i, ()):
                settle(waiting)

        nbytes = sum(a.nbytes for a in args)
        ran = run_jobs(call, args, workers=workers_for(nbytes, workers), executor=executor,
                       progress=progress, label=label, on_result=finished)
    except BaseException:
        for file in unfinished.keys() & in_parts:
            part_writer.discard(out.path / file)
        raise
    return errors, ran.nodes


def run_conversion(ck: Checkpoint, dst, files: Sequence[str],
                   works: Callable[[OutputDir, list[int]], list[FileWork]],
                   specs: Iterable[tuple[str, tuple[str, str, tuple[int, ...]]]], *,
                   job: dict, config: dict, index_metadata: dict | None, keeps_stats: bool,
                   workers: int | None, executor: ExecutorName, overwrite: bool,
                   progress: Progress | None, label: str,
                   report: Callable[..., ReportT], report_type: type[ReportT]) -> ReportT:
    """Upcast's and quantize's run, every family's: write the output `files` a journaled
    earlier run has not finished (`works(out, indices)`: their jobs; quantize's files
    `keeps_stats`, so one finished without them is written again), then the index of
    `specs` ((file, (name, dtype, shape)); none without `index_metadata`), config.json and
    the side files. `ck` may be remote (read by range), `dst` an object store (staged,
    uploaded whole). Returns `report(files resumed, side files, round-trip errors by tensor,
    bytes of tensor data, per-node work, job id)`, also left beside DST (while the journal
    still exists) as the proof a rerun of the same job finds: it then writes nothing and
    returns that report, "already complete"."""
    check_executor(dst, executor)
    job_id = job_id_of(job)
    if not overwrite and (done := finished_before(dst, label, job_id, report_type)):
        return done.model_copy(update={"resumed_files": len(done.files)})
    with open_output(dst, sources=[ck.dir], overwrite=overwrite, job=job) as out:
        todo, errors = [], {}
        for i, file in enumerate(files):
            done = out.is_done(file)
            info = out.done_info(file) if done else None
            if not done or (keeps_stats and info is None):
                todo.append(i)
            else:
                errors.update(info or {})
        found, nodes = write_files(out, works(out, todo), workers=workers, executor=executor,
                                   progress=progress, label=label)
        errors.update(found)
        weight_map, total = {}, 0
        for file, (name, dtype, shape) in specs:
            weight_map[name] = file
            total += math.prod(shape) * itemsize(dtype)
        if index_metadata is not None:
            write_index(out.path / INDEX_FILE, ShardIndex(weight_map, total, index_metadata))
        write_json_atomic(out.path / CONFIG_FILE, config)
        side = copy_side_files(ck.dir, out.path)
        done = report(len(files) - len(todo), side, errors, total, nodes, job_id)
        write_proof(dst, label, done)  # while the journal exists (`finished_before`)
    return done


def _combined(parts: dict[int, dict[str, list]]) -> dict[str, list]:
    """Per tensor, quantize's round-trip error from the sums of its parts (in job order)."""
    sums: dict[str, list[list]] = {}
    for i in sorted(parts):
        for name, s in parts[i].items():
            sums.setdefault(name, []).append(s)
    return {name: combine_errors(s) for name, s in sums.items()}


def _job(command: str, ck: Checkpoint, options: dict) -> dict:
    """The journal's identity of a run: a rerun resumes only when all of it matches."""
    files = [ck.shard_path(s) for s in ck.shard_names]
    files += [p for p in (ck.config_path, ck.index_path) if p is not None]  # a preset has no file
    return {"command": command, "version": __version__, "options": options,
            "sources": source_fingerprint(files)}


def _with_dtype(raw: dict, dtype: str) -> dict:
    """`raw` with its dtype key set (transformers v5 writes `dtype`, older ones `torch_dtype`)."""
    out = dict(raw)
    keys = [k for k in ("torch_dtype", "dtype") if k in out] or ["torch_dtype"]
    for k in keys:
        out[k] = dtype
    return out
