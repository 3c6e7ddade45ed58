"""`ckpt validate`: everything wrong with a checkpoint, found before anyone loads it.

Contract: `validate(path)` returns a `ValidationReport` listing every defect it finds and
keeps going after the first; it raises (`CkptError`) only for bad arguments (a PATH that
does not exist, a `config` or manifest that cannot be read). It never prints and never
writes into the checkpoint, except the manifest that `write_manifest` asks for.

Checks, in order (each finding carries a stable code from `ckpt_tools.findings.CODES`):

1. structure, headers only: every shard's header per the safetensors spec; the index and the
   shards both ways (every indexed tensor is in its shard, every shard tensor is indexed,
   no tensor in two shards, no listed shard absent, `metadata.total_size` = the sum of the
   tensor bytes); shard names that escape the directory; unreferenced `*.safetensors`.
2. FP8 pairing, config-free: every FP8 tensor has an F32 `<name>_scale_inv` of
   ceil(rows/block) x ceil(cols/block); no scale without an FP8 weight.
3. the config's tensor plan, in the layout found (`detect_layout`: FP8 when FP8 tensors
   outnumber the other matrices, so a half-converted checkpoint is judged by its majority):
   missing, unexpected, shape, dtype; a whole MTP layer missing or undeclared is one finding.
   Dtype policy: a planned F8_E4M3 weight must be F8_E4M3. A planned BF16 or F32 tensor
   may be stored as any of BF16/F16/F32 (loaders cast on load), which is a warning
   (`dtype-differs`); any other dtype is an error.
4. `deep`: every tensor read once in bounded chunks: NaN/Inf, FP8 NaN codes, scales finite
   and > 0, all-zero tensors.
5. checksums: sizes and SHA-256 against a manifest (`ckpt download` writes the same
   format); `write_manifest` records them, only when no error was found.

Layouts: HF (an index and shards, or one model.safetensors) and DeepSeek's model-parallel
layout (`model{i}-mp{N}.safetensors`, no index): every rank file is checked against its
share of the plan from `mp_layout.MpLayout`. Another layout plugs in the same way: build
`_Inventory`s from its headers and call `_check_plan` with name -> `Expect` maps.
"""

from __future__ import annotations

import gc
import json
import os
import re
import struct
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal, NamedTuple

from .config import DeepseekV2Config, DeepseekV3Config, read_config_file
from .config_v4 import DeepseekV4Config
from .dtypes import FP8_DTYPES
from .errors import CkptError, ConfigError, FormatError
from .findings import CODES, Check, Finding, Findings, ValidationReport
from .index import INDEX_FILE, MP_FILE_GLOB, SINGLE_FILE, read_index
from .manifest import MANIFEST_FILE, Manifest, read_manifest
from .parallel import ExecutorName, NodeWork, merge_nodes
from .progress import Progress
from .safe_paths import safe_member
from .safetensors_io import MAX_HEADER_BYTES, SafetensorsHeader, TensorEntry, read_header
from .sources import CONFIG_FILE, resolve_config
from .tensor_plan import DEFAULT_BLOCK, LAYER_PREFIX, SCALE_SUFFIX, TensorPlan, scale_shape
from .validate_v4 import check_v4, looks_v4

__all__ = ["CODES", "Finding", "ValidationReport", "detect_layout", "expected_tensors", "validate"]

Config = DeepseekV2Config | DeepseekV3Config
FLOAT_DTYPES = frozenset({"BF16", "F16", "F32"})  # what a loader casts between on load


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The header-only checks make ~500k small acyclic objects for V3; the collections they
    trigger cost about a third of the time and can never free anything."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


# -- 1. structure ------------------------------------------------------------------------
@dataclass
class _Inventory:
    """The tensors found, from headers only."""

    root: Path
    shards: list[str] = field(default_factory=list)  # files whose header parsed
    entries: dict[str, TensorEntry] = field(default_factory=dict)  # first occurrence
    shard_of: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # indexed, shard unreadable
    tensor_bytes: int = 0

    @cached_property
    def fp8(self) -> list[str]:
        return [n for n, e in self.entries.items() if e.dtype in FP8_DTYPES]

    @cached_property
    def scales(self) -> set[str]:
        return {n for n in self.entries if n.endswith(SCALE_SUFFIX)}


