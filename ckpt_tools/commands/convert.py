"""Whole-checkpoint FP8 conversion: `upcast` (FP8 -> BF16/F32) and `quantize` (-> FP8).

Three phases:
1. Plan (nothing written): read every header, pair each FP8 weight with its
   `weight_scale_inv` through the index (the scale may sit in any shard), check dtypes,
   shapes and scale values against the tensor plan, and raise naming the tensor on the
   first defect. Which tensors are FP8 is the tensor plan's answer, never a name list.
2. Write: jobs (`convert_jobs`) on an executor (worker processes, or Ray tasks): upcast
   writes each output shard in parts of ~128 MiB of source, several jobs at once;
   quantize one job per shard. A job streams a few row blocks at a time, so a worker
   holds a few MB, never a tensor or a shard. Shards appear under their final name only
   when complete; each is journaled as it finishes (`OutputDir`), so a rerun after a
   crash or SIGKILL skips finished shards and ends with the same bytes.
3. Finish: the index (exact `total_size`, no scales), config.json edited as a raw dict
   (only `quantization_config` and `torch_dtype` change; unknown keys stay), side files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..formats import FP8_QUANTIZATION_CONFIG
from ..inventory.checkpoint import Checkpoint, checkpoint_dir, family_given, model_parallel_refusal
from .convert_jobs import (
    PART_BYTES,
    Piece,
    ShardJob,
    TensorOp,
    job_memory,
    job_source,
    split_file,
    write_file,
    write_part,
)
from .convert_output import (  # noqa: F401
    FileWork,
    QuantizeReport,
    RoundTripError,
    ScaleFmt,  # noqa: F401
    UpcastDtype,
    UpcastReport,
    _job,
    copy_refusal,
    _with_dtype,
    run_conversion,
    write_files,  # noqa: F401  (the reports are this module's API)
)
from ..configs.parse import Config
from ..io.dtypes import FP8_DTYPES, itemsize
from ..errors import (
    ArgumentError,
    ConfigError,
    FormatError,
    UnexpectedTensorError,
)
from ..families import FAMILIES
from ..io.index import pack_greedy, shard_file_name
from ..inventory.inspect import Inspection, reader_of, require
from ..execution.parallel import ExecutorName, Job, NodeWork
from ..execution.progress import Progress
from ..remote.output import kept_files
from ..remote.streamed import streams_files
from ..io.safetensors_io import TensorEntry
from ..sizes import Size, parse_size
from ..io.source import Source
from ..configs.sources import ConfigSource, given_config
from ..inventory.tensor_plan import TensorPlan, scale_name_for

OUT_DTYPES = {"bf16": "BF16", "f32": "F32"}
TORCH_DTYPES = {"BF16": "bfloat16", "F32": "float32"}
WIDENABLE = ("BF16", "F16")  # exact in float32: widened by upcast --dtype f32
QUANTIZABLE = ("BF16", "F16", "F32")
SCALE_WINDOW = 64  # tensors whose scales planning reads ahead at once (remote sources)
ReportOf = {"upcast": UpcastReport, "quantize": QuantizeReport}  # their proofs beside DST


class ConversionPlan(NamedTuple):
    """Everything a run will write, decided before writing."""

    jobs: list[ShardJob]
    block: tuple[int, int]
    write_index: bool
    index_metadata: dict
    scales_dropped: int

    def out_specs(self) -> Iterator[tuple[str, tuple[str, str, tuple[int, ...]]]]:
        for job in self.jobs:
            for op in job.ops:
                for spec in op.out_specs(self.block):
                    yield job.file, spec


# -- planning -----------------------------------------------------------------------------
def _source_tensors(found: Inspection) -> list[tuple[str, TensorEntry]]:
    """(shard, entry) of every tensor, shard by shard in header order (the inventory has
    checked that index and files agree)."""
    inv = found.inventory
    return [(inv.shard_of[name], entry) for name, entry in inv.entries.items()]


def _check_scale_values(ck: Checkpoint, scale: str) -> None:
    """Scales must be finite and non-negative (a header check cannot see values)."""
    values = ck.read(scale).reshape(-1)
    ok = np.isfinite(values) & (values >= 0)
    if not ok.all():
        error = FormatError(f"{ck.shard_path(ck.locate(scale)[0])}: tensor '{scale}': scales "
                            f"must be finite and non-negative, found {values[~ok][0]} "
                            f"[scale-invalid]")
        error.finding = "scale-invalid"
        raise error


def _upcast_ops(ck: Checkpoint, found: Inspection, out_dtype: str
                ) -> tuple[list[TensorOp], int, tuple[int, int]]:
    """Dequantise FP8 weights (the inventory paired each with its scale), drop the scales,
    widen or copy the rest as stored."""
    inv, block = found.inventory, found.plan.block
    ops, scales = [], 0
    tensors = _source_tensors(found)
    for i, (shard, e) in enumerate(tensors):
        if i % SCALE_WINDOW == 0:  # remote sources: the window's scales in one round trip
            ck.prefetch([scale_name_for(t.name) for _, t in tensors[i:i + SCALE_WINDOW]
                         if t.dtype in FP8_DTYPES])
        if e.dtype in FP8_DTYPES:
            scale = scale_name_for(e.name)
            _check_scale_values(ck, scale)
            ops.append(TensorOp(e.name, "dequantize", shard, e.dtype, out_dtype, e.shape,
                                scale, inv.shard_of[scale]))
        elif e.name in inv.scales:
            scales += 1  # applied to its weight, not written
        elif out_dtype == "F32" and e.dtype in WIDENABLE:
            ops.append(TensorOp(e.name, "widen", shard, e.dtype, "F32", e.shape))
        else:
            ops.append(TensorOp(e.name, "copy", shard, e.dtype, e.dtype, e.shape))
    return ops, scales, block


def _quantize_ops(found: Inspection) -> tuple[list[TensorOp], tuple[int, int]]:
    """Quantise what the FP8 plan stores as F8_E4M3; copy the rest as stored."""
    plan = TensorPlan(found.config, "fp8")
    ops = []
    for shard, e in _source_tensors(found):
        if e.dtype in FP8_DTYPES or e.name in found.inventory.scales:
            raise UnexpectedTensorError(f"{found.root / shard}: tensor '{e.name}' ({e.dtype}) is "
                                        f"already quantised; quantize takes a BF16/F16/F32 "
                                        f"checkpoint")
        spec = plan.get(e.name)
        if spec is not None and spec.dtype == "F8_E4M3":
            ops.append(TensorOp(e.name, "quantize", shard, e.dtype, "F8_E4M3", e.shape,
                                spec.scale_name))
        else:
            ops.append(TensorOp(e.name, "copy", shard, e.dtype, e.dtype, e.shape))
    return ops, plan.block


def _out_bytes(op: TensorOp, block: tuple[int, int]) -> int:
    return sum(math.prod(shape) * itemsize(dtype) for _, dtype, shape in op.out_specs(block))


def _group(ck: Checkpoint, ops: list[TensorOp], block, max_shard_size: int | None
           ) -> tuple[list[ShardJob], bool]:
    """Jobs keeping the source's shard files, or new ones filled greedily in plan order."""
    if max_shard_size is None:
        by_shard: dict[str, list[TensorOp]] = {}
        for op in ops:
            by_shard.setdefault(op.shard, []).append(op)
        jobs = [ShardJob(shard, tuple(group)) for shard, group in by_shard.items()]
        return jobs, ck.index_path is not None or len(jobs) > 1
    order = {s.name: i for i, s in enumerate(TensorPlan(ck.config, "fp8").specs)}
    ranked = sorted(enumerate(ops), key=lambda p: (order.get(p[1].name, len(order)), p[0]))
    groups = pack_greedy((([op], _out_bytes(op, block)) for _, op in ranked), max_shard_size)
    n = len(groups)
    return [ShardJob(shard_file_name(i, n), tuple(g)) for i, g in enumerate(groups, 1)], n > 1


