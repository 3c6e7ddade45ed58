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
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from . import __version__, fp8, part_writer
from .checkpoint import Checkpoint
from .convert_jobs import (PART_BYTES, ShardJob, TensorOp, call, job_memory, split_file,
                           write_file, write_part)
from .dtypes import FP8_DTYPES, itemsize
from .errors import (ConfigError, FormatError, MissingTensorError, ShapeMismatchError,
                     UnexpectedTensorError)
from .index import INDEX_FILE, ShardIndex, shard_file_name, write_index, write_json_atomic
from .output import OutputDir, source_fingerprint
from .parallel import ExecutorName, Job, NodeWork, run_jobs, workers_for
from .progress import Progress
from .side_files import copy_side_files
from .sources import CONFIG_FILE
from .tensor_plan import SCALE_SUFFIX, TensorPlan

UpcastDtype = Literal["bf16", "f32"]
ScaleFmt = Literal["float", "ue8m0"]
OUT_DTYPES = {"bf16": "BF16", "f32": "F32"}
TORCH_DTYPES = {"BF16": "bfloat16", "F32": "float32"}
WIDENABLE = ("BF16", "F16")  # exact in float32: widened by upcast --dtype f32
QUANTIZABLE = ("BF16", "F16", "F32")
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


# -- reports ------------------------------------------------------------------------------
class RoundTripError(BaseModel):
    """How far FP8 -> float32 lands from the source values of one quantised tensor."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    max_abs_error: float = Field(
        description="max |upcast_f32(quantised) - source| over finite values")
    rel_l2_error: float = Field(description="||upcast_f32(quantised) - source|| / ||source||")
    nonfinite: int = Field(0, description="NaN/inf source values (NaN kept, inf saturated), "
                                          "left out of both statistics")


class _WrittenCheckpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str
    destination: str
    files: list[str] = Field(description="Output shard files, in order")
    total_size: int = Field(description="Bytes of tensor data (the index's total_size)")
    resumed_files: int = Field(description="Shards an interrupted run had finished (kept)")
    side_files: list[str]
    seconds: float
    nodes: list[NodeWork] = Field(
        default_factory=list, description="Per machine: the shards it wrote, bytes read, "
                                          "seconds (Ray nodes with --executor ray)")


class UpcastReport(_WrittenCheckpoint):
    dtype: UpcastDtype
    tensors: int = Field(description="Tensors in the output")
    dequantized: int = Field(description="FP8 weights dequantised with their scales")
    widened: int = Field(description="BF16/F16 tensors widened to F32 (--dtype f32)")
    copied: int = Field(description="Tensors copied byte for byte")
    scales_dropped: int


class QuantizeReport(_WrittenCheckpoint):
    scale_fmt: ScaleFmt
    block: tuple[int, int]
    tensors: int = Field(description="Tensors in the output, scales included")
    quantized: int = Field(description="Weights quantised to F8_E4M3 (each with a scale)")
    copied: int = Field(description="Tensors copied byte for byte")
    max_abs_error: float = Field(description="Largest max_abs_error over all tensors")
    max_rel_l2_error: float = Field(description="Largest rel_l2_error over all tensors")
    errors: list[RoundTripError] = Field(description="Per quantised tensor, in output order")


# -- planning -----------------------------------------------------------------------------
def _source_tensors(ck: Checkpoint) -> list[tuple[str, Any]]:
    """(shard, entry) of every tensor in shard-then-offset order; index and files must agree."""
    weight_map = ck.index.weight_map
    out = []
    for shard in ck.shard_names:
        if Path(shard).name != shard:
            raise FormatError(f"{ck.dir}: shard '{shard}' is not a plain file name")
        header = ck.header(shard)
        for name, entry in header.entries.items():
            where = weight_map.get(name)
            if where != shard:
                listed = "does not list it" if where is None else f"maps it to {where}"
                raise FormatError(f"{header.path}: tensor '{name}' is in this file but the index "
                                  f"{listed}")
            out.append((shard, entry))
    if len(out) != len(weight_map):
        for name in weight_map:
            ck.locate(name)  # raises naming the indexed tensor absent from its file
    return out


def _check_scale(ck: Checkpoint, name: str, scale: str, shape, block) -> str:
    """The shard of `scale` after checking it is an F32 grid of finite, non-negative values."""
    if scale not in ck:
        raise MissingTensorError(f"{ck.dir}: FP8 tensor '{name}' has no '{scale}' in the index")
    scale_shard, entry = ck.locate(scale)
    want = fp8.expected_scale_shape(shape, block)
    if entry.dtype != "F32" or entry.shape != want:
        raise ShapeMismatchError(f"{ck.shard_path(scale_shard)}: tensor '{scale}': expected F32 "
                                 f"{list(want)} for weight {list(shape)}, found {entry.dtype} "
                                 f"{list(entry.shape)}")
    values = ck.read(scale).reshape(-1)
    ok = np.isfinite(values) & (values >= 0)
    if not ok.all():
        raise FormatError(f"{ck.shard_path(scale_shard)}: tensor '{scale}': scales must be finite "
                          f"and non-negative, found {values[~ok][0]}")
    return scale_shard


def _upcast_ops(ck: Checkpoint, out_dtype: str) -> tuple[list[TensorOp], int, tuple[int, int]]:
    plan = TensorPlan(ck.config, "fp8")
    ops, scales = [], 0
    for shard, e in _source_tensors(ck):
        spec = plan.get(e.name)
        where = ck.shard_path(shard)
        if e.dtype in FP8_DTYPES:
            if spec is None or spec.dtype != e.dtype:
                expected = "no such tensor" if spec is None else f"it as {spec.dtype}"
                raise UnexpectedTensorError(f"{where}: tensor '{e.name}' is {e.dtype} but the "
                                            f"tensor plan of this config has {expected}")
            if e.shape != spec.shape:
                raise ShapeMismatchError(f"{where}: tensor '{e.name}': expected shape "
                                         f"{list(spec.shape)}, found {list(e.shape)}")
            scale_shard = _check_scale(ck, e.name, spec.scale_name, e.shape, plan.block)
            ops.append(TensorOp(e.name, "dequantize", shard, e.dtype, out_dtype, e.shape,
                                spec.scale_name, scale_shard))
        elif (spec is not None and spec.scale_of) or e.name.endswith(SCALE_SUFFIX):
            weight = spec.scale_of if spec is not None else None
            if weight is None or weight not in ck or ck.locate(weight)[1].dtype not in FP8_DTYPES:
                raise UnexpectedTensorError(f"{where}: tensor '{e.name}' is a scale without an "
                                            f"FP8 weight to apply it to")
            scales += 1  # applied to its weight, not written
        elif out_dtype == "F32" and e.dtype in WIDENABLE:
            ops.append(TensorOp(e.name, "widen", shard, e.dtype, "F32", e.shape))
        else:
            ops.append(TensorOp(e.name, "copy", shard, e.dtype, e.dtype, e.shape))
    return ops, scales, plan.block


def _quantize_ops(ck: Checkpoint) -> tuple[list[TensorOp], tuple[int, int]]:
    plan = TensorPlan(ck.config, "fp8")
    ops = []
    for shard, e in _source_tensors(ck):
        spec = plan.get(e.name)
        where = ck.shard_path(shard)
        if e.dtype in FP8_DTYPES or e.name.endswith(SCALE_SUFFIX):
            raise UnexpectedTensorError(f"{where}: tensor '{e.name}' ({e.dtype}) is already "
                                        f"quantised; quantize takes a BF16/F16/F32 checkpoint")
        if spec is not None and spec.dtype == "F8_E4M3":
            if e.dtype not in QUANTIZABLE or e.shape != spec.shape:
                raise ShapeMismatchError(f"{where}: tensor '{e.name}': expected a float tensor "
                                         f"of shape {list(spec.shape)}, found {e.dtype} "
                                         f"{list(e.shape)}")
            ops.append(TensorOp(e.name, "quantize", shard, e.dtype, "F8_E4M3", e.shape,
                                spec.scale_name))
        else:
            ops.append(TensorOp(e.name, "copy", shard, e.dtype, e.dtype, e.shape))
    return ops, plan.block


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
    groups: list[list[TensorOp]] = []
    size = 0
    for _, op in ranked:
        nbytes = sum(math.prod(s) * itemsize(d) for _, d, s in op.out_specs(block))
        if not groups or (size + nbytes > max_shard_size and groups[-1]):
            groups.append([])
            size = 0
        groups[-1].append(op)
        size += nbytes
    n = len(groups)
    return [ShardJob(shard_file_name(i, n), tuple(g)) for i, g in enumerate(groups, 1)], n > 1


# -- running ------------------------------------------------------------------------------
class FileWork(NamedTuple):
    """The jobs that write one output file: one whole-file job (`specs` None), or parts
    writing byte ranges of a file `part_writer` creates from `specs` up front."""

    file: str
    jobs: list[Job]
    specs: list[tuple[str, str, tuple[int, ...]]] | None = None


def write_files(out: OutputDir, works: list[FileWork], *, workers: int | None,
                executor: ExecutorName, progress: Progress | None, label: str
                ) -> tuple[dict[str, list], list[NodeWork]]:
    """Run the jobs writing `works`, journaling each file as it completes (a whole-file
    job's result is journaled with it and merged into the returned dict); where the jobs
    ran. On failure no `.partial` of a file written in parts stays behind (whole-file
    writers remove their own)."""
    args, files, errors = [], [], {}
    unfinished: dict[str, int] = {}  # file written in parts -> parts still to write
    try:
        for w in works:
            if w.specs is None:
                args += w.jobs
                files += [w.file] * len(w.jobs)
                continue
            part_writer.create(out.path / w.file, w.specs)
            unfinished[w.file] = len(w.jobs)
            args += w.jobs
            files += [w.file] * len(w.jobs)
            if not w.jobs:  # no tensor data: complete as created
                del unfinished[w.file]
                part_writer.commit(out.path / w.file)
                out.mark_done(w.file)

        def finished(i: int, result: dict[str, list]) -> None:
            file = files[i]
            parts = file in unfinished
            if parts:  # a part: the file is complete with its last part
                unfinished[file] -= 1
                if unfinished[file]:
                    return
                del unfinished[file]
                part_writer.commit(out.path / file)
            out.mark_done(file, None if parts else result)
            errors.update(result)

        nbytes = sum(a.nbytes for a in args)
        ran = run_jobs(call, args, workers=workers_for(nbytes, workers), executor=executor,
                       progress=progress, label=label, on_result=finished)
    except BaseException:
        for file in unfinished:
            part_writer.discard(out.path / file)
        raise
    return errors, ran.nodes


def _write_shards(out: OutputDir, src: str, plan: ConversionPlan, todo: list[ShardJob], *,
                  scale_fmt: str | None, workers: int | None, executor: ExecutorName,
                  progress: Progress | None, label: str
                  ) -> tuple[dict[str, list], list[NodeWork]]:
    """Upcast writes each shard in parts, quantize each with one job (its round-trip errors
    per tensor come back); see `write_files`."""
    dst = str(out.path)
    works = []
    for j in todo:
        memory = job_memory(j, plan.block)
        if scale_fmt is not None:  # quantize: one job per file
            works.append(FileWork(j.file, [Job(j.file, sum(op.src_bytes for op in j.ops),
                                               (write_file, src, dst, j, plan.block, scale_fmt),
                                               memory)]))
            continue
        works.append(FileWork(
            j.file, [Job(j.file, sum(p.src_bytes for p in pieces),
                         (write_part, src, dst, j.file, pieces, plan.block), memory)
                     for pieces in split_file(j, plan.block, PART_BYTES)],
            [s for op in j.ops for s in op.out_specs(plan.block)]))
    return write_files(out, works, workers=workers, executor=executor, progress=progress,
                       label=label)


def _run(ck: Checkpoint, dst: Path, plan: ConversionPlan, job: dict, *, workers: int | None,
         executor: ExecutorName, overwrite: bool, progress: Progress | None, label: str,
         scale_fmt: str | None, config: dict
         ) -> tuple[int, list[str], dict[str, list], list[NodeWork]]:
    """Write every shard (skipping journaled ones), then index, config and side files."""
    src = ck.dir
    with OutputDir(dst, sources=[src], overwrite=overwrite, job=job) as out:
        todo, errors = [], {}
        for j in plan.jobs:
            done = out.is_done(j.file)
            info = out.done_info(j.file) if done else None
            if not done or (scale_fmt is not None and info is None):  # quantize needs its stats
                todo.append(j)
            else:
                errors.update(info or {})
        found, nodes = _write_shards(out, str(src), plan, todo, scale_fmt=scale_fmt,
                                     workers=workers, executor=executor, progress=progress,
                                     label=label)
        errors.update(found)
        weight_map, total = {}, 0
        for file, (name, dtype, shape) in plan.out_specs():
            weight_map[name] = file
            total += math.prod(shape) * itemsize(dtype)
        if plan.write_index:
            write_index(out.path / INDEX_FILE, ShardIndex(weight_map, total, plan.index_metadata))
        write_json_atomic(out.path / CONFIG_FILE, config)
        side = copy_side_files(src, out.path)
    return len(plan.jobs) - len(todo), side, errors, nodes


def _job(command: str, ck: Checkpoint, options: dict) -> dict:
    """The journal's identity of a run: a rerun resumes only when all of it matches."""
    files = [ck.shard_path(s) for s in ck.shard_names] + [ck.config_path]
    if ck.index_path is not None:
        files.append(ck.index_path)
    return {"command": command, "version": __version__, "options": options,
            "sources": source_fingerprint(files)}


def _with_dtype(raw: dict, dtype: str) -> dict:
    """`raw` with its dtype key set (transformers v5 writes `dtype`, older ones `torch_dtype`)."""
    out = dict(raw)
    keys = [k for k in ("torch_dtype", "dtype") if k in out] or ["torch_dtype"]
    for k in keys:
        out[k] = dtype
    return out


def plan_upcast(src: str | Path, *, dtype: UpcastDtype = "bf16",
                max_shard_size: int | None = None) -> ConversionPlan:
    """Decide every output tensor of `upcast` and check the source; writes nothing.

    Raises:
        MissingTensorError, ShapeMismatchError, UnexpectedTensorError, FormatError: naming
            the first tensor (or file) that makes the conversion impossible.
    """
    if dtype not in OUT_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(OUT_DTYPES)}, found {dtype!r}")
    with Checkpoint(src) as ck:
        ops, scales, block = _upcast_ops(ck, OUT_DTYPES[dtype])
        jobs, with_index = _group(ck, ops, block, max_shard_size)
        meta = dict(ck.index.metadata)
    return ConversionPlan(jobs, block, with_index, meta, scales)