def _relative(message: str, path: Path, name: str) -> str:
    """Messages from the core name absolute paths; findings name files relative to root."""
    return name + message[len(str(path)):] if message.startswith(str(path)) else message


def _looks_truncated(path: Path) -> bool:
    """After a header error: is the file shorter than its own header says it is?"""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 8:
                return True
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > MAX_HEADER_BYTES:
                return False
            if 8 + n > size:
                return True
            doc = json.loads(fh.read(n))
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict):
        return False
    ends = [off[1] for v in doc.values() if isinstance(v, dict)
            and isinstance(off := v.get("data_offsets"), list) and len(off) == 2
            and isinstance(off[1], int)]
    return bool(ends) and 8 + n + max(ends) > size


def _read_headers(root: Path, names: list[str], f: Findings) -> dict[str, SafetensorsHeader]:
    headers = {}
    for name in names:
        path = root / name
        try:
            h = read_header(path)
        except FormatError as e:
            code = "shard-truncated" if _looks_truncated(path) else "header-invalid"
            f.add(code, _relative(str(e), path, name), file=name)
            continue
        headers[name] = h
        fmt = (h.metadata or {}).get("format")
        if fmt != "pt":
            why = ("older transformers fail without it" if fmt is None
                   else "transformers refuses formats other than pt/tf/flax/mlx")
            f.add("shard-metadata", f"{name}: __metadata__ format is {json.dumps(fmt)}, "
                  f"expected \"pt\" ({why})", file=name, expected="pt", found=fmt)
    return headers


def _structure(root: Path, single: str | None, f: Findings) -> _Inventory:
    inv = _Inventory(root)
    index = None
    on_disk = [single] if single else sorted(
        p.name for p in root.glob("*.safetensors") if p.is_file())
    if single is None and (root / INDEX_FILE).is_file():
        try:
            index = read_index(root / INDEX_FILE)
        except FormatError as e:
            f.add("index-invalid", _relative(str(e), root / INDEX_FILE, INDEX_FILE),
                  file=INDEX_FILE)
    if single:
        listed = [single]
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
            f.add("shard-path-unsafe", _relative(str(e), root, INDEX_FILE), file=name,
                  found=name)
            continue
        if not path.is_file():
            f.add("shard-missing", f"{name}: listed in {INDEX_FILE} for {per_shard[name]:,} "
                  f"tensor(s) but absent", file=name)
            continue
        readable.append(name)
    if index is not None:
        listed_set = set(listed)
        for name in on_disk:
            if name not in listed_set:
                f.add("shard-unreferenced", f"{name}: not listed in {INDEX_FILE}; loaders that "
                      f"glob *.safetensors would read it", file=name)

    headers = _read_headers(root, readable, f)
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
        return inv

    weight_map, shard_of = index.weight_map, inv.shard_of
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
        f.add("tensor-not-indexed", f"{shard_of[name]}: tensor '{name}' is not listed in "
              f"{INDEX_FILE}", file=shard_of[name], tensor=name)
    if index.total_size is None:
        f.add("total-size-missing", f"{INDEX_FILE}: no metadata.total_size", file=INDEX_FILE)
    elif len(headers) == len(listed) and not duplicates and index.total_size != inv.tensor_bytes:
        f.add("total-size-mismatch", f"{INDEX_FILE}: metadata.total_size is "
              f"{index.total_size:,}, the shards' tensors add up to {inv.tensor_bytes:,} bytes",
              file=INDEX_FILE, expected=inv.tensor_bytes, found=index.total_size)
    return inv


