"""`ckpt upcast` and `ckpt quantize` for DeepSeek-V4 (FP8 + E8M0 blocks, MXFP4 experts).

upcast: every F8_E4M3 weight and every I8-packed MXFP4 expert is dequantised with its
`.scale` into BF16 (or F32) by the definitions in `formats` (bit for bit), scales are
dropped, everything else is copied (widened with `dtype="f32"`). Two layouts:
- "deepseek": the same names as the source (DeepSeek's own `inference/` code reads them);
- "hf": transformers' `DeepseekV4ForCausalLM` names (families.deepseek_v4), routed experts stacked
  per layer into `gate_up_proj` [E, 2I, D] and `down_proj` [E, D, I], `tid2eid` kept, MTP
  tensors kept under DeepSeek's names (transformers ignores them on load).
quantize: a "deepseek"-layout BF16/F32 checkpoint back to V4's format (dense linears FP8
with ue8m0 scales, experts MXFP4, or FP8 with `expert_dtype="fp8"`), with the round-trip
error per tensor; on an FP4 checkpoint, `expert_dtype="fp8"` re-packs the experts into FP8
128-blocks losslessly as DeepSeek's converter does (everything else is copied).

Same discipline as convert.py: every source header and scale pairing is checked against
the V4 tensor plan before anything is written; one job per output shard in worker
processes, each streaming a few row blocks at a time; finished shards are journaled and a
rerun resumes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from pydantic import Field

from ...io import part_writer
from ...inventory.checkpoint import Checkpoint
from ...commands.convert_jobs import PART_BYTES, STEP_BYTES, STEP_MEMORY, job_source
from ...commands.convert_output import (
    FileWork,
    QuantizeReport,
    RoundTripError,
    UpcastReport,
    _job,
    _with_dtype,
    copy_refusal,
    run_conversion,
)
from ...io.dtypes import DTYPES, itemsize
from ...formats import E8M0_NAN, FP8_BLOCK, FP8_QUANTIZATION_CONFIG, mp_scale_name
from ...formats import mxfp4 as mx
from ...formats.round_trip import RoundTripStats
from ...errors import ARGUMENT_PLACEHOLDER, ArgumentError, FormatError, UnexpectedTensorError
from ...inventory.inspect import require
from ...execution.parallel import WORKER_MEMORY, ExecutorName
from ...execution.parallel import Job as ParallelJob
from ...inventory.policy import Command
from ...execution.progress import Progress
from ...io.reader_pool import ReaderPool
from ...remote.output import kept_files
from ...io.safetensors_io import SafetensorsReader, SafetensorsWriter
from ...io.source import Source
from . import expert_of, hf_name, stacked_names
from .tensor_plan import V4TensorPlan
from .checks import detect_layout, largest_finite_scale_byte

V4Layout = Literal["deepseek", "hf"]
OUT_DTYPES = {"bf16": "BF16", "f32": "F32"}
TORCH_DTYPES = {"BF16": "bfloat16", "F32": "float32"}
FLOATS = ("BF16", "F16", "F32")
# what a part does to its source: copy bytes, widen to F32, dequantise, quantise, re-pack
PartKind = Literal["copy", "widen", "fp8", "fp4", "to_fp8", "to_fp4", "repack"]
QUANTIZING = ("to_fp8", "to_fp4", "repack")
JOB_MEMORY = WORKER_MEMORY + STEP_MEMORY  # one streaming step's temporaries at a time


class Part(NamedTuple):
    """One source tensor's contribution to an output tensor."""

    name: str
    shard: str
    dtype: str  # stored dtype
    shape: tuple[int, ...]  # stored shape
    kind: PartKind
    scale: str | None = None  # fp8 / fp4 / repack: the source scale
    scale_shard: str | None = None

    @property
    def src_bytes(self) -> int:
        return math.prod(self.shape) * itemsize(self.dtype)


