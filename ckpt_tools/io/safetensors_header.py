"""Safetensors headers, checked before any tensor data is trusted.

Layout: 8-byte little-endian header length N, N bytes of JSON, then the data section.
`read_header` trusts nothing: the length is capped and must fit the file, the JSON must be
an object without duplicate keys, dtypes must be known, and the tensors must tile the data
section exactly (sorted by offset: contiguous, no overlap, no gap, nothing past the end),
each spanning prod(shape) x itemsize bytes. Every defect is a `FormatError` naming the file.
Apart from the reader and writer (`safetensors_io`), which re-export it.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from functools import partial
from itertools import chain
from operator import itemgetter, mul, sub
from pathlib import Path
from typing import NamedTuple

from .dtypes import ITEMSIZES
from ..errors import FormatError, MissingTensorError
from ..remote.path import RemotePath


MAX_HEADER_BYTES = 100_000_000  # the safetensors reference implementation's cap
# Far above any real file (all of V3 in one file is 91,991 tensors); refusing more before
# parsing keeps a hostile header from costing minutes of JSON decoding.
MAX_TENSORS = 500_000


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