# -- 2. FP8 pairing ----------------------------------------------------------------------
def _check_pairing(inv: _Inventory, block: tuple[int, int], f: Findings) -> None:
    entries, where, scales = inv.entries, inv.shard_of, inv.scales
    pairs = {n + SCALE_SUFFIX: n for n in inv.fp8}
    for scale_name in sorted(pairs.keys() - scales - inv.unreadable.keys()):
        name = pairs[scale_name]
        f.add("scale-missing", f"{where[name]}: FP8 tensor '{name}' has no '{scale_name}'",
              file=where[name], tensor=name, expected=scale_name)
    for name in sorted(scales - pairs.keys()):
        weight = name.removesuffix(SCALE_SUFFIX)
        if weight in inv.unreadable:
            continue
        w = entries.get(weight)
        what = "absent" if w is None else f"stored as {w.dtype}, not FP8"
        f.add("scale-orphan", f"{where[name]}: tensor '{name}': its weight '{weight}' is "
              f"{what}", file=where[name], tensor=name, found=what)
    # a few distinct weight shapes: their scale shapes first, then one comprehension
    want = {shape: scale_shape(shape, block) if len(shape) == 2 else None
            for shape in {entries[n].shape for n in pairs.values()}}
    for scale_name in [sn for sn, n in pairs.items() if (s := entries.get(sn)) is not None
                       and (s.dtype != "F32" or s.shape != want[entries[n].shape])]:
        scale, shard = entries[scale_name], where[scale_name]
        shape = entries[pairs[scale_name]].shape
        if scale.dtype != "F32":
            f.add("scale-dtype", f"{shard}: tensor '{scale_name}': expected F32, found "
                  f"{scale.dtype}", file=shard, tensor=scale_name, expected="F32",
                  found=scale.dtype)
        if scale.shape != want[shape]:
            need = list(want[shape]) if want[shape] else f"a 2-D weight (found {list(shape)})"
            f.add("scale-shape", f"{shard}: tensor '{scale_name}': expected {need} for weight "
                  f"{list(shape)} in {block[0]}x{block[1]} blocks, found {list(scale.shape)}",
                  file=shard, tensor=scale_name, expected=want[shape], found=scale.shape)


# -- 3. config and tensor plan -----------------------------------------------------------
class Expect(NamedTuple):
    """What the plan says about one tensor."""

    shape: tuple[int, ...]
    dtype: str
    mtp_layer: int | None  # the MTP layer it belongs to, if any


def _load_config(root: Path, config, f: Findings) -> tuple[Config | None, str | None, bool]:
    """(config, where it came from, whether it is the checkpoint's own config.json)."""
    if isinstance(config, (DeepseekV2Config, DeepseekV3Config, DeepseekV4Config)):
        return config, "given", False
    if config is not None:
        src = resolve_config(config, lenient=True)  # a bad --config is the caller's error
        f.judge_config(src.config.reading, src.label)
        return src.config, src.label, False
    path = root / CONFIG_FILE
    if not path.is_file():
        f.add("config-missing", f"{root.name}: no {CONFIG_FILE}; tensor plan checks skipped "
              f"(pass --config to check against one)", file=CONFIG_FILE)
        return None, None, False
    try:
        cfg = read_config_file(path, lenient=True)
    except ConfigError as e:
        f.add("config-invalid", _relative(str(e), path, CONFIG_FILE), file=CONFIG_FILE)
        return None, None, False
    f.judge_config(cfg.reading, CONFIG_FILE)
    return cfg, CONFIG_FILE, True


def expected_tensors(plan: TensorPlan) -> dict[str, Expect]:
    """Every non-scale tensor of the plan (scales are checked by pairing), from its groups:
    V3's 92k names cost ~60 ms this way against ~300 ms for `plan.specs`."""
    out: dict[str, Expect] = {}
    for g in plan.groups:
        if g.scale_of_family is None:
            out.update(dict.fromkeys(g.names, Expect(g.shape, g.dtype, g.layer if g.mtp else None)))
    return out


_LAYER_RE = re.compile(re.escape(LAYER_PREFIX).replace(r"\{L\}", r"(\d+)"))


