"""Reading a checkpoint's headers into an `Inventory`: the structure checks.

Every shard's header per the safetensors spec; the index and the shards both ways (every
indexed tensor is in its shard, every shard tensor is indexed, no tensor in two shards, no
listed shard absent, `metadata.total_size` = the sum of the tensor bytes); shard names that
escape the directory; unreferenced `*.safetensors`. Header-only and NumPy-free.
`ckpt_tools.inventory.inspect` is the entry point; this module only reads and reports. A remote
directory (`remote.path.RemotePath`) is read the same way: its headers are fetched at once
into its tree's header cache, then parsed by the same code.
"""

from __future__ import annotations

import gc
import json
import os
import struct
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..io.dtypes import FP8_DTYPES
from ..errors import CkptError, FormatError
from .findings import Findings
from ..io.index import INDEX_FILE, SINGLE_FILE, read_index
from ..remote.path import RemotePath
from ..io.safe_paths import safe_member
from ..io.safetensors_io import MAX_HEADER_BYTES, SafetensorsHeader, TensorEntry
from ..io.source import Source
from .tensor_plan import SCALE_SUFFIX


@contextmanager
def gc_paused() -> Iterator[None]:
    """The header-only checks make ~500k small acyclic objects for V3; the collections they
    trigger cost about a third of the time and can never free anything."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@dataclass
class Inventory:
    """The tensors found, from headers only."""

    root: Path | RemotePath  # a local directory or a remote one (remote.path.RemotePath)
    shards: list[str] = field(default_factory=list)  # files whose header parsed
    entries: dict[str, TensorEntry] = field(default_factory=dict)  # first occurrence
    shard_of: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # indexed, shard unreadable
    # indexed in shards outside the part inspected (one shard of a set, a partial download):
    # neither missing nor unexpected here
    elsewhere: dict[str, str] = field(default_factory=dict)
    tensor_bytes: int = 0
    partial: bool = False  # part of a set of files: no tensor can be called missing
    rest_unknown: bool = False  # part of a set without an index: the other files' names unknown

    @cached_property
    def fp8(self) -> list[str]:
        return [n for n, e in self.entries.items() if e.dtype in FP8_DTYPES]

    @cached_property
    def scales(self) -> set[str]:
        return {n for n in self.entries if n.endswith(SCALE_SUFFIX)}


def relative(message: str, path: Path, name: str) -> str:
    """Messages from the core name absolute paths; findings name files relative to root."""
    return name + message[len(str(path)):] if message.startswith(str(path)) else message


def _looks_truncated(path: Path | RemotePath) -> bool:
    """After a header error: is the file shorter than its own header says it is?"""
    try:
        size, n, doc = _header_doc(path)
    except (OSError, ValueError, CkptError):
        return False
    if doc is True:
        return True
    if not isinstance(doc, dict):
        return False
    ends = [off[1] for v in doc.values() if isinstance(v, dict)
            and isinstance(off := v.get("data_offsets"), list) and len(off) == 2
            and isinstance(off[1], int)]
    return bool(ends) and 8 + n + max(ends) > size


def _header_doc(path: Path | RemotePath):
    """(size, header length, parsed header): True for a file too short for its header, None
    for a length past the cap. A remote file's header comes from its tree's header cache."""
    if isinstance(path, RemotePath):
        size, raw = path.info().size, path.tree.header_bytes(path.rel)
    else:
        with open(path, "rb") as fh:
            size, raw = os.fstat(fh.fileno()).st_size, fh.read(8)
            n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else 0
            raw += fh.read(n) if n <= MAX_HEADER_BYTES else b""
    if len(raw) < 8:
        return size, 0, True
    (n,) = struct.unpack("<Q", raw[:8])
    if n > MAX_HEADER_BYTES:
        return size, n, None
    if 8 + n > size:
        return size, n, True
    return size, n, json.loads(raw[8:8 + n])


def read_headers(source: Source, root: Path | RemotePath, names: list[str],
                 f: Findings) -> dict[str, SafetensorsHeader]:
    """The headers of `root`'s files `names`, read through `source` (which keeps them for
    the readers that follow); a file whose header is bad is a finding."""
    headers = {}
    if isinstance(root, RemotePath):  # one round trip for all shards, not one per shard
        root.tree.prefetch_headers([(root / name).rel for name in names])
    for name in names:
        path = root / name
        try:
            h = source.header(path)
        except FormatError as e:
            code = "shard-truncated" if _looks_truncated(path) else "header-invalid"
            f.add(code, relative(str(e), path, name), file=name)
            continue
        headers[name] = h
        fmt = (h.metadata or {}).get("format")
        if fmt != "pt":
            why = ("older transformers fail without it" if fmt is None
                   else "transformers refuses formats other than pt/tf/flax/mlx")
            f.add("shard-metadata", f"{name}: __metadata__ format is {json.dumps(fmt)}, "
                  f"expected \"pt\" ({why})", file=name, expected="pt", found=fmt)
    return headers


def scan_hf(source: Source, root: Path | RemotePath, f: Findings, *,
            single: str | None = None, subset: list[str] | None = None) -> Inventory:
    """The HF layout's headers and index: the whole set, one lone file (`single`, e.g. a
    model.safetensors) or a `subset` of the index's shards (then only their own entries)."""
    inv = Inventory(root, partial=subset is not None)
    index = None
    on_disk = [single] if single else sorted(
        p.name for p in root.glob("*.safetensors") if p.is_file())
    if single is None and (root / INDEX_FILE).is_file():
        try:
            index = read_index(root / INDEX_FILE)
        except FormatError as e:
            f.add("index-invalid", relative(str(e), root / INDEX_FILE, INDEX_FILE),
                  file=INDEX_FILE)
    if single:
        listed = [single]
    elif subset is not None:
        listed = list(subset)
    elif index is not None:
        listed = index.shards
    elif (root / SINGLE_FILE).is_file() and not (root / INDEX_FILE).is_file():
        listed = [SINGLE_FILE]
    else:
        listed = on_disk  # no usable index: still check every header we can see
        if not (root / INDEX_FILE).is_file():
            f.add("index-missing", f"{root.name}: neither {INDEX_FILE} nor {SINGLE_FILE}; "
                  f"{len(on_disk)} *.safetensors file(s) found", file=INDEX_FILE)

    readable, per_shard = [], defaultdict(int)
    if index is not None:
        for name in index.weight_map.values():
            per_shard[name] += 1
    for name in listed:
        try:
            path = safe_member(root, name, what="shard")
        except FormatError as e:
            f.add("shard-path-unsafe", relative(str(e), root, INDEX_FILE), file=name,
                  found=name)
            continue
        if not path.is_file():
            f.add("shard-missing", f"{name}: listed in {INDEX_FILE} for {per_shard[name]:,} "
                  f"tensor(s) but absent", file=name)
            continue
        readable.append(name)
    if index is not None and subset is None:
        listed_set = set(listed)
        for name in on_disk:
            if name not in listed_set:
                f.add("shard-unreferenced", f"{name}: not listed in {INDEX_FILE}; loaders that "
                      f"glob *.safetensors would read it", file=name)

    headers = read_headers(source, root, readable, f)
    inv.shards = list(headers)
    duplicates: dict[str, list[str]] = {}
    for shard, h in headers.items():
        fresh = h.entries
        clash = fresh.keys() & inv.shard_of.keys()  # set operations: V3 has 92k names
        if clash:
            for name in clash:
                duplicates.setdefault(name, [inv.shard_of[name]]).append(shard)
            fresh = {n: e for n, e in fresh.items() if n not in clash}
        inv.entries.update(fresh)
        inv.shard_of.update(dict.fromkeys(fresh, shard))
        # read_header proved the tensors tile the data section exactly
        inv.tensor_bytes += h.file_size - h.data_offset - sum(h.entries[n].nbytes for n in clash)
    for name, shards in duplicates.items():
        f.add("tensor-duplicate", f"tensor '{name}' is stored in {len(shards)} shards: "
              f"{', '.join(shards)}", file=shards[1], tensor=name, found=", ".join(shards))
    if index is None:
        inv.rest_unknown = inv.partial
        return inv

    weight_map, shard_of = index.weight_map, inv.shard_of
    if subset is not None:
        chosen = set(subset)
        inv.elsewhere = {n: s for n, s in weight_map.items() if s not in chosen}
        weight_map = {n: s for n, s in weight_map.items() if s in chosen}
    if weight_map == shard_of:  # the usual case, decided in C
        mismatched, unindexed = [], []
    else:
        mismatched = [n for n, s in weight_map.items() if shard_of.get(n) != s]
        unindexed = [n for n in shard_of if n not in weight_map]
    for name in mismatched:
        shard = weight_map[name]
        h = headers.get(shard)
        if h is None:
            inv.unreadable[name] = shard
        elif name not in h.entries:
            elsewhere = shard_of.get(name)
            where = f"; it is in {elsewhere}" if elsewhere else "; no shard holds it"
            f.add("tensor-not-in-shard", f"{shard}: tensor '{name}' is indexed here but absent"
                  f"{where}", file=shard, tensor=name, expected=shard, found=elsewhere or "absent")
    for name in unindexed:
        other = inv.elsewhere.get(name)
        how = f"{INDEX_FILE} puts it in {other}" if other else f"not listed in {INDEX_FILE}"
        f.add("tensor-not-indexed", f"{shard_of[name]}: tensor '{name}' is here but {how}",
              file=shard_of[name], tensor=name)
    if subset is not None:
        return inv  # the total is the whole set's
    if index.total_size is None:
        f.add("total-size-missing", f"{INDEX_FILE}: no metadata.total_size", file=INDEX_FILE)
    elif len(headers) == len(listed) and not duplicates and index.total_size != inv.tensor_bytes:
        f.add("total-size-mismatch", f"{INDEX_FILE}: metadata.total_size is "
              f"{index.total_size:,}, the shards' tensors add up to {inv.tensor_bytes:,} bytes",
              file=INDEX_FILE, expected=inv.tensor_bytes, found=index.total_size)
    return inv


