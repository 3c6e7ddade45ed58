"""One safetensors file written by several jobs at once, each its own byte ranges.

Whole-file jobs leave workers idle when a checkpoint has few files of unequal size (the
last big file runs alone). Here the header fixes every tensor's offset before any data
exists, so: `create` writes the header into `NAME.partial` and sizes the file; jobs, in
any process or on any node that sees the file, `write_at` their ranges with pwrite (a
rerun of a job writes the same bytes at the same offsets: Ray's retries are harmless);
`commit`, once every job has finished, syncs the file and renames it into place. An
interrupted run leaves only the `.partial`, which the next run removes and redoes (the
resume journal works per file, as for `SafetensorsWriter`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from ..errors import FormatError
from ..execution.fault_injection import crash_point
from ..execution.parallel import report_bytes
from ..remote.verified import await_checked_reads
from .safetensors_io import DEFAULT_METADATA, PARTIAL_SUFFIX, _header_bytes, copy_spans

T = TypeVar("T")


def partial_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def tensor_offsets(specs: Sequence[tuple[str, str, tuple[int, ...]]],
                   metadata: dict[str, str] | None = DEFAULT_METADATA) -> dict[str, int]:
    """File offset of each tensor's first byte, exactly as `SafetensorsWriter` lays it out."""
    header, sizes = _header_bytes(specs, metadata)
    offsets, pos = {}, len(header)
    for (name, _, _), size in zip(specs, sizes):
        offsets[name] = pos
        pos += size
    return offsets


def cut_rows(runs: Iterable[tuple[T, int, int, int]],
             part_bytes: int) -> list[list[tuple[T, int, int]]]:
    """Tensors' rows in file order, cut into parts of about `part_bytes`: `runs` gives each
    tensor as (item, rows, bytes per row, rows a cut must align to); a part is a list of
    (item, first row, end row). A tensor larger than a part spans several; small ones share."""
    parts: list[list[tuple[T, int, int]]] = [[]]
    size = 0
    for item, rows, row_bytes, align in runs:
        r0 = 0
        while r0 < rows:
            take = max(align, (part_bytes - size) // max(row_bytes, 1) // align * align)
            r1 = min(rows, r0 + take)
            parts[-1].append((item, r0, r1))
            size += (r1 - r0) * row_bytes
            r0 = r1
            if size >= part_bytes:
                parts.append([])
                size = 0
    return [p for p in parts if p]


def create(path: str | Path, specs: Sequence[tuple[str, str, tuple[int, ...]]],
           metadata: dict[str, str] | None = DEFAULT_METADATA) -> None:
    """`path.partial` with the header written and the data section sized (a sparse hole
    until jobs fill it)."""
    header, sizes = _header_bytes([(n, d, tuple(int(x) for x in s)) for n, d, s in specs],
                                  metadata)
    tmp = partial_path(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(header)
            fh.truncate(len(header) + sum(sizes))
    except BaseException:
        discard(path)
        raise


def discard(path: str | Path) -> None:
    """Remove `path.partial` (a run that failed: no half-written file stays behind)."""
    partial_path(path).unlink(missing_ok=True)


def write_at(path: str | Path, offset: int, chunks: Iterable[bytes | memoryview],
             expected: int) -> None:
    """Write `chunks` at `offset` of `path.partial` (exactly `expected` bytes)."""
    tmp = partial_path(path)
    fd = os.open(tmp, os.O_WRONLY)
    try:
        pos = offset
        for chunk in chunks:
            view = memoryview(chunk).cast("B")
            while view:
                n = os.pwrite(fd, view, pos)
                view, pos = view[n:], pos + n
                report_bytes(n)  # progress inside a job (ckpt_tools.execution.parallel)
        if pos - offset != expected:
            raise FormatError(f"{path}: bytes [{offset}, +{expected}) got {pos - offset}")
    finally:
        os.close(fd)
    crash_point()


def commit(path: str | Path) -> None:
    """Sync `path.partial` and rename it to `path` (every job has written its ranges, and
    returned only once what it read was checked: `execution.job.timed_call`). On failure
    the `.partial` goes: nothing of it is resumed."""
    tmp = partial_path(path)
    try:
        await_checked_reads()
    except BaseException:
        discard(path)
        raise
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    crash_point()


def copy_at(path: str | Path, offset: int, spans: Iterable[tuple], expected: int) -> None:
    """Write the concatenation of `spans` ((fd, offset, length) of other files, see
    `safetensors_io.copy_spans`) at `offset` of `path.partial` (exactly `expected` bytes)."""
    fd = os.open(partial_path(path), os.O_WRONLY)
    try:
        end, _ = copy_spans(fd, offset, spans, hasattr(os, "copy_file_range"), str(path))
    finally:
        os.close(fd)
    report_bytes(end - offset)
    if end - offset != expected:
        raise FormatError(f"{path}: bytes [{offset}, +{expected}) got {end - offset}")
    crash_point()