def _check_plan(expected: dict[str, Expect], inv: _Inventory, mtp_layers: range,
                f: Findings, *, file: str | None = None, prefix: str = "") -> None:
    """Compare name -> (shape, dtype) maps; whole MTP layers are reported once. The clean
    path is set operations and one comprehension: V3 has 92k names."""
    entries, where = inv.entries, inv.shard_of
    for name in [n for n, x in expected.items() if (e := entries.get(n)) is not None
                 and (e.shape != x.shape or e.dtype != x.dtype)]:
        x, e, shard = expected[name], entries[name], where[name]
        if e.shape != x.shape:
            f.add("shape-mismatch", f"{shard}: tensor '{name}': expected shape {list(x.shape)}, "
                  f"found {list(e.shape)}", file=shard, tensor=name, expected=x.shape,
                  found=e.shape)
        if e.dtype != x.dtype:
            loose = x.dtype in FLOAT_DTYPES and e.dtype in FLOAT_DTYPES
            f.add("dtype-differs" if loose else "dtype-mismatch",
                  f"{shard}: tensor '{name}': expected {x.dtype}, found {e.dtype}", file=shard,
                  tensor=name, expected=x.dtype, found=e.dtype)

    absent = expected.keys() - entries.keys() - inv.unreadable.keys()
    by_layer: dict[int | None, list[str]] = defaultdict(list)
    for name in [n for n in expected if n in absent] if absent else []:  # in plan order
        by_layer[expected[name].mtp_layer].append(name)
    for layer, names in by_layer.items():
        if layer is not None and len(names) == sum(x.mtp_layer == layer for x in expected.values()):
            f.add("mtp-missing", f"MTP layer {layer} ({len(names):,} tensors) is absent but the "
                  f"config declares num_nextn_predict_layers={len(mtp_layers)}; set it to "
                  f"{layer - mtp_layers.start} or add the layer",
                  tensor=LAYER_PREFIX.format(L=layer),
                  expected=f"{len(names)} tensors", found="absent")
            continue
        where_, nowhere = (f"{file}: ", "absent") if file else ("", "found in no shard")
        for name in names:
            x = expected[name]
            f.add("tensor-missing", f"{where_}tensor '{name}': expected {x.dtype} "
                  f"{list(x.shape)}, {nowhere}", file=file, tensor=name,
                  expected=f"{x.dtype} {list(x.shape)}")

    # scales are _check_pairing's; what is left is usually nothing
    extra = (entries.keys() - expected.keys() - inv.scales) | (inv.unreadable.keys()
                                                               - expected.keys())
    extra = {n for n in extra if not n.endswith(SCALE_SUFFIX)}
    if prefix:  # a wrapper: its other towers are outside the language model's plan
        towers: dict[str, int] = defaultdict(int)
        for name in [n for n in extra if not n.startswith(prefix)]:
            towers[name.partition(".")[0] + "."] += 1
            extra.discard(name)
        for tower, count in sorted(towers.items()):
            f.add("tensor-outside-plan", f"{count:,} tensors under '{tower}' belong to another "
                  f"tower of the wrapped model (the plan covers '{prefix}')", tensor=tower,
                  found=f"{count} tensors")
    undeclared: dict[int, list[str]] = defaultdict(list)
    for name in [n for n in (*entries, *inv.unreadable) if n in extra] if extra else []:
        m = _LAYER_RE.match(name)
        if m and int(m[1]) >= mtp_layers.start and int(m[1]) not in mtp_layers:
            undeclared[int(m[1])].append(name)
            continue
        shard = where.get(name) or inv.unreadable[name]
        f.add("tensor-unexpected", f"{shard}: tensor '{name}' is not in the tensor plan of this "
              f"config", file=shard, tensor=name)
    for layer, names in undeclared.items():
        f.add("mtp-unexpected", f"{len(names):,} tensors of MTP layer {layer} are present but the "
              f"config declares num_nextn_predict_layers={len(mtp_layers)}",
              tensor=LAYER_PREFIX.format(L=layer), found=f"{len(names)} tensors")


def _check_config_layout(config: Config, layout: str, f: Findings) -> None:
    if config.is_fp8 and layout != "fp8":
        f.add("config-layout", f"{CONFIG_FILE}: has quantization_config (FP8) but the tensors "
              f"are BF16; remove quantization_config", file=CONFIG_FILE, expected="bf16 config",
              found="quantization_config")
    elif not config.is_fp8 and layout == "fp8":
        f.add("config-layout", f"{CONFIG_FILE}: tensors are FP8 but there is no "
              f"quantization_config", file=CONFIG_FILE, expected="quantization_config",
              found="none")


