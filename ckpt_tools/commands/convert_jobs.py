"""The jobs of `upcast` and `quantize`, as the executors run them (in workers, or Ray tasks).

A job gets everything it needs in its arguments (a `Source` carrying the header entries of
the tensors it reads, the output path, the tensor ops, the block) and
streams a few row blocks at a time: pread in, `formats` dequantize / quantize, write out,
so it holds a few MB, never a tensor or a shard. quantize writes one whole output file per
job (`SafetensorsWriter`); upcast writes each output file in parts of about `PART_BYTES`
of source, several jobs at once (`part_writer`), so the largest shard never runs alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from ..io import part_writer
from ..io.dtypes import DTYPES, itemsize
from ..execution.parallel import WORKER_MEMORY
from ..io.reader_pool import ReaderPool
from ..formats import block_grid
from ..formats.fp8_block import dequantize, quantize
from ..formats.round_trip import RoundTripStats
from ..io.safetensors_io import SafetensorsReader, SafetensorsWriter
from ..io.source import Source

STEP_BYTES = 4 << 20  # source bytes per streaming step (rounded to whole row blocks)
# What one step's temporaries take at most (float32 copies of the rows, the output rows,
# quantize's error statistics in float64): a generous multiple of the step.
STEP_MEMORY = 16 * STEP_BYTES
# Source bytes per upcast job: a shard is written by several jobs at once, so the largest
# shard does not run alone while the other workers idle (shards differ by 2x and more).
PART_BYTES = 128 << 20

Kind = Literal["copy", "widen", "dequantize", "quantize"]


class TensorOp(NamedTuple):
    """How one source tensor becomes one output tensor (two for quantize: weight + scale)."""

    name: str
    kind: Kind
    shard: str  # source shard holding the tensor
    src_dtype: str
    dtype: str  # output dtype
    shape: tuple[int, ...]
    scale: str | None = None  # dequantize: the source scale; quantize: the scale to write
    scale_shard: str | None = None  # dequantize: the shard holding the source scale

    @property
    def src_bytes(self) -> int:
        return math.prod(self.shape) * itemsize(self.src_dtype)

    def out_specs(self, block: tuple[int, int]) -> list[tuple[str, str, tuple[int, ...]]]:
        specs = [(self.name, self.dtype, self.shape)]
        if self.kind == "quantize":
            specs.append((self.scale, "F32", block_grid(self.shape, block)))
        return specs


class ShardJob(NamedTuple):
    file: str  # output file name
    ops: tuple[TensorOp, ...]


# -- the worker ---------------------------------------------------------------------------
def _row_steps(rows: int, row_bytes: int, align: int, start: int = 0,
               stop: int | None = None) -> Iterator[tuple[int, int]]:
    """[r0, r1) ranges of about STEP_BYTES each over rows [start, stop), in multiples of
    `align` rows."""
    step = max(1, STEP_BYTES // max(row_bytes, 1) // align) * align
    stop = rows if stop is None else stop
    for r0 in range(start, stop, step):
        yield r0, min(stop, r0 + step)


def _rows(op: TensorOp) -> int:
    return op.shape[0] if op.shape else 1  # a scalar is one row


def _widened(reader: SafetensorsReader, op: TensorOp, start: int = 0,
             stop: int | None = None) -> Iterator[memoryview]:
    row_bytes = math.prod(op.shape[1:]) * itemsize(op.src_dtype)
    for r0, r1 in _row_steps(_rows(op), row_bytes, 1, start, stop):
        wide = reader.read_rows(op.name, r0, r1).astype(np.float32)
        yield memoryview(wide.reshape(-1).view(np.uint8))


def _dequantized(reader: SafetensorsReader, scale: np.ndarray, op: TensorOp,
                 block: tuple[int, int], start: int = 0,
                 stop: int | None = None) -> Iterator[memoryview]:
    """Rows [start, stop) (whole row blocks) of a dequantised weight; `scale` is its whole
    scale grid."""
    rows, cols = op.shape
    out_dtype = DTYPES[op.dtype].numpy
    buf = None
    for r0, r1 in _row_steps(rows, cols, block[0], start, stop):
        if buf is None:
            buf = np.empty((r1 - r0, cols), out_dtype)
        out = dequantize(reader.read_rows(op.name, r0, r1),
                             scale[r0 // block[0]:-(-r1 // block[0])], block, out_dtype,
                             out=buf[:r1 - r0])
        yield memoryview(out.reshape(-1).view(np.uint8))


def _quantized(reader: SafetensorsReader, op: TensorOp, block: tuple[int, int],
               scale_fmt: str, scales: list[np.ndarray], stats: RoundTripStats, start: int = 0,
               stop: int | None = None) -> Iterator[memoryview]:
    """Rows [start, stop) (whole row blocks) of a quantised weight; their scale rows go to
    `scales`, their round-trip error to `stats`."""
    rows, cols = op.shape
    buf = None  # the codes of every step, each written out before the next is made
    for r0, r1 in _row_steps(rows, cols * itemsize(op.src_dtype), block[0], start, stop):
        if buf is None:
            buf = np.empty((r1 - r0, cols), DTYPES[op.dtype].numpy)
        # the round-trip error is against exactly what upcast --dtype f32 gives back
        q, s = quantize(reader.read_rows(op.name, r0, r1), block, scale_fmt=scale_fmt,
                        errors=stats, out=buf[:r1 - r0])
        scales.append(s)
        yield memoryview(q.reshape(-1).view(np.uint8))


def write_file(src: Source, dst: str, job: ShardJob, block: tuple[int, int],
               scale_fmt: str | None) -> dict[str, list]:
    """Write one whole output shard (a job: every quantize shard, and upcast's shards for
    an object-store destination); returns, per quantised tensor, its round-trip error
    [max_abs, rel_l2, nonfinite]."""
    errors: dict[str, list] = {}
    specs = [s for op in job.ops for s in op.out_specs(block)]
    with ReaderPool(src) as reader, SafetensorsWriter(Path(dst) / job.file, specs) as w:
        for op in job.ops:
            r = reader(op.shard)
            if op.kind == "copy":
                w.write_bytes(op.name, r.iter_chunks(op.name))
                continue
            if op.kind == "widen":
                w.write_bytes(op.name, _widened(r, op))
                continue
            if op.kind == "dequantize":
                scale = reader(op.scale_shard).read_rows(op.scale, 0, -(-op.shape[0] // block[0]))
                w.write_bytes(op.name, _dequantized(r, scale, op, block))
                continue
            scales: list[np.ndarray] = []
            stats = RoundTripStats()
            w.write_bytes(op.name, _quantized(r, op, block, scale_fmt, scales, stats))
            w.write(op.scale, np.concatenate(scales) if scales
                    else np.zeros(block_grid(op.shape, block), np.float32))
            errors[op.name] = stats.result()
    return errors


# -- several jobs per output file (upcast) ----------------------------------------------
def job_source(ck, reads: Iterable) -> Source:
    """What a job reads, for its worker: the header entries of the tensors and scales
    `reads` names (each with `name`, `shard`, `scale`, `scale_shard`: a `TensorOp`, or a
    family's own conversion parts), cut from the headers the run read (`ck.source`), so
    no worker reads a header again."""
    reads = list(reads)
    wanted = [(ck.shard_path(r.shard), [r.name]) for r in reads]
    wanted += [(ck.shard_path(r.scale_shard), [r.scale]) for r in reads if r.scale_shard]
    return ck.source.for_tensors(ck.dir, wanted)


class Piece(NamedTuple):
    """Rows [r0, r1) of one output tensor, written at `offset` of the output file (and, for
    quantize, their scale rows at `scale_offset`)."""

    op: TensorOp
    r0: int
    r1: int
    offset: int
    scale_offset: int = -1

    @property
    def src_bytes(self) -> int:
        return self.op.src_bytes // _rows(self.op) * (self.r1 - self.r0)

    @property
    def out_bytes(self) -> int:
        return (self.r1 - self.r0) * math.prod(self.op.shape[1:]) * itemsize(self.op.dtype)


def split_file(job: ShardJob, block: tuple[int, int],
               part_bytes: int | None) -> list[list[Piece]]:
    """The output file of `job` cut into parts of about `part_bytes` source bytes (None:
    one part): runs of its tensors' rows (whole 128-row blocks of FP8 weights), in file
    order."""
    offsets = part_writer.tensor_offsets([s for op in job.ops for s in op.out_specs(block)])
    runs = [(op, _rows(op), op.src_bytes // _rows(op) if _rows(op) else 0,
             block[0] if op.kind in ("dequantize", "quantize") else 1) for op in job.ops]

    def piece(op: TensorOp, r0: int, r1: int) -> Piece:
        row_out = math.prod(op.shape[1:]) * itemsize(op.dtype)
        scale_at = -1
        if op.kind == "quantize":  # F32 scale rows of the 128-row blocks [r0, r1)
            scale_row = block_grid(op.shape, block)[1] * 4
            scale_at = offsets[op.scale] + r0 // block[0] * scale_row
        return Piece(op, r0, r1, offsets[op.name] + r0 * row_out, scale_at)

    cuts = part_writer.cut_rows(runs, part_bytes or sum(op.src_bytes for op in job.ops) + 1)
    return [[piece(*cut) for cut in part] for part in cuts]


def write_part(src: Source, dst: str, file: str, pieces: list[Piece],
               block: tuple[int, int], scale_fmt: str | None = None) -> dict[str, list]:
    """Write `pieces` into DST/file.partial (created by `part_writer.create`); a job.
    Returns, per quantised tensor, the error sums of its rows here (`RoundTripStats.sums`,
    combined by `combine_errors`)."""
    sums: dict[str, list] = {}
    with ReaderPool(src) as reader:
        # in source file order: a hashed hf:// file read whole is streamed once, in order
        # (remote.verified.StreamedSource); on disk, reading in order helps read-ahead
        pieces = sorted(pieces, key=lambda p: (p.op.shard, reader(p.op.shard).header[
            p.op.name].start + p.op.src_bytes // max(_rows(p.op), 1) * p.r0))
        for p in pieces:
            op = p.op
            r = reader(op.shard)
            if op.kind == "quantize":
                scales: list[np.ndarray] = []
                stats = RoundTripStats()
                part_writer.write_at(Path(dst) / file, p.offset,
                                     _quantized(r, op, block, scale_fmt, scales, stats, p.r0,
                                                p.r1), p.out_bytes)
                grid = np.concatenate(scales) if scales else np.zeros(0, np.float32)
                part_writer.write_at(Path(dst) / file, p.scale_offset,
                                     [memoryview(grid.reshape(-1).view(np.uint8))], grid.nbytes)
                sums[op.name] = stats.sums()
                continue
            if op.kind == "copy":
                row = math.prod(op.shape[1:]) * itemsize(op.src_dtype)
                chunks = (r.read_range(op.name, a * row, b * row)
                          for a, b in _row_steps(_rows(op), row, 1, p.r0, p.r1))
            elif op.kind == "widen":
                chunks = _widened(r, op, p.r0, p.r1)
            else:
                scale = reader(op.scale_shard).read_rows(op.scale, 0, -(-op.shape[0] // block[0]))
                chunks = _dequantized(r, scale, op, block, p.r0, p.r1)
            part_writer.write_at(Path(dst) / file, p.offset, chunks, p.out_bytes)
    return sums


def call(fn, *args):
    """The one job function the executors run: whole files and parts alike."""
    return fn(*args)


def job_memory(job: ShardJob, block: tuple[int, int]) -> int:
    """The most one job holds: a worker, one step's temporaries, the largest scale grid
    (read whole for dequantize, gathered whole for quantize)."""
    grids = [math.prod(block_grid(op.shape, block)) * 4 for op in job.ops
             if op.kind in ("dequantize", "quantize")]
    return WORKER_MEMORY + STEP_MEMORY + 2 * max(grids, default=0)