class OutTensor(NamedTuple):
    name: str
    dtype: str
    shape: tuple[int, ...]
    parts: tuple[Part, ...]  # concatenated in order (stacked experts: several)
    scale: str | None = None  # quantize: the scale written right after it
    scale_shape: tuple[int, ...] | None = None

    def specs(self) -> list[tuple[str, str, tuple[int, ...]]]:
        out = [(self.name, self.dtype, self.shape)]
        if self.scale:
            out.append((self.scale, "F8_E8M0", self.scale_shape))
        return out


class Job(NamedTuple):
    file: str
    tensors: tuple[OutTensor, ...]


class V4UpcastReport(UpcastReport):
    layout: V4Layout = Field(description="deepseek: source names; hf: transformers' names")
    fp4_dequantized: int = Field(description="MXFP4 expert weights among the dequantised")
    experts_stacked: int = Field(description="hf layout: gate_up_proj/down_proj tensors written")


class V4QuantizeReport(QuantizeReport):
    expert_dtype: Literal["fp4", "fp8"]
    quantized_fp4: int = Field(description="Expert weights quantised to MXFP4 (I8 + E8M0)")
    repacked: int = Field(description="MXFP4 experts re-packed into FP8 128-blocks (lossless)")


# -- planning -----------------------------------------------------------------------------
def _checked_source(ck: Checkpoint, command: Command) -> tuple[dict, str, str | None]:
    """{name: (shard, entry)}, layout, expert format of a source the inventory lets
    `command` through (pairing, the V4 plan, hash tables: as `ckpt validate` judges it)."""
    found = require(ck.source, command)  # its headers, read once for the run
    inv = found.inventory
    entries = {n: (inv.shard_of[n], e) for n, e in inv.entries.items()}
    layout, experts = detect_layout(inv.entries)
    return entries, layout, experts


def _upcast_part(name, shard, e, out_dtype: str) -> tuple[Part, str, tuple[int, ...]]:
    """(part, output dtype, output shape) of one non-scale source tensor."""
    scale = mp_scale_name(name)
    if e.dtype == "F8_E4M3":
        return Part(name, shard, e.dtype, e.shape, "fp8", scale), out_dtype, e.shape
    if e.dtype == "I8":
        return (Part(name, shard, e.dtype, e.shape, "fp4", scale), out_dtype,
                (e.shape[0], 2 * e.shape[1]))
    if out_dtype == "F32" and e.dtype in ("BF16", "F16"):
        return Part(name, shard, e.dtype, e.shape, "widen"), "F32", e.shape
    return Part(name, shard, e.dtype, e.shape, "copy"), e.dtype, e.shape


def plan_upcast_v4(ck: Checkpoint, out_dtype: str, layout: V4Layout) -> tuple[list[Job], int]:
    """Output shards (the source's names) and the number of scales dropped."""
    entries, source_layout, _ = _checked_source(ck, "upcast")
    if source_layout == "hf":
        raise UnexpectedTensorError(
            f"{ck.dir}: already upcast, under transformers' names with stacked experts (the hf "
            f"layout): nothing to dequantise")
    scales = {n for n, (_, e) in entries.items() if e.dtype == "F8_E8M0"}
    by_shard: dict[str, list[OutTensor]] = {s: [] for s in ck.shard_names}
    stacks: dict[tuple[int, str], list] = {}  # (layer, "gate_up"/"down") -> [shard, parts, dtype]
    for name, (shard, e) in entries.items():
        if name in scales:
            continue
        part, dtype, shape = _upcast_part(name, shard, e, out_dtype)
        if part.scale:
            part = part._replace(scale_shard=entries[part.scale][0])
        if layout == "deepseek":
            by_shard[shard].append(OutTensor(name, dtype, shape, (part,)))
            continue
        expert = expert_of(name)
        if expert is None:
            target = hf_name(name) or name  # MTP keeps DeepSeek's names
            by_shard[shard].append(OutTensor(target, dtype, shape, (part,)))
            continue
        layer, index, which = expert
        key = (layer, "down" if which == "w2" else "gate_up")
        stacks.setdefault(key, [shard, {}, dtype, shape])[1][(index, which)] = part
    for (layer, kind), (shard, parts, dtype, shape) in sorted(stacks.items()):
        n = max(i for i, _ in parts) + 1
        order = ["w2"] if kind == "down" else ["w1", "w3"]
        rows = shape[0] * len(order)
        gate_up, down = stacked_names(layer)
        first = parts[(0, order[0])].shard
        by_shard[first].append(OutTensor(down if kind == "down" else gate_up, dtype,
                                         (n, rows, shape[1]),
                                         tuple(parts[(i, w)] for i in range(n) for w in order)))
    jobs = [Job(s, tuple(t)) for s, t in by_shard.items() if t]
    return jobs, len(scales)