def detect_layout(entries: dict[str, TensorEntry]) -> Literal["bf16", "fp8"]:
    """FP8 when FP8 tensors outnumber the other 2-D float tensors (scales aside), so a
    half-converted checkpoint is checked against the layout most of it follows and only
    the odd tensors out are reported."""
    inv = _Inventory(Path(), entries=entries)
    return _majority(entries, len(inv.fp8), len(inv.scales))


def _majority(entries: dict[str, TensorEntry], fp8: int, scales: int) -> Literal["bf16", "fp8"]:
    if not fp8:
        return "bf16"
    if fp8 > len(entries) - fp8 - scales:  # decided without looking at shapes (the usual case)
        return "fp8"
    wide = len([n for n, e in entries.items() if len(e.shape) == 2
                and e.dtype in FLOAT_DTYPES and not n.endswith(SCALE_SUFFIX)])
    return "fp8" if fp8 > wide else "bf16"


# -- 4. deep: `value_scan.scan_shards`; 5. checksums ------------------------------------
def _inside(root: Path, path: Path | None) -> str | None:
    """`path` relative to `root` when it is inside (then it is no checkpoint file)."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix() if path else None
    except ValueError:
        return None


def _checksums(root: Path, single: str | None, manifest: Manifest | None,
               manifest_path: Path | None, target: Path | None, f: Findings,
               run: dict) -> str | None:
    """Check against `manifest`, then record into `target`; the path written, if any.
    `run`: how to hash (progress, workers, executor, nodes)."""
    from .checksums import check_files, checkpoint_files, record  # only when asked: hashing
    skip = {MANIFEST_FILE, _inside(root, target), _inside(root, manifest_path)} - {None}
    files = [single] if single else checkpoint_files(root, skip=frozenset(skip))
    known = {}
    if manifest is not None:
        problems, known = check_files(root, files, manifest, **run)
        for p in problems:
            f.add(p.code, p.message, file=p.path, expected=p.expected, found=p.found)
    if target is None:
        return None
    if f.errors:
        f.add("manifest-not-written", f"{target}: not written: {f.errors:,} error(s) found; a "
              f"manifest would record a broken checkpoint as good")
        return None
    record(root, target, files, known=known, **run)
    return str(target)


# -- the two layouts ----------------------------------------------------------------------
def _check_hf(root: Path, single: str | None, config, f: Findings):
    """HF layout: an index (or model.safetensors) and shards."""
    checks: list[Check] = ["structure", "pairing"]
    inv = _structure(root, single, f)
    if not inv.entries and not inv.unreadable and not f.errors:
        f.add("no-tensors", f"{root.name}: no tensor in any shard", file=single)
    cfg, cfg_source, own = _load_config(root, config, f)
    if cfg.model_type == "deepseek_v4" if cfg is not None else looks_v4(inv.entries):
        layout, checks = check_v4(root, inv, cfg, own, f, _check_plan, expected_tensors,
                                  _check_config_layout, Expect)
        return [inv], cfg_source, layout, checks
    layout = _majority(inv.entries, len(inv.fp8), len(inv.scales))
    qc = cfg.quantization_config if cfg else None
    _check_pairing(inv, tuple(qc.weight_block_size) if qc else DEFAULT_BLOCK, f)
    if cfg is not None:
        if own:
            _check_config_layout(cfg, layout, f)
        mtp = range(cfg.num_hidden_layers, cfg.num_hidden_layers + cfg.num_mtp_layers)
        plan = TensorPlan(cfg, layout)
        _check_plan(expected_tensors(plan), inv, mtp, f, prefix=plan.prefix)
        checks.append("plan")
    return [inv], cfg_source, layout, checks


# mp_layout's scale naming, spelled here because mp_layout imports numpy and a header-only run
# must not (checked against mp_layout in _check_mp)
MP_SCALE_SUFFIX = ".scale"  # DeepSeek's demo names: "<module>.scale" beside "<module>.weight"


def _mp_rank_files(root: Path, f: Findings) -> tuple[int, dict[int, str]]:
    """(N, rank -> file) of DeepSeek's model-parallel layout (`model{i}-mp{N}.safetensors`);
    the N with a complete set wins, other files are reported."""
    files = sorted(root.glob(MP_FILE_GLOB))
    if not files:
        return 0, {}
    from .mp_layout import MP_FILE_RE, mp_file_name  # only for such directories

    sets: dict[int, dict[int, str]] = defaultdict(dict)
    for p in files:
        if m := MP_FILE_RE.fullmatch(p.name):
            sets[int(m[2])][int(m[1])] = p.name
    if not sets:
        return 0, {}
    n = max(sets, key=lambda k: (set(sets[k]) == set(range(k)), len(sets[k])))
    for other, files in sets.items():
        for rank, name in files.items():
            if other != n or rank >= n:
                f.add("shard-unreferenced", f"{name}: not a rank of the {n}-way layout that "
                      f"DeepSeek's generate.py would load", file=name)
    for rank in range(n):
        if rank not in sets[n]:
            f.add("shard-missing", f"{mp_file_name(rank, n)}: rank {rank} of the {n}-way "
                  f"layout is absent", file=mp_file_name(rank, n))
    return n, {r: name for r, name in sorted(sets[n].items()) if r < n}


def _check_mp(root: Path, n: int, ranks: dict[int, str], config, f: Findings):
    """DeepSeek's model-parallel layout: each rank file against its share of the plan
    (`mp_layout.MpLayout`). The MTP layer is expected only when present (convert.py drops
    it); FP8 scales are named `.scale` and checked as planned tensors."""
    from . import mp_layout
    from .mp_layout import MpLayout

    assert mp_layout.PARAMS["weight" + SCALE_SUFFIX] == MP_SCALE_SUFFIX[1:]  # one naming
    checks: list[Check] = ["structure"]
    headers = _read_headers(root, list(ranks.values()), f)
    invs: dict[int, _Inventory] = {}
    for rank, name in ranks.items():
        if (h := headers.get(name)) is not None:
            invs[rank] = _Inventory(root, [name], dict(h.entries), dict.fromkeys(h.entries, name),
                                    tensor_bytes=h.file_size - h.data_offset)
    cfg, cfg_source, own = _load_config(root, config, f)
    first = next(iter(invs.values()), _Inventory(root)).entries
    layout = "fp8" if any(n.endswith(MP_SCALE_SUFFIX) for n in first) else "bf16"
    if cfg is None or not invs:
        return list(invs.values()), cfg_source, layout, checks
    if own:
        _check_config_layout(cfg, layout, f)
    if cfg.model_type == "deepseek_v4":
        return list(invs.values()), cfg_source, layout, _check_mp_v4(cfg, n, invs, ranks, f)
    full = TensorPlan(cfg, layout)
    has_mtp = any(MpLayout.mp_name(s) in first for s in full.specs if s.mtp)
    try:
        mp = MpLayout(full if has_mtp else TensorPlan(cfg, layout, include_mtp=False),
                      n, keep_mtp=True)
    except CkptError as e:
        f.add("mp-split-invalid", str(e))
        return list(invs.values()), cfg_source, layout, checks
    for rank, inv in invs.items():
        expected = {p.name: Expect(p.shape, p.dtype, None) for p in mp.ranks[rank]}
        _check_plan(expected, inv, range(0), f, file=ranks[rank])
    return list(invs.values()), cfg_source, layout, [*checks, "plan"]


def _check_mp_v4(cfg, n: int, invs: dict, ranks: dict[int, str], f: Findings) -> list[Check]:
    """DeepSeek-V4 rank files against DeepSeek's V4 convert.py rules (mp_v4)."""
    from .mp_v4 import check_blocks, rank_pieces
    from .tensor_plan_v4 import V4TensorPlan
    from .validate_v4 import detect_layout

    first = next(iter(invs.values())).entries
    experts = "fp4" if any(e.dtype == "I8" for e in first.values()) else detect_layout(first)[1]
    plan = V4TensorPlan(cfg, "fp8", expert_dtype=experts)
    try:
        check_blocks(plan, n)
        pieces = rank_pieces(plan, n)
    except CkptError as e:
        f.add("mp-split-invalid", str(e))
        return ["structure"]
    for rank, inv in invs.items():
        expected = {p.name: Expect(p.shape, p.dtype, None) for p in pieces[rank]}
        inv.scales = set()  # V4 scales are planned tensors here, checked by the plan
        _check_plan(expected, inv, range(0), f, file=ranks[rank])
    return ["structure", "plan"]


