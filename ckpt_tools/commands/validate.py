"""`ckpt validate`: everything wrong with a checkpoint, found before anyone loads it.

Contract: `validate(path)` returns a `ValidationReport` listing every defect it finds and
keeps going after the first; it raises (`CkptError`) only for bad arguments (a PATH that
does not exist, a `config` or manifest that cannot be read). It never prints and never
writes into the checkpoint, except the manifest that `write_manifest` asks for.

Checks, in order (each finding carries a stable code from `ckpt_tools.inventory.findings.CODES`):

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
   and > 0 (and exact powers of two when the config says `scale_fmt: ue8m0`, as V3.1 and
   V3.2 do), all-zero tensors.
5. checksums: sizes and SHA-256 against a manifest (`ckpt download` writes the same
   format); `write_manifest` records them, only when no error was found.

Checks 1-3 are `ckpt_tools.inventory.inspect`'s, the very judgement every writer asks for (see
there for the layouts: HF, one shard of a set, DeepSeek's model-parallel directories).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .checksums import check_files, checkpoint_files, record
from .hub_checksums import check_hub_checksums
from ..configs.parse import Config
from ..errors import CkptError
from ..families import family_of, family_of_tensors
from ..inventory.findings import CODES, Finding, Findings, ValidationReport
from ..io.index import MP_SCALE_SUFFIX
from ..inventory.inspect import inspect
from ..io.manifest import MANIFEST_FILE, Manifest, read_manifest
from ..execution.parallel import ExecutorName, NodeWork, merge_nodes
from ..inventory.plan_checks import detect_layout, expected_tensors
from ..execution.progress import Progress
from ..remote.path import RemotePath
from ..io.source import Source
from ..inventory.tensor_plan import SCALE_SUFFIX

__all__ = ["CODES", "Finding", "ValidationReport", "detect_layout", "expected_tensors", "validate"]

HUB = "hub"  # checksums="hub": compare each file's SHA-256 with the Hub's LFS SHA-256


# -- 5. checksums (4. deep is `value_scan.scan_shards`) ----------------------------------
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


# -- the entry point ------------------------------------------------------------------------
def validate(path: str | Path, *, config: str | Path | Config | None = None, deep: bool = False,
             checksums: str | Path | None = None, write_manifest: bool | str | Path = False,
             progress: Progress | None = None, workers: int | None = None,
             strict: bool = False, executor: ExecutorName = "local") -> ValidationReport:
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
        strict: warnings make `report.ok` false too.
        executor: "local" (worker processes here) or "ray" (the deep scan and hashing as
            tasks on the Ray cluster at RAY_ADDRESS, else a local Ray).

    Returns:
        The findings, with the checks that ran.

    Raises:
        FormatError: PATH does not exist or is neither a directory nor a .safetensors file;
            the checksums manifest cannot be read.
        ConfigError: `config` names no preset, readable config.json or checkpoint.
    """
    source = Source.open(path)  # the one place validate resolves `path`
    path = source.path
    if isinstance(path, RemotePath) and (deep or write_manifest or checksums not in (None, HUB)):
        raise CkptError(f"{path}: deep scans and manifests read or write every byte; on a "
                        f"remote source check the Hub's checksums, or download it first")
    if checksums == HUB and not isinstance(path, RemotePath):
        raise CkptError(f"{path}: checksums from the Hub need a remote source (hf://...)")
    manifest = read_manifest(checksums) if checksums not in (None, HUB) else None
    found = inspect(source, config=config)
    root, single, invs, checks = found.root, found.single, found.inventories, found.checks
    f = Findings()
    nodes: list[NodeWork] = []  # where the deep scan's and hashing's jobs ran
    f.items = list(found.findings)
    if deep:
        from .value_scan import scan_shards  # only when asked: reads every byte

        by_shard: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for inv in invs:
            for name, shard in inv.shard_of.items():
                by_shard[shard].append((name, inv.entries[name].nbytes))
        # the scale names the tensors show (DeepSeek-V4's "<module>.scale"; its HF-named
        # upcast has none, and there `.scale` names hyper-connection parameters)
        shown = {family_of_tensors(inv.entries).scale_suffix for inv in invs} - {SCALE_SUFFIX}
        suffix = MP_SCALE_SUFFIX if found.kind == "mp" else next(iter(shown), SCALE_SUFFIX)
        qc = found.config.quantization_config if found.config is not None else None
        if found.config is not None and family_of(found.config).scale_dtype != "F32":
            qc = None  # E8M0 scales are powers of two by construction
        limits = {}
        for inv in invs if suffix == MP_SCALE_SUFFIX else ():
            family = family_of_tensors(inv.entries)  # E8M0 scales: bytes that stay finite
            if family.has_hook("scale_byte_limits"):
                limits |= family.hook("scale_byte_limits")(inv.entries)
        scan = scan_shards(found.source, root, by_shard, scale_suffix=suffix,
                           progress=progress, workers=workers, executor=executor,
                           power_of_two_scales=qc is not None and qc.scale_fmt == "ue8m0",
                           scale_byte_limits=limits)
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
    if checksums == HUB:
        for p in check_hub_checksums(path if single is None else root, [single] if single
                                     else None, progress=progress):
            f.add(p.code, p.message, file=p.path, expected=p.expected, found=p.found)
        checks.append("checksums")

    tensors = sum(len(inv.entries) for inv in invs)
    return ValidationReport(
        path=str(path), checks=checks, config=found.config_source,
        layout=found.layout if tensors else None,
        files=sum(len(inv.shards) for inv in invs), tensors=tensors,
        tensor_bytes=sum(inv.tensor_bytes for inv in invs), findings=f.items,
        manifest_written=written, strict=strict, nodes=merge_nodes(nodes))