# -- running ------------------------------------------------------------------------------
def _job_source(ck: Checkpoint, job: ShardJob | list[Piece]) -> Source:
    """What a job reads, for its worker: the header entries of its tensors and scales."""
    return job_source(ck, [p.op for p in job] if isinstance(job, list) else job.ops)


def _shard_works(out, ck: Checkpoint, plan: ConversionPlan, todo: list[ShardJob], *,
                 scale_fmt: str | None) -> list[FileWork]:
    """The jobs of the shards `todo`. Both write each shard in parts of about `PART_BYTES`
    of source, whole row blocks of a tensor each (`split_file`), so one large shard keeps
    every worker busy; quantize's parts return their error sums per tensor, combined in part
    order (`write_files`).

    Each job reads through a `Source` carrying the header entries it needs (`_job_source`):
    no worker reads a header. A remote source's `RemotePath` pickles as its URL and listing
    and reopens in the worker (a Ray task, or a worker process) without listing again:
    every job reads the one revision, checked against the one set of ETags.

    An object-store destination (`out.remote`) gets one whole-file job per shard, not parts:
    part-wise pwrite works only on a file every writer sees, and the files are staged on
    this machine's disk and uploaded whole when complete. Parts of many files in flight at
    once would stage most of the checkpoint locally before the first upload; whole files
    keep the staging to the files being written (one per worker)."""
    dst = str(out.path)
    works = []
    # a hashed hf:// file is best read by one job, which streams and hashes it as it reads
    part_bytes = None if streams_files(ck.dir) else PART_BYTES
    for j in todo:
        memory = job_memory(j, plan.block)
        specs = [s for op in j.ops for s in op.out_specs(plan.block)]
        if out.remote:  # an object store: one job a file
            out_bytes = sum(math.prod(s) * itemsize(d) for _, d, s in specs)
            works.append(FileWork(j.file, [Job(j.file, out_bytes,
                                               (write_file, _job_source(ck, j), dst, j,
                                                plan.block, scale_fmt), memory)]))
            continue
        works.append(FileWork(
            j.file, [Job(j.file, sum(p.out_bytes for p in pieces),
                         (write_part, _job_source(ck, pieces), dst, j.file, pieces,
                          plan.block, scale_fmt), memory, in_order=True)
                     for pieces in split_file(j, plan.block, part_bytes)],
            specs))
    return works