def plan_quantize_v4(ck: Checkpoint, expert_dtype: str) -> list[Job]:
    """Quantise a BF16/F32 V4 checkpoint, or re-pack an FP4 one's experts to FP8."""
    entries, layout, experts = _checked_source(ck, "quantize")
    if layout == "hf":
        raise UnexpectedTensorError(
            f"{ck.dir}: holds transformers' names with stacked experts (an upcast to the hf "
            f"layout); quantize reads DeepSeek's names: quantize an upcast in the deepseek "
            f"layout, or the original checkpoint")
    if layout == "fp8" and not (experts == "fp4" and expert_dtype == "fp8"):
        raise UnexpectedTensorError(f"{ck.dir}: already in V4's quantized format (experts "
                                    f"{experts}); quantize takes BF16/F32 DeepSeek names, or "
                                    f"re-packs FP4 experts with {ARGUMENT_PLACEHOLDER}",
                                    argument="expert_dtype", value="fp8")
    target = V4TensorPlan(ck.config, "fp8", expert_dtype=expert_dtype)
    by_shard: dict[str, list[OutTensor]] = {s: [] for s in ck.shard_names}
    for spec in target.specs:
        if spec.scale_of:
            continue
        shard, e = entries[spec.name]
        if spec.scale_name is None or (e.dtype == spec.dtype and e.shape == spec.shape):
            out = [OutTensor(spec.name, e.dtype, e.shape,
                             (Part(spec.name, shard, e.dtype, e.shape, "copy"),))]
            if spec.scale_name:  # an FP8 dense weight kept while re-packing experts
                s_shard, s = entries[spec.scale_name]
                out.append(OutTensor(spec.scale_name, s.dtype, s.shape,
                                     (Part(spec.scale_name, s_shard, s.dtype, s.shape, "copy"),)))
            by_shard[shard].extend(out)
            continue
        sshape = target.by_name[spec.scale_name].shape
        if e.dtype == "I8":
            scale = mp_scale_name(spec.name)
            part = Part(spec.name, shard, e.dtype, e.shape, "repack", scale, entries[scale][0])
        else:
            part = Part(spec.name, shard, e.dtype, e.shape,
                        "to_fp4" if spec.dtype == "I8" else "to_fp8")
        by_shard[shard].append(OutTensor(spec.name, spec.dtype, spec.shape, (part,),
                                         spec.scale_name, sshape))
    return [Job(s, tuple(t)) for s, t in by_shard.items() if t]


