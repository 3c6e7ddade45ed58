"""The jobs of `ckpt reshard`: output bytes as byte runs of source tensors.

Every output tensor is a sequence of byte runs of source tensors (`source_runs`): a whole
tensor or a dim-0 slice is one run, a column slice one run per row, rank pieces
interleave row by row. Any byte range of an output tensor maps to its runs by arithmetic,
so an output file is written in parts of about `PART_BYTES` (whole rows of its tensors,
`split_file`), several jobs at once, each into its own byte range of the file
`part_writer` created: a checkpoint of few large shards keeps every worker busy, and the
bytes are those of one writer. Runs go through the kernel (copy_file_range, no user-space
buffer) or, when short or when replicas must be compared, through bounded pread buffers.
Each job returns the bytes it took from (and compared with) each source tensor, which
`reshard` checks against the plan.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from ..io import part_writer
from ..io.dtypes import itemsize
from ..errors import VerificationError
from ..execution.parallel import WORKER_MEMORY
from ..io.reader_pool import ReaderPool
from ..remote.path import RemotePath
from .reshard_plan import OutFile, OutTensor, Part
from ..io.safetensors_io import CHUNK_BYTES, SafetensorsWriter

REPLICA_CHUNK_MIN = 1 << 20
KERNEL_COPY_MIN_RUN = 512  # shorter runs are cut from source windows in memory instead
# A job holds one chunk being written plus, when interleaving rank pieces or comparing
# replicas, the pieces it joins or compares (about another chunk), with headroom.
JOB_MEMORY = WORKER_MEMORY + 3 * CHUNK_BYTES
# Output bytes per job: a file is written by several jobs at once, so the largest file
# does not run alone while the other workers idle.
PART_BYTES = 128 << 20

Counts = dict[str, list]  # output file -> [[source file, tensor, bytes written, compared]]


class Run(NamedTuple):
    """`length` bytes of a source tensor's data, from byte `start` of it."""

    part: Part
    start: int
    length: int


class Piece(NamedTuple):
    """Bytes [start, stop) of output tensor `tensor`, at `offset` of the output file."""

    tensor: OutTensor
    start: int
    stop: int
    offset: int


