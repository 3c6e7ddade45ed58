"""Check a checkpoint directory against a manifest, and record one.

Sizes are compared first (free); only files of the right size are hashed, in worker
processes when there is enough to hash. Paths in a manifest must stay inside the directory.
`ckpt download` writes the same `Manifest` format.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from ..errors import FormatError
from ..io.manifest import Manifest, ManifestEntry, read_manifest, sha256_file, write_manifest
from ..execution.parallel import WORKER_MEMORY, ExecutorName, Job, NodeWork, run_jobs, workers_for
from ..execution.progress import Progress
from ..io.safe_paths import safe_member
from ..io.safetensors_io import PARTIAL_SUFFIX

Hashes = dict[str, tuple[int, str]]  # path -> (size, sha256)


class Problem(NamedTuple):
    code: str  # a `ckpt_tools.inventory.findings.CODES` key
    path: str
    expected: object
    found: object
    message: str


def checkpoint_files(root: Path, *, skip: frozenset[str] = frozenset()) -> list[str]:
    """Every file under `root` as a '/'-separated relative path, sorted. Skipped: hidden
    directories (.git, .cache/huggingface), `*.partial` files and the paths in `skip`."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root)
        for name in filenames:
            path = (rel / name).as_posix()
            if path not in skip and not name.endswith(PARTIAL_SUFFIX):
                out.append(path)
    return sorted(out)


def hash_files(root: Path, paths: list[str], *, progress: Progress | None = None,
               workers: int | None = None, executor: ExecutorName = "local",
               nodes: list[NodeWork] | None = None) -> Hashes:
    """SHA-256 of each file, one job per file (a job holds one read buffer); per-node
    totals are appended to `nodes` when given."""
    sizes = {p: (root / p).stat().st_size for p in paths}
    jobs = [Job(p, sizes[p], (str(root / p),), WORKER_MEMORY) for p in paths]
    ran = run_jobs(sha256_file, jobs, workers=workers_for(sum(sizes.values()), workers),
                   executor=executor, progress=progress, label="sha256")
    if nodes is not None:
        nodes += ran.nodes
    return {p: (sizes[p], d) for p, d in zip(paths, ran.results)}


def check_files(root: Path, files: list[str], manifest: Manifest, *,
                progress: Progress | None = None, workers: int | None = None,
                executor: ExecutorName = "local", nodes: list[NodeWork] | None = None
                ) -> tuple[list[Problem], Hashes]:
    """Every way `files` (under `root`) differ from `manifest`, and the hashes computed."""
    problems: list[Problem] = []
    to_hash: dict[str, ManifestEntry] = {}
    for entry in manifest.files:
        try:
            path = safe_member(root, entry.path, what="manifest path")
        except FormatError as e:
            problems.append(Problem("checksum-path-unsafe", entry.path, None, entry.path,
                                    str(e).removeprefix(f"{root}: ")))
            continue
        if not path.is_file():
            problems.append(Problem("checksum-file-missing", entry.path, entry.size, None,
                                    f"{entry.path}: listed in the manifest ({entry.size:,} "
                                    f"bytes) but absent"))
            continue
        size = path.stat().st_size
        if size != entry.size:
            problems.append(Problem("checksum-size-mismatch", entry.path, entry.size, size,
                                    f"{entry.path}: expected {entry.size:,} bytes, found {size:,}"))
            continue
        to_hash[entry.path] = entry
    hashed = hash_files(root, list(to_hash), progress=progress, workers=workers,
                        executor=executor, nodes=nodes)
    for path, entry in to_hash.items():
        digest = hashed[path][1]
        if digest != entry.sha256:
            problems.append(Problem("checksum-mismatch", path, entry.sha256, digest,
                                    f"{path}: SHA-256 {digest} differs from the manifest's "
                                    f"{entry.sha256}"))
    listed = {e.path for e in manifest.files}
    problems += [Problem("checksum-file-extra", p, None, None,
                         f"{p}: not listed in the manifest") for p in files if p not in listed]
    return problems, hashed


def record(root: Path, target: Path, files: list[str], *, known: Hashes | None = None,
           progress: Progress | None = None, workers: int | None = None,
           executor: ExecutorName = "local", nodes: list[NodeWork] | None = None) -> None:
    """Write a manifest of `files` to `target`, hashing only what `known` lacks. The origin
    (repo_id, revision) of a manifest already at `target` is kept."""
    known = known or {}
    stale = [p for p in files if p not in known or known[p][0] != (root / p).stat().st_size]
    hashed = {**known, **hash_files(root, stale, progress=progress, workers=workers,
                                    executor=executor, nodes=nodes)}
    repo_id = revision = None
    if target.is_file():
        try:
            previous = read_manifest(target)
            repo_id, revision = previous.repo_id, previous.revision
        except FormatError:
            pass
    entries = [ManifestEntry(path=p, size=hashed[p][0], sha256=hashed[p][1]) for p in files]
    write_manifest(target, Manifest(repo_id=repo_id, revision=revision, files=entries))