# -- the worker ---------------------------------------------------------------------------
def _steps(rows: int, row_bytes: int, align: int) -> Iterator[tuple[int, int]]:
    step = max(1, STEP_BYTES // max(row_bytes, 1) // align) * align
    for r0 in range(0, rows, step):
        yield r0, min(rows, r0 + step)


def _bytes(a: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(a).reshape(-1).view(np.uint8))


def _part_bytes(reader, scale_reader, p: Part, out_dtype) -> Iterator[memoryview]:
    if p.kind == "copy":
        yield from reader.iter_chunks(p.name)
        return
    rows = p.shape[0] if p.shape else 1
    row_bytes = math.prod(p.shape[1:]) * itemsize(p.dtype)
    if p.kind == "widen":
        for r0, r1 in _steps(rows, row_bytes, 1):
            yield _bytes(reader.read_rows(p.name, r0, r1).astype(np.float32))
        return
    block = FP8_BLOCK[0] if p.kind == "fp8" else 1
    scale = scale_reader.read_rows(p.scale, 0, scale_reader.entry(p.scale).shape[0])
    nan = int(np.count_nonzero(scale.view(np.uint8) == E8M0_NAN))
    if nan:  # the definition would give NaN weights; a broken checkpoint, not a conversion
        raise FormatError(f"{scale_reader.path}: tensor '{p.scale}': {nan} E8M0 scales are NaN "
                          f"(byte 255); `ckpt validate --deep` lists every defect")
    limit = largest_finite_scale_byte("F8_E4M3" if p.kind == "fp8" else "I8")
    top = int(scale.view(np.uint8).max(initial=0))
    if top > limit:  # the product overflows: Inf weights, silently
        raise FormatError(f"{scale_reader.path}: tensor '{p.scale}': E8M0 scale byte {top} "
                          f"(2^{top - 127}) makes '{p.name}' overflow to Inf (at most byte "
                          f"{limit} keeps it finite) [e8m0-overflow]; `ckpt validate --deep` "
                          f"lists every defect")
    for r0, r1 in _steps(rows, row_bytes, block):
        w = reader.read_rows(p.name, r0, r1)
        if p.kind == "fp8":
            yield _bytes(mx.dequantize_fp8(w, scale[r0 // block: -(-r1 // block)], out_dtype))
        else:
            yield _bytes(mx.dequantize_fp4(w, scale[r0:r1], out_dtype, name=p.name))


def _quantized_bytes(reader, scale_reader, p: Part, scales: list, stats: RoundTripStats
                     ) -> Iterator[memoryview]:
    rows = p.shape[0]
    row_bytes = p.shape[1] * itemsize(p.dtype)
    align = 1 if p.kind == "to_fp4" else FP8_BLOCK[0]
    src_scale = (scale_reader.read_rows(p.scale, 0, rows) if p.kind == "repack" else None)
    for r0, r1 in _steps(rows, row_bytes, align):
        w = reader.read_rows(p.name, r0, r1)
        if p.kind == "repack":
            q, s = mx.fp4_to_fp8(w, src_scale[r0:r1])
            stats.add(mx.dequantize_fp4(w, src_scale[r0:r1]), mx.dequantize_fp8(q, s))
        elif p.kind == "to_fp4":
            q, s = mx.quantize_fp4(w, errors=stats)
        else:
            q, s = mx.quantize_fp8(w, errors=stats)
        scales.append(s)
        yield _bytes(q)


def _write_job(src: Source, dst: str, job: Job, out_dtype: str) -> dict[str, list]:
    """Write one whole output file: every quantize file, and upcast's for an object-store
    destination (staged and uploaded whole); quantize's round-trip errors per tensor. `src`
    carries the headers of what the job reads (`convert_jobs.job_source`)."""
    errors: dict[str, list] = {}
    dtype = DTYPES[out_dtype].numpy if out_dtype else None
    with ReaderPool(src) as readers:
        def reader(shard: str | None) -> SafetensorsReader | None:
            return None if shard is None else readers(shard)

        with SafetensorsWriter(Path(dst) / job.file,
                               [s for t in job.tensors for s in t.specs()]) as w:
            for t in job.tensors:
                if t.scale is None:
                    w.write_bytes(t.name, chain.from_iterable(
                        _part_bytes(reader(p.shard), reader(p.scale_shard), p, dtype)
                        for p in t.parts))
                    continue
                p, scales, stats = t.parts[0], [], RoundTripStats()
                w.write_bytes(t.name, _quantized_bytes(reader(p.shard), reader(p.scale_shard), p,
                                                       scales, stats))
                w.write(t.scale, np.concatenate(scales))
                errors[t.name] = stats.result()
    return errors


def _write_part(src: Source, dst: str, file: str, tensors: list[tuple[OutTensor, int]],
                out_dtype: str) -> dict:
    """Write whole output tensors at their offsets of DST/file.partial (an upcast part)."""
    dtype = DTYPES[out_dtype].numpy
    with ReaderPool(src) as readers:
        for t, offset in tensors:
            chunks = chain.from_iterable(
                _part_bytes(readers(p.shard), p.scale_shard and readers(p.scale_shard), p, dtype)
                for p in t.parts)
            part_writer.write_at(Path(dst) / file, offset, chunks,
                                 math.prod(t.shape) * itemsize(t.dtype))
    return {}


def _reads(tensors) -> list[Part]:
    return [p for t in tensors for p in t.parts]


def _file_work(ck: Checkpoint, dst: str, j: Job, out_dtype: str, whole: bool) -> FileWork:
    """Quantize, or any file for an object store (`whole`): one job per file (quantize's
    error statistics come back). Upcast: parts of about PART_BYTES of source, whole output
    tensors each, written into one pre-sized file. Each job carries the header entries it
    reads, from the run's source (`job_source`): no worker reads a header."""
    nbytes = [sum(p.src_bytes for p in t.parts) for t in j.tensors]
    if not out_dtype or whole:
        src = job_source(ck, _reads(j.tensors))
        return FileWork(j.file, [ParallelJob(j.file, sum(nbytes),
                                             (_write_job, src, dst, j, out_dtype), JOB_MEMORY)])
    specs = [s for t in j.tensors for s in t.specs()]
    offsets = part_writer.tensor_offsets(specs)
    parts: list[list[tuple[OutTensor, int]]] = [[]]
    size = 0
    for t, n in zip(j.tensors, nbytes):
        if parts[-1] and size + n > PART_BYTES:
            parts.append([])
            size = 0
        parts[-1].append((t, offsets[t.name]))
        size += n
    sizes = {t.name: n for t, n in zip(j.tensors, nbytes)}
    return FileWork(j.file, [ParallelJob(j.file, sum(sizes[t.name] for t, _ in part),
                                         (_write_part, job_source(ck, _reads(t for t, _ in part)),
                                          dst, j.file, part, out_dtype),
                                         JOB_MEMORY)
                             for part in parts if part], specs)


def _run(ck: Checkpoint, dst: str | Path, jobs: list[Job], job_id: dict, config: dict,
         out_dtype: str, report, report_type, *, workers, overwrite, progress, label: str,
         executor: ExecutorName = "local"):
    """The shared run (`convert_output.run_conversion`: journal, resume, the proof beside
    DST) over V4's jobs; quantize (no `out_dtype`) keeps its round-trip statistics."""
    return run_conversion(
        ck, dst, [j.file for j in jobs],
        lambda out, todo: [_file_work(ck, str(out.path), jobs[i], out_dtype, out.remote)
                           for i in todo],
        ((j.file, spec) for j in jobs for t in j.tensors for spec in t.specs()),
        job=job_id, config=config, index_metadata=dict(ck.index.metadata),
        keeps_stats=not out_dtype, workers=workers, executor=executor, overwrite=overwrite,
        progress=progress, label=label, report=report, report_type=report_type)


def upcast_v4(src, dst, *, dtype: str = "bf16", layout: V4Layout = "deepseek",
              workers: int | None = None, overwrite: bool = False,
              progress: Progress | None = None, executor: ExecutorName = "local",
              allow_copy: bool = False) -> V4UpcastReport:
    """Dequantise a DeepSeek-V4 checkpoint (FP8 + MXFP4) into BF16/F32, `layout` names;
    a source it would only copy is refused unless `allow_copy` (as for V2/V3)."""
    t0 = time.monotonic()
    if layout not in ("deepseek", "hf"):
        raise ArgumentError(f"layout must be 'deepseek' or 'hf', found {layout!r}")
    out_dtype = OUT_DTYPES[dtype]
    with Checkpoint(src) as ck:
        jobs, dropped = plan_upcast_v4(ck, out_dtype, layout)
        if not allow_copy and layout == "deepseek" and all(
                p.kind == "copy" for j in jobs for t in j.tensors for p in t.parts):
            raise copy_refusal(ck.dir, dtype)
        config = _with_dtype(ck.raw_config, TORCH_DTYPES[out_dtype])
        config.pop("quantization_config", None)
        config.pop("expert_dtype", None)
        job_id = _job("upcast-v4", ck, {"dtype": dtype, "layout": layout})
        parts = [p for j in jobs for t in j.tensors for p in t.parts]
        stacked = sum(len(t.parts) > 1 for j in jobs for t in j.tensors)

        def report(resumed, side, _, total, nodes, run_id) -> V4UpcastReport:
            return V4UpcastReport(
                source=str(src), destination=str(dst), dtype=dtype, layout=layout,
                files=[j.file for j in jobs], tensors=sum(len(j.tensors) for j in jobs),
                dequantized=sum(p.kind in ("fp8", "fp4") for p in parts),
                fp4_dequantized=sum(p.kind == "fp4" for p in parts),
                widened=sum(p.kind == "widen" for p in parts),
                copied=sum(p.kind == "copy" for p in parts), scales_dropped=dropped,
                experts_stacked=stacked, total_size=total, resumed_files=resumed,
                side_files=side, kept=kept_files(dst, side), job_id=run_id,
                seconds=round(time.monotonic() - t0, 3), nodes=nodes)

        return _run(ck, dst, jobs, job_id, config, out_dtype, report, V4UpcastReport,
                    workers=workers, overwrite=overwrite, progress=progress, label="upcast",
                    executor=executor)


def quantize_v4(src, dst, *, expert_dtype: str = "fp4", workers: int | None = None,
                overwrite: bool = False, progress: Progress | None = None,
                executor: ExecutorName = "local") -> V4QuantizeReport:
    """BF16/F32 DeepSeek-V4 -> V4's on-disk format; or FP4 experts -> FP8 (`expert_dtype`)."""
    t0 = time.monotonic()
    if expert_dtype not in ("fp4", "fp8"):
        raise ArgumentError(f"expert_dtype must be 'fp4' or 'fp8', found {expert_dtype!r}")
    with Checkpoint(src) as ck:
        jobs = plan_quantize_v4(ck, expert_dtype)
        qc = dict(sorted({**FP8_QUANTIZATION_CONFIG, "scale_fmt": "ue8m0"}.items()))
        config = {**_with_dtype(ck.raw_config, "bfloat16"), "quantization_config": qc,
                  "expert_dtype": expert_dtype}
        job_id = _job("quantize-v4", ck, {"expert_dtype": expert_dtype})
        quantized = [t for j in jobs for t in j.tensors if t.scale]

        def report(resumed, side, errors, total, nodes, run_id) -> V4QuantizeReport:
            per = [RoundTripError(name=t.name, max_abs_error=errors[t.name][0],
                                  rel_l2_error=errors[t.name][1], nonfinite=errors[t.name][2])
                   for t in quantized]
            return V4QuantizeReport(
                source=str(src), destination=str(dst), scale_fmt="ue8m0", block=FP8_BLOCK,
                expert_dtype=expert_dtype, files=[j.file for j in jobs],
                tensors=sum(len(t.specs()) for j in jobs for t in j.tensors), quantized=len(per),
                quantized_fp4=sum(t.parts[0].kind == "to_fp4" for t in quantized),
                repacked=sum(t.parts[0].kind == "repack" for t in quantized),
                copied=sum(t.parts[0].kind == "copy" for j in jobs for t in j.tensors),
                total_size=total, resumed_files=resumed, side_files=side,
                kept=kept_files(dst, side), job_id=run_id,
                seconds=round(time.monotonic() - t0, 3), nodes=nodes,
                max_abs_error=max((e.max_abs_error for e in per), default=0.0),
                max_rel_l2_error=max((e.rel_l2_error for e in per), default=0.0), errors=per)

        return _run(ck, dst, jobs, job_id, config, "", report, V4QuantizeReport,
                    workers=workers, overwrite=overwrite, progress=progress, label="quantize",
                    executor=executor)
