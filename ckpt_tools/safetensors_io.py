"""Safetensors per the format spec, one tensor at a time.

Layout: 8-byte little-endian header length N, N bytes of JSON, then the data section.
`read_header` trusts nothing: the length is capped and must fit the file, the JSON must be
an object without duplicate keys, dtypes must be known, and the tensors must tile the data
section exactly (sorted by offset: contiguous, no overlap, no gap, nothing past the end),
each spanning prod(shape) x itemsize bytes. Every defect is a `FormatError` naming the file.

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
from dataclasses import dataclass
from functools import partial
from itertools import chain
from operator import itemgetter, mul, sub
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from . import dtypes
from .dtypes import ITEMSIZES, dtype_name
from .errors import ArgumentError, FormatError, MissingTensorError
from .fault_injection import crash_point
from .parallel import report_bytes
from .remote.path import RemotePath

if TYPE_CHECKING:
    import numpy as np
# NumPy is imported where arrays are made, not here: header-only work (`ckpt validate`,
# `ckpt info DIR`) then starts without numpy and ml_dtypes.

MAX_HEADER_BYTES = 100_000_000  # the safetensors reference implementation's cap
# Far above any real file (all of V3 in one file is 91,991 tensors); refusing more before
# parsing keeps a hostile header from costing minutes of JSON decoding.
MAX_TENSORS = 500_000
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


class TensorEntry(NamedTuple):
    """One tensor of a header (a NamedTuple: a V3 checkpoint has 92k of them)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # offsets relative to the data section
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    entries: dict[str, TensorEntry]  # in file order (by offset)
    metadata: dict[str, str] | None
    data_offset: int  # 8 + N
    file_size: int

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __getitem__(self, name: str) -> TensorEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise MissingTensorError(f"{self.path}: no tensor '{name}' in this file") from None


def _no_duplicates(pairs):
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {dup!r}")
    return out


def _is_uint(x) -> bool:
    return type(x) is int and x >= 0  # bool is not int here, on purpose