def _is_v4(src: str | Path) -> bool:
    with Checkpoint(src) as ck:
        return ck.raw_config.get("model_type") == "deepseek_v4"


def upcast(src: str | Path, dst: str | Path, *, dtype: UpcastDtype = "bf16",
           workers: int | None = None, max_shard_size: int | None = None,
           overwrite: bool = False, progress: Progress | None = None,
           executor: ExecutorName = "local", layout: str | None = None) -> UpcastReport:
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
            tensor data per file (a larger tensor gets a file of its own).
        overwrite: replace the contents of a non-empty `dst`.
        progress: receives bytes read as shards finish.
        executor: "local" (worker processes here) or "ray" (tasks on the Ray cluster at
            RAY_ADDRESS, else a local Ray; src and dst on storage every node sees).

    Raises:
        CkptError subclasses before anything is written (see `plan_upcast`), OutputError
        for an unusable `dst`.

    DeepSeek-V4 sources go to `convert_v4.upcast_v4`, where `layout` ("deepseek", the
    default, or "hf") picks the output names; V2/V3 checkpoints only have HF names.
    """
    if _is_v4(src):
        from .convert_v4 import upcast_v4

        if max_shard_size is not None:
            raise ConfigError(f"{src}: --max-shard-size is not available for DeepSeek-V4 upcast; "
                              f"run `ckpt reshard` on the output")
        return upcast_v4(src, dst, dtype=dtype, layout=layout or "deepseek", workers=workers,
                         overwrite=overwrite, progress=progress, executor=executor)
    if layout not in (None, "hf"):
        raise ConfigError(f"{src}: --layout {layout} applies to DeepSeek-V4; V2/V3 checkpoints "
                          f"already use transformers' names")
    t0 = time.monotonic()
    plan = plan_upcast(src, dtype=dtype, max_shard_size=max_shard_size)
    out_dtype = OUT_DTYPES[dtype]
    with Checkpoint(src) as ck:
        config = _with_dtype(ck.raw_config, TORCH_DTYPES[out_dtype])
        config.pop("quantization_config", None)
        wrapper = ck.config.reading.wrapper_key  # a wrapper's language model may declare it
        if wrapper and isinstance(config.get(wrapper), dict):
            config[wrapper] = {k: v for k, v in config[wrapper].items()
                               if k != "quantization_config"}
        job = _job("upcast", ck, {"dtype": dtype, "max_shard_size": max_shard_size})
        resumed, side, _, nodes = _run(ck, Path(dst), plan, job, workers=workers,
                                       executor=executor, overwrite=overwrite, progress=progress,
                                       label="upcast", scale_fmt=None, config=config)
    ops = [op for j in plan.jobs for op in j.ops]
    count = {k: sum(op.kind == k for op in ops) for k in ("dequantize", "widen", "copy")}
    return UpcastReport(
        source=str(src), destination=str(dst), dtype=dtype, files=[j.file for j in plan.jobs],
        tensors=len(ops), dequantized=count["dequantize"], widened=count["widen"],
        copied=count["copy"], scales_dropped=plan.scales_dropped,
        total_size=sum(math.prod(s) * itemsize(d) for _, (_, d, s) in plan.out_specs()),
        resumed_files=resumed, side_files=side, seconds=round(time.monotonic() - t0, 3),
        nodes=nodes)


def plan_quantize(src: str | Path) -> ConversionPlan:
    """Decide every output tensor of `quantize` and check the source; writes nothing."""
    with Checkpoint(src) as ck:
        ops, block = _quantize_ops(ck)
        jobs, with_index = _group(ck, ops, block, None)
        meta = dict(ck.index.metadata)
    return ConversionPlan(jobs, block, with_index, meta, 0)


def quantize(src: str | Path, dst: str | Path, *, scale_fmt: ScaleFmt | None = None,
             workers: int | None = None, overwrite: bool = False,
             progress: Progress | None = None, executor: ExecutorName = "local",
             expert_dtype: str | None = None) -> QuantizeReport:
    """Block-quantise a BF16/F32 checkpoint to DeepSeek's FP8 layout (e4m3, 128x128 scales).

    Exactly the tensors the tensor plan keeps in F8_E4M3 for this config are quantised
    (every linear weight except the router gate, embeddings, lm_head, norms and the MTP
    `eh_proj`), each followed by its F32 `weight_scale_inv` = amax / 448 per block (or the
    power of two at or above it with `scale_fmt="ue8m0"`); values beyond the range
    saturate. config.json gets `quantization_config`. The report gives, per tensor, the
    round-trip error of upcasting the result back to F32.

    DeepSeek-V4 sources go to `convert_v4.quantize_v4` (ue8m0 scales only; `expert_dtype`
    "fp4" or "fp8").

    Raises:
        CkptError subclasses before anything is written (see `plan_quantize`), OutputError
        for an unusable `dst`.
    """
    if _is_v4(src):
        from .convert_v4 import quantize_v4

        if scale_fmt not in (None, "ue8m0"):
            raise ConfigError(f"{src}: DeepSeek-V4 stores ue8m0 (E8M0) scales only")
        return quantize_v4(src, dst, expert_dtype=expert_dtype or "fp4", workers=workers,
                           overwrite=overwrite, progress=progress, executor=executor)
    if expert_dtype is not None:
        raise ConfigError(f"{src}: --expert-dtype applies to DeepSeek-V4 checkpoints only")
    scale_fmt = scale_fmt or "float"
    t0 = time.monotonic()
    if scale_fmt not in ("float", "ue8m0"):
        raise ValueError(f"scale_fmt must be 'float' or 'ue8m0', found {scale_fmt!r}")
    plan = plan_quantize(src)
    with Checkpoint(src) as ck:
        qc = {**fp8.FP8_QUANTIZATION_CONFIG, "weight_block_size": list(plan.block)}
        if scale_fmt == "ue8m0":
            qc["scale_fmt"] = "ue8m0"
        config = {**ck.raw_config, "quantization_config": qc}
        job = _job("quantize", ck, {"scale_fmt": scale_fmt})
        resumed, side, errors, nodes = _run(ck, Path(dst), plan, job, workers=workers,
                                            executor=executor, overwrite=overwrite,
                                            progress=progress, label="quantize",
                                            scale_fmt=scale_fmt, config=config)
    ops = [op for j in plan.jobs for op in j.ops]
    per_tensor = [RoundTripError(name=op.name, max_abs_error=errors[op.name][0],
                                 rel_l2_error=errors[op.name][1], nonfinite=errors[op.name][2])
                  for op in ops if op.kind == "quantize"]
    return QuantizeReport(
        source=str(src), destination=str(dst), scale_fmt=scale_fmt, block=plan.block,
        files=[j.file for j in plan.jobs], tensors=sum(len(op.out_specs(plan.block)) for op in ops),
        quantized=len(per_tensor), copied=sum(op.kind == "copy" for op in ops),
        total_size=sum(math.prod(s) * itemsize(d) for _, (_, d, s) in plan.out_specs()),
        resumed_files=resumed, side_files=side, seconds=round(time.monotonic() - t0, 3),
        nodes=nodes, max_abs_error=max((e.max_abs_error for e in per_tensor), default=0.0),
        max_rel_l2_error=max((e.rel_l2_error for e in per_tensor), default=0.0),
        errors=per_tensor)


__all__ = ["upcast", "quantize", "plan_upcast", "plan_quantize", "UpcastReport",
           "QuantizeReport", "RoundTripError", "ConversionPlan", "TensorOp", "ShardJob"]