def source_runs(t: OutTensor, shape_of: Callable[[Part], tuple[int, ...]], start: int,
                stop: int) -> Iterator[Run]:
    """The runs of source bytes making bytes [start, stop) of `t`, in order."""
    size = itemsize(t.dtype)
    if len(t.parts) == 1:
        p = t.parts[0]
        shape = shape_of(p)
        if p.dim is None or (p.start, p.stop) == (0, shape[p.dim]):
            if stop > start:
                yield Run(p, start, stop - start)
            return
        inner = math.prod(shape[p.dim + 1:]) * size
        run, row, first = (p.stop - p.start) * inner, shape[p.dim] * inner, p.start * inner
        for o in range(start // run, -(-stop // run)) if run else ():
            lo, hi = max(start, o * run), min(stop, (o + 1) * run)
            yield Run(p, o * row + first + lo - o * run, hi - lo)
        return
    # pieces concatenated on t.dim: each outer index is every piece's run in turn
    outer = math.prod(t.shape[:t.dim])
    runs = [math.prod(shape_of(p)) * size // outer for p in t.parts] if outer else []
    unit = sum(runs)
    for o in range(start // unit, -(-stop // unit)) if unit else ():
        pos = o * unit
        for p, run in zip(t.parts, runs):
            lo, hi = max(start, pos), min(stop, pos + run)
            if hi > lo:
                yield Run(p, o * run + lo - pos, hi - lo)
            pos += run


def _runs_are_long(t: OutTensor, shape_of: Callable[[Part], tuple[int, ...]]) -> bool:
    """Whether copying `t`'s runs in the kernel beats cutting them from windows in memory
    (no replicas to compare, runs not tiny)."""
    if t.replicas:
        return False
    if len(t.parts) == 1:
        p = t.parts[0]
        shape = shape_of(p)
        if p.dim is None or p.stop - p.start == shape[p.dim] or math.prod(shape[:p.dim]) <= 1:
            return True
        return (p.stop - p.start) * math.prod(shape[p.dim + 1:]) * itemsize(t.dtype) \
            >= KERNEL_COPY_MIN_RUN
    outer = math.prod(t.shape[:t.dim])
    return outer <= 1 or t.nbytes // outer // len(t.parts) >= KERNEL_COPY_MIN_RUN


def _cut(runs: Iterator[Run], most: int) -> Iterator[Run]:
    """`runs` cut into runs of at most `most` bytes."""
    for r in runs:
        for a in range(r.start, r.start + r.length, most):
            yield Run(r.part, a, min(most, r.start + r.length - a))


class _Streams:
    """A job's readers and the bytes it took from (and compared with) each source tensor."""

    def __init__(self, src: str | RemotePath):
        self.readers = ReaderPool(src)
        self.written: Counter = Counter()
        self.compared: Counter = Counter()

    def shape_of(self, p: Part) -> tuple[int, ...]:
        return self.readers(p.file).entry(p.tensor).shape

    def spans(self, t: OutTensor, start: int, stop: int) -> Iterator[tuple] | None:
        """(file descriptor or byte source, offset, length) of bytes [start, stop) of `t`,
        when they go through the kernel; else None."""
        if not _runs_are_long(t, self.shape_of):
            return None
        return (self._span(r) for r in source_runs(t, self.shape_of, start, stop))

    def _span(self, r: Run) -> tuple:
        self.written[(r.part.file, r.part.tensor)] += r.length
        return self.readers(r.part.file).span(r.part.tensor, r.start, r.length)

    def chunks(self, t: OutTensor, start: int, stop: int,
               chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """Bytes [start, stop) of `t` in chunks of about `chunk_bytes`, read through
        windows of the source tensors (short runs cost one read per window, not per run);
        replicas are compared with rank 0's bytes as they pass."""
        if t.replicas:
            most = max(REPLICA_CHUNK_MIN, chunk_bytes // (1 + len(t.replicas)))
            yield from self._compared(t, _cut(source_runs(t, self.shape_of, start, stop), most))
            return
        most = max(1, chunk_bytes // len(t.parts))
        windows: dict[Part, tuple[int, bytes]] = {}
        out = bytearray()
        for r in _cut(source_runs(t, self.shape_of, start, stop), most):
            at, data = windows.get(r.part, (0, b""))
            if not at <= r.start <= r.start + r.length <= at + len(data):
                reader = self.readers(r.part.file)
                end = min(reader.entry(r.part.tensor).nbytes, r.start + most)
                at, data = windows[r.part] = (r.start, reader.read_range(r.part.tensor,
                                                                         r.start, end))
            out += memoryview(data)[r.start - at:r.start - at + r.length]
            self.written[(r.part.file, r.part.tensor)] += r.length
            if len(out) >= chunk_bytes:
                yield bytes(out)
                out = bytearray()
        if out:
            yield bytes(out)

    def _compared(self, t: OutTensor, runs: Iterator[Run]) -> Iterator[bytes]:
        for r in runs:
            data = self.readers(r.part.file).read_range(r.part.tensor, r.start, r.start + r.length)
            self.written[(r.part.file, r.part.tensor)] += r.length
            for i, q in enumerate(t.replicas):
                if self.readers(q.file).read_range(q.tensor, r.start, r.start + r.length) != data:
                    raise VerificationError(f"{self.readers.root}: tensor '{r.part.tensor}': "
                                            f"the copy on rank {i + 1} differs from rank 0's")
                self.compared[(q.file, q.tensor)] += r.length
            yield data

    def counts(self, out_file: str) -> Counts:
        keys = list(dict.fromkeys([*self.written, *self.compared]))
        return {out_file: [[f, t, self.written[(f, t)], self.compared[(f, t)]]
                           for f, t in keys]}


def write_file(src: str | RemotePath, dst: str, out: OutFile) -> Counts:
    """Write one whole output file (a job: an object-store destination's files are staged
    and uploaded whole); returns the bytes taken from each source tensor."""
    streams = _Streams(src)
    try:
        with SafetensorsWriter(Path(dst) / out.name,
                               [(t.name, t.dtype, t.shape) for t in out.tensors]) as w:
            for t in out.tensors:
                spans = streams.spans(t, 0, t.nbytes)
                if spans is not None:
                    w.write_copy(t.name, spans)
                else:
                    w.write_bytes(t.name, streams.chunks(t, 0, t.nbytes))
    finally:
        streams.readers.close()
    return streams.counts(out.name)


def split_file(out: OutFile, part_bytes: int = PART_BYTES) -> list[list[Piece]]:
    """The tensors of `out` cut into parts of about `part_bytes` output bytes (whole rows
    of each tensor), in file order."""
    offsets = part_writer.tensor_offsets([(t.name, t.dtype, t.shape) for t in out.tensors])
    row = {t.name: t.nbytes // (t.shape[0] if t.shape else 1) for t in out.tensors if t.nbytes}
    runs = [(t, t.nbytes // row[t.name], row[t.name], 1) for t in out.tensors if t.nbytes]
    return [[Piece(t, r0 * row[t.name], r1 * row[t.name], offsets[t.name] + r0 * row[t.name])
             for t, r0, r1 in part] for part in part_writer.cut_rows(runs, part_bytes)]


def write_part(src: str | RemotePath, dst: str, file: str, pieces: list[Piece]) -> Counts:
    """Write `pieces` into DST/file.partial (created by `part_writer.create`); a job."""
    streams = _Streams(src)
    path = Path(dst) / file
    try:
        for p in pieces:
            spans = streams.spans(p.tensor, p.start, p.stop)
            if spans is not None:
                part_writer.copy_at(path, p.offset, spans, p.stop - p.start)
            else:
                part_writer.write_at(path, p.offset, streams.chunks(p.tensor, p.start, p.stop),
                                     p.stop - p.start)
    finally:
        streams.readers.close()
    return streams.counts(file)


def combine_counts(parts: dict[int, Counts]) -> Counts:
    """One file's counts from those of its parts."""
    total: dict[tuple[str, str, str], list[int]] = {}
    for counts in parts.values():
        for out_file, rows in counts.items():
            for f, t, w, c in rows:
                sums = total.setdefault((out_file, f, t), [0, 0])
                sums[0] += w
                sums[1] += c
    combined: Counts = {}
    for (out_file, f, t), (w, c) in total.items():
        combined.setdefault(out_file, []).append([f, t, w, c])
    return combined
