"""Fetching a planned download and verifying every byte: each file's size, LFS files
against the Hub's SHA-256 and git-stored files against their git blob id. A file that fails
is moved aside (`.NAME.corrupt`, or dropped from the shared cache) so it never looks
complete; a stale local copy is fetched once more. Downloads run on threads (they wait on
the network) and stop at their next chunk on Ctrl-C.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ..io import hub
from ..errors import VerificationError
from ..io.manifest import sha256_file
from ..execution.progress import Progress, or_null
from ..results import Result

if TYPE_CHECKING:
    from .download_plan import DownloadPlan, PlannedFile


class FileResult(Result):
    path: str
    size: int
    check: Literal["lfs-sha256", "git-blob", "size"] = Field(
        description="What the bytes were checked against")
    status: Literal["verified", "corrupt"]
    sha256: str | None = None
    transferred: int = Field(description="Bytes received in this run (0: already complete)")
    detail: str | None = None
    moved_to: str | None = Field(None, description="Where a corrupt file was moved ('' = deleted)")



# -- fetching and verifying -----------------------------------------------------------------
class _LockedProgress:
    """Byte progress shared by download threads."""

    def __init__(self, progress: Progress):
        self._p, self._lock = progress, threading.Lock()

    def start(self, total: int, label: str) -> None:
        self._p.start(total, label)

    def advance(self, n: int) -> None:
        if n:
            with self._lock:
                self._p.advance(n)

    def finish(self) -> None:
        self._p.finish()


def git_blob_id(path: Path) -> str:
    """The git object id of a file (how the Hub identifies files stored in git)."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _move_aside(path: Path) -> str:
    """Make sure a bad file cannot pass for a complete one; returns where it went."""
    if path.is_symlink():  # the shared cache: drop link and blob, the next run fetches again
        blob = path.resolve()
        path.unlink()
        blob.unlink(missing_ok=True)
        return ""
    target = path.with_name(f".{path.name}.corrupt")
    os.replace(path, target)
    return str(target)


def _check_bytes(remote: hub.RemoteFile, path: Path, verify: bool,
                 advance: Callable[[int], None]) -> tuple[str, str | None, str | None]:
    """(check, sha256, problem) for one fetched file."""
    size = path.stat().st_size
    check = ("lfs-sha256" if remote.lfs else "git-blob" if remote.blob_id else "size") if verify \
        else "size"
    if size != remote.size:
        return check, None, f"expected {remote.size:,} bytes, found {size:,}"
    if not verify:
        return check, None, None
    digest = sha256_file(path, on_bytes=advance)
    if remote.lfs and digest != remote.sha256:
        return check, digest, f"SHA-256 {digest}, expected {remote.sha256} (the Hub's)"
    if not remote.lfs and remote.blob_id and (blob := git_blob_id(path)) != remote.blob_id:
        return check, digest, f"git blob id {blob}, expected {remote.blob_id} (the Hub's)"
    return check, digest, None


def verified_fetch(repo: hub.RemoteRepo, fetch: Callable[..., Path]) -> Callable[[str], Path]:
    """`fetch` for the files planning reads (config, index): verified before they are used."""
    remote = {f.path: f for f in repo.files}

    def get(path: str) -> Path:
        local = fetch(path)
        _, _, problem = _check_bytes(remote[path], local, True, lambda n: None)
        if problem:
            moved = _move_aside(local)
            raise VerificationError(f"{local}: {problem}; {where_moved(moved)}")
        return local

    return get


def where_moved(moved: str) -> str:
    return f"moved to {moved}" if moved else "deleted from the cache"


def _fetch_verified(f: PlannedFile, remote: hub.RemoteFile, fetch, verify: bool,
                    advance: Callable[[int], None], cancel: threading.Event) -> FileResult:
    transferred = 0

    def hashed(n: int) -> None:
        if cancel.is_set():  # do not finish hashing a 4 GB shard after Ctrl-C
            raise hub.Cancelled()
        advance(n)

    for attempt in range(2):
        got = 0

        def on_bytes(n: int) -> None:
            nonlocal got
            got += n
            advance(n)

        path = fetch(f.path, on_bytes=on_bytes, cancel=cancel, force=attempt > 0)
        transferred += got
        advance(f.size - got)  # bytes that needed no transfer count as done
        check, digest, problem = _check_bytes(remote, path, verify, hashed)
        if problem is None:
            return FileResult(path=f.path, size=f.size, check=check, status="verified",
                              sha256=digest, transferred=transferred)
        moved = _move_aside(path)
        if got:  # freshly received and still wrong: do not fetch it again
            break
        # a stale or damaged local copy: fetch once more from the Hub
    return FileResult(path=f.path, size=f.size, check=check, status="corrupt", sha256=digest,
                      transferred=transferred, detail=problem, moved_to=moved)


def fetch_all(plan: DownloadPlan, repo: hub.RemoteRepo, fetch, *, verify: bool, workers: int,
               progress: Progress | None) -> list[FileResult]:
    bar = _LockedProgress(or_null(progress))
    bar.start(plan.total_bytes * (2 if verify else 1), "download+verify" if verify else "download")
    cancel = threading.Event()
    remote = {f.path: f for f in repo.files}
    results: dict[str, FileResult] = {}
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ckpt-dl") as pool:
            futures = {pool.submit(_fetch_verified, f, remote[f.path], fetch, verify,
                                   bar.advance, cancel): f for f in plan.files}
            try:
                for fut in as_completed(futures):
                    results[futures[fut].path] = fut.result()
            except BaseException:
                cancel.set()  # running downloads stop at their next chunk
                for fut in futures:
                    fut.cancel()
                raise
    finally:
        bar.finish()
    return [results[f.path] for f in plan.files]