def _load_json(path: Path, header: bytes) -> dict:
    declared = header.count(b'"data_offsets"')
    if declared > MAX_TENSORS:
        raise FormatError(f"{path}: header declares {declared:,} tensors, more than the "
                          f"{MAX_TENSORS:,} this reader accepts")
    try:
        doc = json.loads(header)
        if not isinstance(doc, dict):
            raise FormatError(f"{path}: header must be a JSON object, found {type(doc).__name__}")
        # A duplicated tensor name would silently shadow the first; every entry carries one
        # "data_offsets" key, so a count mismatch sends us to the slow, exact check.
        if declared != len(doc) - ("__metadata__" in doc):
            json.loads(header, object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        if isinstance(e, FormatError):
            raise
        raise FormatError(f"{path}: header is not valid JSON: {e}") from None
    return doc


def parse_header_bytes(path: Path, header: bytes, file_size: int) -> SafetensorsHeader:
    """Validate a header already read from `path` (whose size is `file_size`)."""
    n = len(header)
    doc = _load_json(path, header)
    metadata = doc.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise FormatError(f"{path}: __metadata__ must map strings to strings")
    entries = _sound_entries(doc, file_size - 8 - n)
    if entries is None:  # some entry is wrong: the exact checks say which, and how
        entries = {e.name: e for e in _checked_entries(path, doc, file_size - 8 - n)}
    return SafetensorsHeader(path, entries, metadata, 8 + n, file_size)


def _sound_entries(doc: dict, data_size: int) -> dict[str, TensorEntry] | None:
    """The entries by name in offset order when every one passes `_checked_entries`' rules, else
    None. The same rules, checked a column at a time with C-level maps (V3's 92k entries in
    a fraction of the time): dtypes known, shapes and offsets lists of non-negative ints
    (bool is not int here), each span the shape's bytes, spans tiling the data section."""
    names, infos = list(doc), list(doc.values())
    if not infos:
        return {} if data_size == 0 else None
    try:  # an entry that is not an object, or lacks a key: TypeError, KeyError
        dtypes_ = list(map(itemgetter("dtype"), infos))
        shapes = list(map(itemgetter("shape"), infos))
        offsets = list(map(itemgetter("data_offsets"), infos))
        if (set(map(type, infos)) != {dict} or not set(dtypes_) <= ITEMSIZES.keys()
                or set(map(type, shapes)) != {list} or set(map(type, offsets)) != {list}
                or set(map(len, offsets)) != {2}):
            return None
    except (TypeError, KeyError):
        return None
    starts, ends = list(map(itemgetter(0), offsets)), list(map(itemgetter(1), offsets))
    dims = list(chain.from_iterable(shapes))
    if (not set(map(type, starts)) | set(map(type, ends)) | set(map(type, dims)) <= {int}
            or min(starts) < 0 or (dims and min(dims) < 0)):
        return None
    spans = list(map(sub, ends, starts))
    if spans != list(map(mul, map(math.prod, shapes), map(ITEMSIZES.__getitem__, dtypes_))):
        return None
    if starts[1:] != ends[:-1]:  # not stored in file order (names sorted, as most writers do)
        order = sorted(range(len(names)), key=starts.__getitem__)
        names, dtypes_, shapes, starts, ends = ([column[i] for i in order] for column in
                                                (names, dtypes_, shapes, starts, ends))
        if starts[1:] != ends[:-1]:  # a gap or overlap (or zero-size ties): the exact path
            return None
    if starts[0] != 0 or ends[-1] != data_size:
        return None
    rows = zip(names, dtypes_, map(tuple, shapes), starts, ends)
    return dict(zip(names, map(partial(tuple.__new__, TensorEntry), rows)))


def _by_offset(e: TensorEntry) -> tuple[int, int]:
    return e.start, e.end


def _checked_entries(path: Path, doc: dict, data_size: int) -> list[TensorEntry]:
    """The entries sorted by offset, each rule checked entry by entry: raises FormatError
    naming the first entry that breaks one."""
    entries: list[TensorEntry] = []
    append, prod, sizes = entries.append, math.prod, ITEMSIZES
    for name, info in doc.items():
        if type(info) is not dict:
            raise FormatError(f"{path}: tensor '{name}': header entry is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        size = sizes.get(dtype) if type(dtype) is str else None
        if size is None:
            raise FormatError(f"{path}: tensor '{name}': unknown dtype {json.dumps(dtype)}")
        if type(shape) is not list or not all(map(_is_uint, shape)):
            raise FormatError(f"{path}: tensor '{name}': shape must be a list of non-negative "
                              f"integers, found {json.dumps(shape)}")
        if not (type(offsets) is list and len(offsets) == 2 and _is_uint(offsets[0])
                and _is_uint(offsets[1]) and offsets[0] <= offsets[1]):
            raise FormatError(f"{path}: tensor '{name}': data_offsets must be [begin, end] with "
                              f"0 <= begin <= end, found {json.dumps(offsets)}")
        begin, end = offsets
        expected = prod(shape) * size  # exact: Python ints do not overflow
        if end - begin != expected:
            raise FormatError(
                f"{path}: tensor '{name}': shape {shape} of {dtype} needs {expected} bytes, "
                f"data_offsets span {end - begin}")
        append(TensorEntry(name, dtype, tuple(shape), begin, end))
    entries.sort(key=_by_offset)
    cursor, previous = 0, None
    for e in entries:
        if e.start != cursor:
            what = (f"overlaps '{previous}'" if e.start < cursor
                    else f"leaves a gap of {e.start - cursor} bytes after "
                         f"{repr(previous) if previous else 'the header'}")
            if e.start > data_size:
                what = f"starts at {e.start}, past the end of the {data_size}-byte data section"
            raise FormatError(f"{path}: tensor '{e.name}': data_offsets {[e.start, e.end]} {what}")
        cursor, previous = e.end, e.name
    if cursor != data_size:
        if cursor > data_size:
            raise FormatError(f"{path}: tensors need {cursor} data bytes but the file holds "
                              f"{data_size} (truncated?)")
        raise FormatError(f"{path}: {data_size - cursor} trailing bytes after the last tensor")
    return entries


SNIFF_BYTES = 64
_KNOWN_STARTS = (
    (b"version https://git-lfs", "a Git LFS pointer: fetch the file with `git lfs pull`"),
    (b"PK\x03\x04", "a zip archive, such as a PyTorch .bin/.pt checkpoint"),
    (b"\x80\x02", "a Python pickle, such as a PyTorch .bin checkpoint"),
    (b"GGUF", "a GGUF file"),
)


def sniff_kind(start: bytes) -> str | None:
    """What a file that is not safetensors seems to be, from its first bytes, or None.

    A safetensors file starts with 8 bytes of header length then '{'; text in those first
    bytes (an HTML error page, a README, an LFS pointer saved under the shard's name)
    makes an absurd length, so name the likelier cause instead."""
    for magic, kind in _KNOWN_STARTS:
        if start.startswith(magic):
            return kind
    head = start.lstrip()
    if head[:1] == b"<" and b"html" in head[:32].lower():
        return "starts with HTML, e.g. an error page saved under this name"
    first = start[:8].decode("utf-8", errors="ignore")  # a cut multi-byte char drops out
    if len(first) >= 2 and all(c.isprintable() or c in "\r\n\t" for c in first):
        return "starts with text"
    return None


def _check_length(path, size: int, start: bytes) -> int:
    """The length prefix in `start` (the file's first bytes, up to `SNIFF_BYTES` of them)
    checked against the cap and the file's size; an absurd one names what the file seems
    to be instead (`sniff_kind`)."""
    if size < 8:
        raise FormatError(f"{path}: file is {size} bytes, too short for a safetensors "
                          f"header (truncated?)")
    (n,) = struct.unpack("<Q", start[:8])
    if n > MAX_HEADER_BYTES or 8 + n > size:  # likely not safetensors at all: say what
        kind = sniff_kind(start[:SNIFF_BYTES])
        if kind is not None:
            raise FormatError(f"{path}: not a safetensors file ({kind})")
    if n > MAX_HEADER_BYTES:
        raise FormatError(f"{path}: header length {n} exceeds the {MAX_HEADER_BYTES}-byte cap")
    if 8 + n > size:
        raise FormatError(f"{path}: header length {n} runs past the end of the "
                          f"{size}-byte file (truncated?)")
    return n


def _read_remote_header(path: RemotePath) -> SafetensorsHeader:
    """The header of a remote file: one ranged read (or none, from the header cache)."""
    try:
        size = path.info().size
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    raw = path.tree.header_bytes(path.rel)
    n = _check_length(path, size, raw)
    return parse_header_bytes(path, raw[8:8 + n], size)


def read_header(path: str | Path | RemotePath) -> SafetensorsHeader:
    """Read and validate the header of one safetensors file (no tensor data is read).

    Raises:
        FormatError: naming the file and the defect.
    """
    if isinstance(path, RemotePath):
        return _read_remote_header(path)
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            n = _check_length(path, size, f.read(SNIFF_BYTES))
            f.seek(8)
            header = f.read(n)
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FormatError(f"{path}: is a directory, not a safetensors file") from None
    except PermissionError:
        raise FormatError(f"{path}: permission denied") from None
    return parse_header_bytes(path, header, size)


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
            raise ArgumentError(f"{self.path}: tensor '{name}': byte range [{start}, {stop}) outside "
                             f"its {e.nbytes} bytes")
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
            raise ArgumentError(f"{self.path}: tensor '{name}': slice [{start}:{stop}] on dim {dim} "
                             f"outside shape {list(e.shape)}")
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
            raise ArgumentError(f"{self.path}: tensor '{name}': slice [{start}:{stop}] on dim {dim} "
                             f"outside shape {list(e.shape)}")
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
            raise ArgumentError(f"{self.path}: tensor '{name}': rows [{start}, {stop}) outside [0, {rows})")
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
        doc[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        sizes.append(nbytes)
        offset += nbytes
    raw = json.dumps(doc, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % HEADER_ALIGN)
    return struct.pack("<Q", len(raw)) + raw, sizes


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
        report_bytes(n)  # progress inside a job (ckpt_tools.parallel), per chunk
        self._pending += n
        if self._pending >= WRITEBACK_BYTES and hasattr(os, "posix_fadvise"):
            self._file.flush()
            end = self._file.tell()
            os.posix_fadvise(self._file.fileno(), end - self._pending, self._pending,
                             os.POSIX_FADV_DONTNEED)
            self._pending = 0

    def write_copy(self, name: str, spans: Iterable[tuple[int, int, int]]) -> int:
        """Write a tensor whose bytes are the concatenation of `spans`, (file descriptor,
        offset, length) triples of other files: copied inside the kernel (copy_file_range)
        where the filesystems allow it, else through a bounded buffer. Returns the bytes
        written (the tensor's size, or FormatError)."""
        self._expect(name)
        self._file.flush()
        fd = self._file.fileno()
        pos = begin = self._file.tell()
        copy = os.copy_file_range if self._kernel_copy else None
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
                        self._kernel_copy, copy = False, None
                        continue
                if n <= 0:
                    raise FormatError(f"{self.path}: tensor '{name}': source file ended early")
                offset, length, pos = offset + n, length - n, pos + n
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


def write_safetensors(path: str | Path, tensors: dict[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
                      metadata: dict[str, str] | None = DEFAULT_METADATA) -> None:
    """Write in-memory arrays (small files: tests, tiny checkpoints)."""
    items = list(tensors.items() if isinstance(tensors, dict) else tensors)
    specs = [(n, dtype_name(a.dtype), tuple(a.shape)) for n, a in items]
    with SafetensorsWriter(path, specs, metadata) as w:
        for n, a in items:
            w.write(n, a)