def _run(ck: Checkpoint, dst: str | Path, plan: ConversionPlan, job: dict, report, *,
         workers: int | None, executor: ExecutorName, overwrite: bool,
         progress: Progress | None, label: str, scale_fmt: str | None, config: dict):
    """Write every shard (skipping journaled ones), then index, config and side files;
    returns `report(resumed, side_files, errors, nodes, job_id)`, also left beside DST as the
    proof a rerun of the same job finds (then it writes nothing: "already complete")."""
    return run_conversion(
        ck, dst, [j.file for j in plan.jobs],
        lambda out, todo: _shard_works(out, ck, plan, [plan.jobs[i] for i in todo],
                                       scale_fmt=scale_fmt),
        plan.out_specs(), job=job, config=config,
        index_metadata=plan.index_metadata if plan.write_index else None,
        keeps_stats=scale_fmt is not None, workers=workers, executor=executor,
        overwrite=overwrite, progress=progress, label=label,
        report=lambda resumed, side, errors, _bytes, nodes, job_id:
            report(resumed, side, errors, nodes, job_id),
        report_type=ReportOf[label])


def _config_option(given: ConfigSource | None) -> dict:
    """The journal's record of a given config: a rerun with another one starts afresh."""
    return {} if given is None else {"config": given.label}


