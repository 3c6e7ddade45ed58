"""`ckpt validate hf://... --checksums hub`: every byte against the Hub's own hashes.

Each file is streamed once by range (a fixed buffer, nothing stored) and hashed: an LFS file
(the shards) with SHA-256, compared with the LFS object id the Hub lists; a file kept in git
(config.json, the index) with git's blob SHA-1 ("blob <size>\\0" + content), compared with
its blob id. The listing the comparison uses is the one the source was opened with, so the
hashes and the bytes belong to the same commit.
"""

from __future__ import annotations

import hashlib

from .checksums import Problem
from ..errors import CkptError
from ..execution.progress import Progress
from ..remote.path import RemotePath

STREAM_BYTES = 16 << 20


def _digest(path: RemotePath, lfs: bool, progress: Progress | None) -> str:
    size = path.info().size
    h = hashlib.sha256() if lfs else hashlib.sha1(b"blob %d\0" % size)
    source = path.open_source()
    try:
        for pos in range(0, size, STREAM_BYTES):
            chunk = source.read_exact(pos, min(STREAM_BYTES, size - pos))
            h.update(chunk)
            if progress is not None:
                progress.advance(len(chunk))
    finally:
        source.close()
    return h.hexdigest()


def check_hub_checksums(root: RemotePath, files: list[str] | None = None, *,
                        progress: Progress | None = None) -> list[Problem]:
    """Problems (`checksum-mismatch`) of `files` under `root` (default: every file).

    Raises:
        CkptError: the source is not on the Hub (no LFS hashes to compare with).
    """
    if not isinstance(root, RemotePath) or getattr(root.tree, "commit", None) is None:
        raise CkptError(f"{root}: checksums from the Hub need an hf:// source")
    names = files if files is not None else sorted(
        p.relative_to(root).as_posix() for p in _walk(root))
    if progress is not None:
        progress.start(sum((root / n).info().size for n in names), "hashing (remote)")
    problems = []
    for name in names:
        info = (root / name).info()
        lfs = info.sha256 is not None
        want = info.sha256 if lfs else info.identity
        if not want:
            continue
        got = _digest(root / name, lfs, progress)
        if got != want:
            what = "SHA-256" if lfs else "git blob id"
            problems.append(Problem("checksum-mismatch", name, want, got,
                                    f"{name}: {what} {got[:16]}... differs from the Hub's "
                                    f"{want[:16]}..."))
    if progress is not None:
        progress.finish()
    return problems


def _walk(root: RemotePath) -> list[RemotePath]:
    prefix = root.rel + "/" if root.rel else ""
    return [RemotePath(root.tree, f) for f in root.tree.files if f.startswith(prefix)]