# -- the entry point ------------------------------------------------------------------------
def validate(path: str | Path, *, config: str | Path | Config | None = None, deep: bool = False,
             checksums: str | Path | None = None, write_manifest: bool | str | Path = False,
             progress: Progress | None = None, workers: int | None = None,
             executor: ExecutorName = "local") -> ValidationReport:
    """Check a checkpoint directory (or one .safetensors file) and report every finding.

    Args:
        path: a checkpoint directory (HF layout, or DeepSeek's model-parallel layout), its
            index, or a single .safetensors file.
        config: what to check the tensors against (a preset name, a config.json, a checkpoint
            directory or a parsed config); default: PATH/config.json.
        deep: also read every tensor once (NaN/Inf, FP8 NaN codes, scales, all-zero).
        checksums: a manifest (`ckpt-manifest.json` format) to check sizes and SHA-256 against.
        write_manifest: True writes PATH/ckpt-manifest.json, a path writes there; only when
            no error was found. The one write into the checkpoint, and only on request.
        progress: byte progress for the deep scan and hashing (e.g. the CLI's stderr bar).
        workers: processes for the deep scan and hashing (default: all cores when over 1 GiB).
        executor: "local" (worker processes here) or "ray" (the deep scan and hashing as
            tasks on the Ray cluster at RAY_ADDRESS, else a local Ray).

    Returns:
        The findings, with the checks that ran.

    Raises:
        FormatError: PATH does not exist or is neither a directory nor a .safetensors file;
            the checksums manifest cannot be read.
        ConfigError: `config` names no preset, readable config.json or checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        root, single = path, None
    elif path.is_file() and path.suffix == ".safetensors":
        root, single = path.parent, path.name
    elif path.is_file() and path.name == INDEX_FILE:
        root, single = path.parent, None
    elif path.exists():
        raise FormatError(f"{path}: not a checkpoint directory, index or .safetensors file")
    else:
        raise FormatError(f"{path}: no such file or directory")
    manifest = read_manifest(checksums) if checksums is not None else None

    f = Findings()
    nodes: list[NodeWork] = []  # where the deep scan's and hashing's jobs ran
    with _gc_paused():
        hf = single or (root / INDEX_FILE).exists() or (root / SINGLE_FILE).exists()
        n, ranks = (0, {}) if hf else _mp_rank_files(root, f)
        if n:
            invs, cfg_source, layout, checks = _check_mp(root, n, ranks, config, f)
        else:
            invs, cfg_source, layout, checks = _check_hf(root, single, config, f)
    if deep:
        from .value_scan import scan_shards  # only when asked: reads every byte

        by_shard: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for inv in invs:
            for name, shard in inv.shard_of.items():
                by_shard[shard].append((name, inv.entries[name].nbytes))
        v4 = any(looks_v4(inv.entries) for inv in invs)  # V4 scales: "<module>.scale" too
        suffix = MP_SCALE_SUFFIX if n or v4 else SCALE_SUFFIX
        scan = scan_shards(root, by_shard, scale_suffix=suffix, progress=progress,
                           workers=workers, executor=executor)
        nodes += scan.nodes
        for code, file, tensor, expected, got, message in scan.results:
            f.add(code, message, file=file, tensor=tensor, expected=expected, found=got)
        checks.append("deep")

    written = None
    if manifest is not None or write_manifest:
        target = None
        if write_manifest:
            target = root / MANIFEST_FILE if write_manifest is True else Path(write_manifest)
        written = _checksums(root, single, manifest, Path(checksums) if checksums else None,
                             target, f, dict(progress=progress, workers=workers,
                                             executor=executor, nodes=nodes))
        checks += ["checksums"] if manifest is not None else []

    tensors = sum(len(inv.entries) for inv in invs)
    return ValidationReport(
        path=str(path), checks=checks, config=cfg_source, layout=layout if tensors else None,
        files=sum(len(inv.shards) for inv in invs), tensors=tensors,
        tensor_bytes=sum(inv.tensor_bytes for inv in invs), findings=f.items,
        manifest_written=written, nodes=merge_nodes(nodes))
