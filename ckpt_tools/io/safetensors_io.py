"""Safetensors per the format spec, one tensor at a time.

Headers are read and checked by `safetensors_header` (re-exported here: `read_header`,
`SafetensorsHeader`, `TensorEntry`); nothing below trusts a file before that.

Reads are lazy: `SafetensorsReader.get` returns a read-only view into an mmap, so only
the pages of that tensor are touched; `iter_chunks` copies through a fixed buffer with
pread for paths that must not grow the resident set (`read_range` and `iter_slice` do the
same for part of a tensor). `SafetensorsWriter` streams tensors into `<name>.partial` and
renames it into place only when every byte is written.
"""

from __future__ import annotations

import errno
import json
import math
import mmap
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import dtypes
from .dtypes import ITEMSIZES, dtype_name
from ..errors import ArgumentError, FormatError
from ..execution.fault_injection import crash_point
from ..execution.parallel import report_bytes
from ..remote.path import RemotePath
from ..remote.verified import await_checked_reads
from .safetensors_header import (  # noqa: F401  (re-exported: one import for readers)
    MAX_HEADER_BYTES,
    MAX_TENSORS,
    SafetensorsHeader,
    TensorEntry,
    parse_header_bytes,
    read_header,
    sniff_kind,
)

if TYPE_CHECKING:
    import numpy as np
# NumPy is imported where arrays are made, not here: header-only work (`ckpt validate`,
# `ckpt info DIR`) then starts without numpy and ml_dtypes.

HEADER_ALIGN = 8
PARTIAL_SUFFIX = ".partial"
CHUNK_BYTES = 16 << 20
_SHORT_RUN = 512  # iter_slice: shorter runs are cut from whole rows read at once
DEFAULT_METADATA = {"format": "pt"}
_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP,
                   errno.EBADF, errno.EPERM}  # copy_file_range unusable: fall back
# A writer asks the kernel to start writing back every this many bytes (Linux), so that
# close()'s fsync waits for the tail of a file, not for gigabytes of dirty pages.
WRITEBACK_BYTES = 32 << 20


