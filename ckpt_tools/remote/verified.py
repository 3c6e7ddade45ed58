"""What a writer reads from the Hub is checked against the Hub's LFS SHA-256 before use.

A writer (upcast, quantize, reshard) reads every byte of its source, but in ranges, out of
order and from several processes at once, while SHA-256 can only be computed over a file's
bytes in order, in one place. So each LFS file of a remote source is streamed once, in order,
through a fixed buffer (`STREAM_BYTES`), hashed, and written to a local copy named by its
digest in `copies` (a directory inside the destination, `output.SOURCE_COPY_DIR`). Only a copy
whose digest equals the listed one is kept, and from then on the tree serves every read of
that file from it, in this process and in every worker (the directory travels with the tree's
description, `stores.TreeRef`). So the bytes a job reads are the bytes that were hashed.

A mismatch fails naming the file, the expected and the found digest before any job has read
that file: nothing derived from it is written, and nothing journaled for a rerun to resume.
A kill keeps the finished copies (content-addressed: a copy is valid for any run that lists
that digest), so the rerun fetches nothing twice; the directory is removed when the run ends
(`remote.output.open_output`).

Cost: one sequential download per file instead of ranged reads, and local disk for the
source's LFS files while the run lasts. `CKPT_VERIFY_READS=0` turns it off (ranged reads,
unchecked), for a machine without that disk and for measuring the cost (bench/verified_reads.py).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import FormatError
from .path import RemotePath

STREAM_BYTES = 8 << 20  # one ranged request per step, the only buffer
COPY_THREADS = 4  # files copied at once (each is one in-order stream)
VERIFY_ENV = "CKPT_VERIFY_READS"
CHECKSUM_MISMATCH = "checksum-mismatch"  # validate --checksums hub's finding code


def verification_on() -> bool:
    return os.environ.get(VERIFY_ENV, "1").strip().lower() not in ("0", "off", "no", "false")


def hashed_files(root: RemotePath) -> list[str]:
    """The files under `root` (a folder or one file) whose listing gives a SHA-256."""
    files = root.tree.files
    if root.rel in files:
        return [root.rel] if files[root.rel].sha256 else []
    prefix = root.rel + "/" if root.rel else ""
    return sorted(r for r, info in files.items() if r.startswith(prefix) and info.sha256)


def _copy_checked(root: RemotePath, rel: str, copies: Path) -> None:
    info = root.tree.files[rel]
    final = copies / info.sha256
    if final.is_file() and final.stat().st_size == info.size:
        return  # verified by an earlier run (the name is the digest it matched)
    partial = final.with_name(f"{info.sha256}.{os.getpid()}.partial")
    label = f"{root.tree.url.rstrip('/')}/{rel}"
    source = root.tree.open(rel)
    digest = hashlib.sha256()
    try:
        with open(partial, "wb") as out:
            for pos in range(0, info.size, STREAM_BYTES):
                chunk = source.read_exact(pos, min(STREAM_BYTES, info.size - pos))
                digest.update(chunk)
                out.write(chunk)
        found = digest.hexdigest()
        if found != info.sha256:
            error = FormatError(f"{label}: SHA-256 {found} differs from the Hub's {info.sha256}: "
                                f"the bytes served are not the file the Hub lists; nothing "
                                f"read from it was written [{CHECKSUM_MISMATCH}]")
            error.finding = CHECKSUM_MISMATCH
            raise error
        os.replace(partial, final)
    finally:
        source.close()
        partial.unlink(missing_ok=True)


def serve_checked_copies(roots: list[RemotePath], copies: Path) -> None:
    """Copy and check every hashed file under `roots` into `copies`, then serve their reads
    from there (`stop_serving_copies` undoes it).

    Raises:
        FormatError: a file's bytes differ from its listed SHA-256 [checksum-mismatch], or a
            read failed (naming the file and the byte range).
    """
    copies.mkdir(parents=True, exist_ok=True)
    todo = [(root, rel) for root in roots for rel in hashed_files(root)]
    if todo:
        with ThreadPoolExecutor(min(COPY_THREADS, len(todo))) as pool:
            for done in [pool.submit(_copy_checked, root, rel, copies) for root, rel in todo]:
                done.result()  # the first failure, in file order
    for root in roots:
        root.tree.checked_copies = str(copies)


def stop_serving_copies(roots: list[RemotePath]) -> None:
    for root in roots:
        root.tree.checked_copies = None