def plan_upcast(src: str | Path | Source, *, dtype: UpcastDtype = "bf16",
                max_shard_size: Size | None = None, allow_copy: bool = False,
                config: str | Path | Config | ConfigSource | None = None) -> ConversionPlan:
    """Decide every output tensor of `upcast` and check the source; writes nothing.
    `config`: as `upcast`'s.

    Raises:
        CkptError: the first finding of the inventory that makes the output wrong (its code
            in brackets, as `ckpt validate` reports it), or scale values that are not
            finite and non-negative.
    """
    if dtype not in OUT_DTYPES:
        raise ArgumentError(f"dtype must be one of {sorted(OUT_DTYPES)}, found {dtype!r}")
    if max_shard_size is not None:
        max_shard_size = parse_size(max_shard_size, argument="max_shard_size")
    given = given_config(config)
    found = require(src, "upcast", config=given and given.config)
    if found.kind == "mp":
        raise model_parallel_refusal(found.root)
    with reader_of(found, given=given) as ck:
        ops, scales, block = _upcast_ops(ck, found, OUT_DTYPES[dtype])
        if not allow_copy and all(op.kind == "copy" for op in ops):
            raise copy_refusal(ck.dir, dtype)
        jobs, with_index = _group(ck, ops, block, max_shard_size)
        meta = dict(ck.index.metadata)
    return ConversionPlan(jobs, block, with_index, meta, scales)


def upcast(src: str | Path, dst: str | Path, *, dtype: UpcastDtype = "bf16",
           workers: int | None = None, max_shard_size: Size | None = None,
           overwrite: bool = False, allow_copy: bool = False,
           progress: Progress | None = None, executor: ExecutorName = "local",
           layout: str | None = None,
           config: str | Path | Config | None = None) -> UpcastReport:
    """Dequantise an FP8 checkpoint into a BF16 (or F32) one that loads as is.

    Every FP8 weight becomes dtype(float32(w) * scale_inv[i // bs, j // bs]), bit for bit
    DeepSeek's definition; scales are dropped; every other tensor is copied unchanged (with
    `dtype="f32"`, BF16/F16 tensors are widened to F32 as well). Shard names are kept
    unless `max_shard_size` (bytes) asks for new ones. Rerunning after an interruption
    resumes and produces the same bytes as an uninterrupted run.

    Args:
        src: FP8 checkpoint directory (config.json, index or model.safetensors).
        dst: output directory; must be empty, unless `overwrite` or it holds an unfinished
            run of the same job.
        dtype: "bf16" or "f32".
        workers: worker processes (default: the machine's cores, one below 1 GiB).
        max_shard_size: reshard greedily in tensor-plan order, at most this many bytes of
            tensor data per file (a larger tensor gets a file of its own); an int or a
            string such as "5GB" or "500MiB".
        overwrite: replace the contents of a non-empty `dst`.
        allow_copy: write the output even when nothing would change (a BF16 source with
            `dtype="bf16"`); refused by default, since it is usually the wrong source.
        progress: receives bytes written, chunk by chunk (also inside large tensors).
        executor: "local" (worker processes here) or "ray" (tasks on the Ray cluster at
            RAY_ADDRESS, else a local Ray; src and dst on storage every node sees).
        config: the model's config, for a source without config.json (a preset name, a
            config.json, a checkpoint directory or a parsed config); read instead of
            SRC/config.json, and written as DST's config.json (with the output's dtype).

    Raises:
        CkptError subclasses before anything is written (see `plan_upcast`), OutputError
        for an unusable `dst`.

    A family with names of its own (DeepSeek-V4) upcasts through its family's hook, where
    `layout` ("deepseek", the default, or "hf") picks the output names; the others only have
    transformers' names, so `layout="hf"` is what they write anyway (the report says so).
    """
    source = Source.open(src)  # the one place upcast resolves `src`
    given = given_config(config)
    family = family_given(checkpoint_dir(source), given, "upcast", "upcast")
    if family.has_hook("upcast"):
        if max_shard_size is not None:
            raise ArgumentError(f"{src}: a maximum shard size is not available for "
                                f"{family.title} upcast; reshard the output by size instead")
        return family.hook("upcast")(source, dst, dtype=dtype, layout=layout or "deepseek",
                                     workers=workers, overwrite=overwrite, progress=progress,
                                     executor=executor, allow_copy=allow_copy)
    if layout not in (None, "hf"):
        own = ", ".join(f.title for f in FAMILIES.values() if f.has_hook("upcast"))
        raise ArgumentError(f"{src}: layout {layout!r} applies to {own} (stored under "
                            f"DeepSeek's own names); {family.title} checkpoints already use "
                            f"transformers' names (the hf layout)")
    # asked for the hf layout: it is the one these checkpoints have, so the names stay
    notes = ([f"layout hf: {family.title} checkpoints already use transformers' names; the "
              f"output keeps them"] if layout == "hf" else [])
    t0 = time.monotonic()
    max_shard_size = None if max_shard_size is None else parse_size(max_shard_size,
                                                                     argument="max_shard_size")
    plan = plan_upcast(source, dtype=dtype, max_shard_size=max_shard_size,
                       allow_copy=allow_copy, config=given)
    out_dtype = OUT_DTYPES[dtype]
    ops = [op for j in plan.jobs for op in j.ops]
    count = {k: sum(op.kind == k for op in ops) for k in ("dequantize", "widen", "copy")}

    def report(resumed: int, side: list[str], _, nodes: list[NodeWork], job_id: str):
        return UpcastReport(
            source=str(src), destination=str(dst), dtype=dtype,
            files=[j.file for j in plan.jobs], tensors=len(ops), dequantized=count["dequantize"],
            widened=count["widen"], copied=count["copy"], scales_dropped=plan.scales_dropped,
            total_size=sum(math.prod(s) * itemsize(d) for _, (_, d, s) in plan.out_specs()),
            resumed_files=resumed, side_files=side, kept=kept_files(dst, side), job_id=job_id,
            seconds=round(time.monotonic() - t0, 3), nodes=nodes, notes=notes)

    with Checkpoint(source, given=given) as ck:
        config = _with_dtype(ck.raw_config, TORCH_DTYPES[out_dtype])
        config.pop("quantization_config", None)
        wrapper = ck.config.reading.wrapper_key  # a wrapper's language model may declare it
        if wrapper and isinstance(config.get(wrapper), dict):
            config[wrapper] = {k: v for k, v in config[wrapper].items()
                               if k != "quantization_config"}
        job = _job("upcast", ck, {"dtype": dtype, "max_shard_size": max_shard_size,
                                  **_config_option(given)})
        return _run(ck, dst, plan, job, report, workers=workers, executor=executor,
                    overwrite=overwrite, progress=progress, label="upcast", scale_fmt=None,
                    config=config)