class SafetensorsReader:
    """Lazy access to the tensors of one file. Use as a context manager or call close()."""

    def __init__(self, path: str | Path | RemotePath, header: SafetensorsHeader | None = None):
        self.path = path if isinstance(path, RemotePath) else Path(path)
        self.header = header or read_header(self.path)
        self._fd: int | None = None
        self._mmap: mmap.mmap | None = None
        self._remote = None  # a remote file's remote.byte_source.RangeSource, opened on first read

    def __enter__(self) -> SafetensorsReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _pread(self, length: int, offset: int) -> bytes:
        """Up to `length` bytes at `offset` (os.pread's contract), local or remote."""
        if not isinstance(self.path, RemotePath):
            return os.pread(self._fileno(), length, offset)
        return self._range_source().read_at(offset, min(length, self.header.file_size - offset))

    def _range_source(self):
        if self._remote is None:
            self._remote = self.path.open_source()
            if self._remote.size != self.header.file_size:
                raise FormatError(f"{self.path}: file changed size while being read")
        return self._remote

    def _fileno(self) -> int:
        if isinstance(self.path, RemotePath):
            raise FormatError(f"{self.path}: a remote file has no descriptor; read it by range")
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
            if os.fstat(self._fd).st_size != self.header.file_size:
                raise FormatError(f"{self.path}: file changed size while being read")
        return self._fd

    def close(self) -> None:
        # Arrays returned by get() may still reference the mmap; it is unmapped once they go.
        self._mmap = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._remote is not None:
            self._remote.close()
            self._remote = None

    @property
    def names(self) -> list[str]:
        return list(self.header.entries)

    def entry(self, name: str) -> TensorEntry:
        return self.header[name]

    def get(self, name: str) -> np.ndarray:
        """A read-only array view of one tensor, in its stored dtype (no copy)."""
        import numpy as np

        e = self.header[name]
        if e.nbytes == 0:
            return np.zeros(e.shape, dtypes.DTYPES[e.dtype].numpy)
        if isinstance(self.path, RemotePath):  # one ranged read of this tensor, no read-ahead
            data = self._range_source().read_exact(self.header.data_offset + e.start, e.nbytes)
            return np.frombuffer(data, dtypes.DTYPES[e.dtype].numpy).reshape(e.shape)
        if self._mmap is None:
            self._mmap = mmap.mmap(self._fileno(), 0, access=mmap.ACCESS_READ)
        arr = np.frombuffer(self._mmap, dtypes.DTYPES[e.dtype].numpy, e.numel,
                            self.header.data_offset + e.start)
        return arr.reshape(e.shape)

    def iter_chunks(self, name: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The raw bytes of one tensor in chunks, read with pread (bounded memory)."""
        e = self.header[name]
        pos, end = self.header.data_offset + e.start, self.header.data_offset + e.end
        while pos < end:
            chunk = self._pread(min(chunk_bytes, end - pos), pos)
            if not chunk:
                raise FormatError(f"{self.path}: tensor '{name}': file ended early")
            pos += len(chunk)
            yield chunk

    def iter_into(self, name: str, buffer: bytearray, start: int = 0,
                  stop: int | None = None) -> Iterator[memoryview]:
        """The raw bytes [start, stop) of one tensor (default: all) read into `buffer` over
        and over (pread): each view is valid until the next is yielded. No allocation per
        chunk."""
        e, view, base = self.header[name], memoryview(buffer), self.header.data_offset
        stop = e.nbytes if stop is None else stop
        if not 0 <= start <= stop <= e.nbytes:
            raise ArgumentError(f"{self.path}: tensor '{name}': byte range [{start}, {stop}) "
                                f"outside its {e.nbytes} bytes")
        fd, pos, end = self._fileno(), base + e.start + start, base + e.start + stop
        while pos < end:
            want = min(len(view), end - pos)
            n = os.preadv(fd, [view[:want]], pos)
            if n < want:  # a regular file reads short only at its end
                raise FormatError(f"{self.path}: tensor '{name}': file ended early")
            pos += n
            yield view[:n]

    def read_bytes(self, name: str) -> bytes:
        return b"".join(self.iter_chunks(name))

    def read_range(self, name: str, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of one tensor's data, read with pread (no mmap)."""
        e = self.header[name]
        if not 0 <= start <= stop <= e.nbytes:
            raise ArgumentError(f"{self.path}: tensor '{name}': byte range [{start}, {stop}) "
                                f"outside its {e.nbytes} bytes")
        base = self.header.data_offset + e.start
        pos, end, parts = base + start, base + stop, []
        while pos < end:
            chunk = self._pread(end - pos, pos)
            if not chunk:
                raise FormatError(f"{self.path}: tensor '{name}': file ended early")
            pos += len(chunk)
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def iter_slice(self, name: str, dim: int, start: int, stop: int,
                   chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The raw bytes of `tensor[..., start:stop, ...]` (sliced on `dim`) in C order.

        Read with pread through buffers of about `chunk_bytes`, so memory stays bounded and
        the slice's pages never enter this process's resident set. A slice on dim 0 is one
        contiguous byte range; on a later dim each outer index contributes one run, read
        run by run when runs are long and as whole rows sliced in memory when they are short.
        """
        e = self.header[name]
        if not (0 <= dim < len(e.shape) and 0 <= start <= stop <= e.shape[dim]):
            raise ArgumentError(f"{self.path}: tensor '{name}': slice [{start}:{stop}] "
                                f"on dim {dim} outside shape {list(e.shape)}")
        inner = math.prod(e.shape[dim + 1:]) * ITEMSIZES[e.dtype]  # bytes per index on dim
        outer = math.prod(e.shape[:dim])
        run, row = (stop - start) * inner, e.shape[dim] * inner
        if run == 0 or outer == 0:
            return
        if outer == 1 or run == row:  # one contiguous range
            first = start * inner
            for pos in range(first, first + outer * run, chunk_bytes):
                yield self.read_range(name, pos, min(pos + chunk_bytes, first + outer * run))
            return
        rows_per_chunk = max(1, chunk_bytes // max(run, 1))
        if run >= _SHORT_RUN and isinstance(self.path, RemotePath):
            first = start * inner  # one ranged read per run, chunks bounded by chunk_bytes
            for o0 in range(0, outer, rows_per_chunk):
                yield b"".join(self.read_range(name, first + o * row, first + o * row + run)
                               for o in range(o0, min(outer, o0 + rows_per_chunk)))
            return
        if run >= _SHORT_RUN:
            fd, base = self._fileno(), self.header.data_offset + e.start + start * inner
            for o0 in range(0, outer, rows_per_chunk):
                o1 = min(outer, o0 + rows_per_chunk)
                buf = bytearray((o1 - o0) * run)
                view = memoryview(buf)
                for k, o in enumerate(range(o0, o1)):
                    got = os.preadv(fd, [view[k * run:(k + 1) * run]], base + o * row)
                    if got != run:
                        raise FormatError(f"{self.path}: tensor '{name}': file ended early")
                yield bytes(buf)
            return
        rows_per_chunk = max(1, chunk_bytes // row)
        for o0 in range(0, outer, rows_per_chunk):
            o1 = min(outer, o0 + rows_per_chunk)
            import numpy as np

            block = np.frombuffer(self.read_range(name, o0 * row, o1 * row), np.uint8)
            yield block.reshape(o1 - o0, row)[:, start * inner:stop * inner].tobytes()

    def fileno(self) -> int:
        """The file's descriptor (opened on first use), e.g. for `SafetensorsWriter.write_copy`."""
        return self._fileno()

    def span(self, name: str, start: int, length: int) -> tuple:
        """(fd, file offset, length) of bytes [start, start + length) of a tensor's data,
        as `iter_spans` gives them (a remote file: its `RangeSource` for the descriptor)."""
        e = self.header[name]
        if not 0 <= start <= start + length <= e.nbytes:
            raise ArgumentError(f"{self.path}: tensor '{name}': byte range [{start}, "
                                f"{start + length}) outside its {e.nbytes} bytes")
        fd = self._range_source() if isinstance(self.path, RemotePath) else self._fileno()
        return fd, self.header.data_offset + e.start + start, length

    def iter_spans(self, name: str, dim: int | None = None, start: int = 0,
                   stop: int | None = None) -> Iterator[tuple[int, int, int]]:
        """(fd, file offset, length) of the contiguous byte runs of a tensor, or of its slice
        `[start:stop]` on `dim`, in C order (one run for a whole tensor or a dim-0 slice):
        what `SafetensorsWriter.write_copy` takes. A remote file gives its `RangeSource` in
        place of the descriptor."""
        e = self.header[name]
        fd = self._range_source() if isinstance(self.path, RemotePath) else self._fileno()
        base = self.header.data_offset + e.start
        if dim is None:
            if e.nbytes:
                yield fd, base, e.nbytes
            return
        stop = e.shape[dim] if stop is None else stop
        if not (0 <= dim < len(e.shape) and 0 <= start <= stop <= e.shape[dim]):
            raise ArgumentError(f"{self.path}: tensor '{name}': slice [{start}:{stop}] "
                                f"on dim {dim} outside shape {list(e.shape)}")
        inner = math.prod(e.shape[dim + 1:]) * ITEMSIZES[e.dtype]
        outer, row, run = math.prod(e.shape[:dim]), e.shape[dim] * inner, (stop - start) * inner
        if run == 0 or outer == 0:
            return
        if run == row:  # the runs touch: one span
            yield fd, base + start * inner, outer * run
            return
        first = base + start * inner
        for o in range(outer):
            yield fd, first + o * row, run

    def read_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a tensor's first axis in its stored dtype, read with pread.

        The array owns its memory (read-only, no mmap), so reading a huge tensor slice by
        slice keeps the resident set at one slice.
        """
        e = self.header[name]
        rows = e.shape[0] if e.shape else 1
        if not 0 <= start <= stop <= rows:
            raise ArgumentError(f"{self.path}: tensor '{name}': rows [{start}, {stop}) "
                                f"outside [0, {rows})")
        import numpy as np

        dtype = dtypes.DTYPES[e.dtype].numpy
        row_bytes = math.prod(e.shape[1:]) * dtype.itemsize
        data = self.read_range(name, start * row_bytes, stop * row_bytes)
        return np.frombuffer(data, dtype).reshape((stop - start, *e.shape[1:]))


def _header_bytes(specs: Sequence[tuple[str, str, tuple[int, ...]]],
                  metadata: dict[str, str] | None) -> tuple[bytes, list[int]]:
    doc: dict = {}
    if metadata is not None:
        doc["__metadata__"] = dict(metadata)
    sizes, offset = [], 0
    for name, dtype, shape in specs:
        if name in doc or name == "__metadata__":
            raise FormatError(f"tensor '{name}' given twice")
        if dtype not in ITEMSIZES:
            raise FormatError(f"tensor '{name}': unknown dtype {dtype}")
        nbytes = math.prod(shape) * ITEMSIZES[dtype]
        doc[name] = {"dtype": dtype, "shape": list(shape),
                     "data_offsets": [offset, offset + nbytes]}
        sizes.append(nbytes)
        offset += nbytes
    raw = json.dumps(doc, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % HEADER_ALIGN)
    return struct.pack("<Q", len(raw)) + raw, sizes


def copy_spans(fd: int, pos: int, spans: Iterable[tuple], kernel_copy: bool,
               where: str) -> tuple[int, bool]:
    """Write the concatenation of `spans`, (file descriptor or a remote file's byte source,
    offset, length) triples, into `fd` at `pos`: inside the kernel (copy_file_range) while
    `kernel_copy` and the filesystems allow it, else through a bounded buffer. Returns the
    position after the last byte and whether the kernel copy still works."""
    copy = os.copy_file_range if kernel_copy else None
    for src_fd, offset, length in spans:  # one row each for column slices: keep it lean
        while length:
            count = length if length < CHUNK_BYTES else CHUNK_BYTES
            if not isinstance(src_fd, int):  # a remote file's byte source
                n = os.pwrite(fd, src_fd.read_at(offset, count), pos)
            elif copy is None:
                data = os.pread(src_fd, count, offset)
                n = os.pwrite(fd, data, pos) if data else 0
            else:
                try:
                    n = copy(src_fd, fd, count, offset, pos)
                except OSError as e:  # e.g. EXDEV across filesystems, or no support
                    if e.errno not in _NO_KERNEL_COPY:
                        raise
                    copy = None
                    continue
            if n <= 0:
                raise FormatError(f"{where}: source file ended early")
            offset, length, pos = offset + n, length - n, pos + n
    return pos, copy is not None


class SafetensorsWriter:
    """Streams tensors, in the declared order, into `path` via `path.partial`.

    Usage::

        with SafetensorsWriter(path, [(name, "BF16", (4, 8)), ...]) as w:
            w.write(name, array)          # or w.write_bytes(name, chunks)

    The file appears under its final name only after the last byte is written and
    synced; on any exception the partial file is removed.
    """

    def __init__(self, path: str | Path, specs: Sequence[tuple[str, str, tuple[int, ...]]],
                 metadata: dict[str, str] | None = DEFAULT_METADATA):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.specs = [(n, d, tuple(int(x) for x in s)) for n, d, s in specs]
        header, self._sizes = _header_bytes(self.specs, metadata)
        self._next = 0
        self._kernel_copy = hasattr(os, "copy_file_range")
        self._pending = 0  # bytes written since the last writeback hint
        self._file = open(self.tmp, "wb")
        try:
            self._file.write(header)
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _expect(self, name: str) -> tuple[str, str, tuple[int, ...]]:
        if self._next >= len(self.specs):
            raise FormatError(f"{self.path}: tensor '{name}' written after the last declared one")
        spec = self.specs[self._next]
        if spec[0] != name:
            raise FormatError(f"{self.path}: expected tensor '{spec[0]}' next, got '{name}'")
        return spec

    def write(self, name: str, array: np.ndarray) -> None:
        _, dtype, shape = self._expect(name)
        found = dtype_name(array.dtype)
        if found != dtype or tuple(array.shape) != shape:
            raise FormatError(f"{self.path}: tensor '{name}': declared {dtype} {list(shape)}, "
                              f"got {found} {list(array.shape)}")
        import numpy as np

        flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        for i in range(0, flat.size, CHUNK_BYTES):
            self._file.write(memoryview(flat[i:i + CHUNK_BYTES]))
            self._written(min(CHUNK_BYTES, flat.size - i))
        self._next += 1
        crash_point()

    def write_bytes(self, name: str, chunks: Iterable[bytes]) -> None:
        """Write a tensor's raw bytes (e.g. copied from another file without decoding)."""
        self._expect(name)
        written = 0
        for chunk in chunks:
            self._file.write(chunk)
            written += len(chunk)
            self._written(len(chunk))
        if written != self._sizes[self._next]:
            raise FormatError(f"{self.path}: tensor '{name}': expected {self._sizes[self._next]} "
                              f"bytes, got {written}")
        self._next += 1
        crash_point()

    def _written(self, n: int) -> None:
        # Overlaps the disk writes with producing the next bytes; DONTNEED starts the
        # writeback of the range (and keeps the page cache free of pages nobody reads back).
        report_bytes(n)  # progress inside a job (ckpt_tools.execution.parallel), per chunk
        self._pending += n
        if self._pending >= WRITEBACK_BYTES and hasattr(os, "posix_fadvise"):
            self._file.flush()
            end = self._file.tell()
            os.posix_fadvise(self._file.fileno(), end - self._pending, self._pending,
                             os.POSIX_FADV_DONTNEED)
            self._pending = 0

    def write_copy(self, name: str, spans: Iterable[tuple[int, int, int]]) -> int:
        """Write a tensor whose bytes are the concatenation of `spans`, (file descriptor,
        offset, length) triples of other files (`copy_spans`). Returns the bytes written
        (the tensor's size, or FormatError)."""
        self._expect(name)
        self._file.flush()
        begin = self._file.tell()
        pos, self._kernel_copy = copy_spans(self._file.fileno(), begin, spans,
                                            self._kernel_copy, f"{self.path}: tensor '{name}'")
        written = pos - begin
        self._file.seek(pos)
        self._written(written)
        if written != self._sizes[self._next]:
            raise FormatError(f"{self.path}: tensor '{name}': expected {self._sizes[self._next]} "
                              f"bytes, got {written}")
        self._next += 1
        crash_point()
        return written

    def close(self) -> None:
        if self._file is None:
            return
        if self._next != len(self.specs):
            missing = self.specs[self._next][0]
            self.abort()
            raise FormatError(f"{self.path}: closed before tensor '{missing}' was written")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            await_checked_reads()  # a final name only for bytes derived from checked ones
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        crash_point()

    def abort(self) -> None:
        if self._file is not None:
            try:
                self._file.close()  # flushing may fail again (disk full): the file goes anyway
            except OSError:
                pass
            self._file = None
        self.tmp.unlink(missing_ok=True)


def write_safetensors(path: str | Path,
                      tensors: dict[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
                      metadata: dict[str, str] | None = DEFAULT_METADATA) -> None:
    """Write in-memory arrays (small files: tests, tiny checkpoints)."""
    items = list(tensors.items() if isinstance(tensors, dict) else tensors)
    specs = [(n, dtype_name(a.dtype), tuple(a.shape)) for n, a in items]
    with SafetensorsWriter(path, specs, metadata) as w:
        for n, a in items:
            w.write(n, a)

