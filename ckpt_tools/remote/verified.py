"""What a writer reads from the Hub is checked against the Hub's LFS SHA-256 before use.

A writer (upcast, quantize, reshard) reads every byte of its source, but in ranges, out of
order and from several processes at once, while SHA-256 can only be computed over a file's
bytes in order, in one place. So each LFS file of a remote source is streamed once, in order,
through a fixed buffer (`STREAM_BYTES`), hashed, and written to a local copy named by its
digest in `copies` (a directory inside the destination, `output.SOURCE_COPY_DIR`). From then
on the tree serves every read of a hashed file from its copy, in this process and in every
worker (the directory travels with the tree's description, `stores.TreeRef`), and a read
waits until the copy is checked (`wait_for_copy`). So the bytes a job reads are the bytes
that were hashed. The copies are made by background threads of the main process while the
jobs run (`CheckedCopies`): a job waits only for the files it reads, and the download
overlaps the conversion as the ranged reads did.

A mismatch fails naming the file, the expected and the found digest (`<digest>.failed` holds
the message for the jobs waiting on that file) before any job has read that file: nothing
derived from it is written, and nothing journaled for a rerun to resume. A kill keeps the
finished copies (content-addressed: a copy is valid for any run that lists that digest), so
the rerun fetches nothing twice; the directory is removed when the run ends
(`remote.output.open_output`).

Cost: local disk for the source's LFS files while the run lasts (ranged reads needed none).
`CKPT_VERIFY_READS=0` turns the check off (ranged reads, unchecked), for a machine without
that disk and for measuring the cost (bench/verified_reads.py).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CkptError, FormatError
from .path import RemotePath

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

STREAM_BYTES = 8 << 20  # one ranged request per step, the only buffer
COPY_THREADS = 4  # files copied at once (each is one in-order stream)
WAIT_SECONDS = 0.05  # how often a read waiting for its copy looks again
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


def _failure(copies: Path, sha256: str) -> Path:
    return copies / f"{sha256}.failed"


def _copy_checked(root: RemotePath, rel: str, copies: Path, cancel: threading.Event) -> None:
    info = root.tree.files[rel]
    final = copies / info.sha256
    if final.is_file() and final.stat().st_size == info.size:
        return  # verified by an earlier run (the name is the digest it matched)
    partial = final.with_name(f"{info.sha256}.{os.getpid()}.partial")
    label = f"{root.tree.url.rstrip('/')}/{rel}"
    source = root.tree.open_store(rel)
    digest = hashlib.sha256()
    try:
        with open(partial, "wb") as out:
            for pos in range(0, info.size, STREAM_BYTES):
                if cancel.is_set():  # the run stopped: whoever waits for it must too
                    raise CkptError(f"{label}: not checked: the run stopped before its copy "
                                    f"was complete")
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


def wait_for_copy(copies: Path, sha256: str, label: str) -> Path:
    """The checked copy of a file, once it is (raises the copy's failure instead)."""
    final, failed = copies / sha256, _failure(copies, sha256)
    while not final.is_file():
        if failed.is_file():
            error = FormatError(failed.read_text())
            error.finding = CHECKSUM_MISMATCH if CHECKSUM_MISMATCH in str(error) else None
            raise error
        if not copies.is_dir():
            raise FormatError(f"{label}: its checked copy in {copies} disappeared during the run")
        time.sleep(WAIT_SECONDS)
    return final


class CheckedCopies:
    """Background threads copying and checking every hashed file under `roots` into
    `copies`, in file order; the trees serve reads from there from `start` to `stop`.

    The first failure cancels the other copies (each then fails its waiting reads too).
    `stop` cancels what still runs when the run failed, and raises the first failure when
    the run succeeded (it read no failed file, but the source is not what the Hub lists)."""

    def __init__(self, roots: list[RemotePath], copies: Path):
        self.roots, self.copies = roots, copies
        self._cancel = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list = []
        self._first_error: BaseException | None = None

    def start(self) -> None:
        self.copies.mkdir(parents=True, exist_ok=True)
        for stale in self.copies.glob("*.failed"):
            stale.unlink()
        by_digest = {root.tree.files[rel].sha256: (root, rel)  # one copy serves equal files
                     for root in self.roots for rel in hashed_files(root)}
        todo = sorted(by_digest.values(), key=lambda p: p[1])
        from concurrent.futures import ThreadPoolExecutor  # only writers reading hf:// copy

        self._pool = ThreadPoolExecutor(max(1, min(COPY_THREADS, len(todo))))
        self._futures = [self._pool.submit(self._one, root, rel) for root, rel in todo]
        for root in self.roots:
            root.tree.checked_copies = str(self.copies)

    def _one(self, root: RemotePath, rel: str) -> None:
        try:
            _copy_checked(root, rel, self.copies, self._cancel)
        except BaseException as e:
            if not self._cancel.is_set():  # the first failure, not a cancelled copy
                self._first_error = e
                self._cancel.set()  # the run fails: the other downloads would be wasted
            failed = _failure(self.copies, root.tree.files[rel].sha256)
            failed.write_text(str(e) if isinstance(e, CkptError)  # for the jobs waiting
                              else f"{root.tree.url}/{rel}: {type(e).__name__}: {e}")

    def stop(self, failed: bool) -> None:
        if failed:
            self._cancel.set()
        self._pool.shutdown(wait=True)
        for root in self.roots:
            root.tree.checked_copies = None
        if not failed and self._first_error is not None:
            raise self._first_error