def plan_quantize(src: str | Path | Source, *,
                  config: str | Path | Config | ConfigSource | None = None) -> ConversionPlan:
    """Decide every output tensor of `quantize` and check the source; writes nothing.
    `config`: as `quantize`'s."""
    given = given_config(config)
    found = require(src, "quantize", config=given and given.config)
    if found.kind == "mp":
        raise model_parallel_refusal(found.root)
    with reader_of(found, given=given) as ck:
        ops, block = _quantize_ops(found)
        jobs, with_index = _group(ck, ops, block, None)
        meta = dict(ck.index.metadata)
    return ConversionPlan(jobs, block, with_index, meta, 0)


def quantize(src: str | Path, dst: str | Path, *, scale_fmt: ScaleFmt | None = None,
             workers: int | None = None, overwrite: bool = False,
             progress: Progress | None = None, executor: ExecutorName = "local",
             expert_dtype: str | None = None,
             config: str | Path | Config | None = None) -> QuantizeReport:
    """Block-quantise a BF16/F32 checkpoint to DeepSeek's FP8 layout (e4m3, 128x128 scales).

    Exactly the tensors the tensor plan keeps in F8_E4M3 for this config are quantised
    (every linear weight except the router gate, embeddings, lm_head, norms and the MTP
    `eh_proj`), each followed by its F32 `weight_scale_inv` = amax / 448 per block (or the
    power of two at or above it with `scale_fmt="ue8m0"`); values beyond the range
    saturate. config.json gets `quantization_config`. The report gives, per tensor, the
    round-trip error of upcasting the result back to F32.

    A family with formats of its own (DeepSeek-V4: ue8m0 scales only; `expert_dtype` "fp4"
    or "fp8") quantizes through its family's hook.

    `config`: the model's config, for a source without config.json (a preset name, a
    config.json, a checkpoint directory or a parsed config); read instead of
    SRC/config.json, and written as DST's config.json (with `quantization_config`).

    Raises:
        CkptError subclasses before anything is written (see `plan_quantize`), OutputError
        for an unusable `dst`.
    """
    source = Source.open(src)  # the one place quantize resolves `src`
    given = given_config(config)
    family = family_given(checkpoint_dir(source), given, "quantize", "quantize")
    if family.has_hook("quantize"):
        if scale_fmt not in (None, "ue8m0"):
            raise ConfigError(f"{src}: {family.title} stores ue8m0 (E8M0) scales only")
        return family.hook("quantize")(source, dst, expert_dtype=expert_dtype or "fp4",
                                       workers=workers, overwrite=overwrite, progress=progress,
                                       executor=executor)
    if expert_dtype is not None:
        raise ArgumentError(f"{src}: expert_dtype applies to checkpoints whose routed experts "
                            f"have a format of their own (MXFP4); {family.title} has none")
    family.refuse_block_fp8(src)
    scale_fmt = scale_fmt or "float"
    t0 = time.monotonic()
    if scale_fmt not in ("float", "ue8m0"):
        raise ArgumentError(f"scale_fmt must be 'float' or 'ue8m0', found {scale_fmt!r}")
    plan = plan_quantize(source, config=given)
    ops = [op for j in plan.jobs for op in j.ops]
    no_rows = [0.0, 0.0, 0]  # a weight of no rows: no part wrote it, nothing to compare

    def report(resumed: int, side: list[str], errors: dict[str, list], nodes: list[NodeWork],
               job_id: str):
        per_tensor = [RoundTripError(name=op.name, max_abs_error=e[0], rel_l2_error=e[1],
                                     nonfinite=e[2])
                      for op in ops if op.kind == "quantize"
                      for e in [errors.get(op.name, no_rows)]]
        return QuantizeReport(
            source=str(src), destination=str(dst), scale_fmt=scale_fmt, block=plan.block,
            files=[j.file for j in plan.jobs],
            tensors=sum(len(op.out_specs(plan.block)) for op in ops), quantized=len(per_tensor),
            copied=sum(op.kind == "copy" for op in ops),
            total_size=sum(math.prod(s) * itemsize(d) for _, (_, d, s) in plan.out_specs()),
            resumed_files=resumed, side_files=side, kept=kept_files(dst, side), job_id=job_id,
            seconds=round(time.monotonic() - t0, 3), nodes=nodes,
            max_abs_error=max((e.max_abs_error for e in per_tensor), default=0.0),
            max_rel_l2_error=max((e.rel_l2_error for e in per_tensor), default=0.0),
            errors=per_tensor)

    with Checkpoint(source, given=given) as ck:
        qc = {**FP8_QUANTIZATION_CONFIG, "weight_block_size": list(plan.block)}
        if scale_fmt == "ue8m0":
            qc["scale_fmt"] = "ue8m0"
        config = {**ck.raw_config, "quantization_config": qc}
        job = _job("quantize", ck, {"scale_fmt": scale_fmt, **_config_option(given)})
        return _run(ck, dst, plan, job, report, workers=workers, executor=executor,
                    overwrite=overwrite, progress=progress, label="quantize",
                    scale_fmt=scale_fmt, config=config)


__all__ = ["upcast", "quantize", "plan_upcast", "plan_quantize", "UpcastReport",
           "QuantizeReport", "RoundTripError", "ConversionPlan", "TensorOp", "ShardJob"]
