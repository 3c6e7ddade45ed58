"""What a writer reads from the Hub is checked against the Hub's LFS SHA-256 before it counts.

A writer (upcast, quantize, reshard) reads every byte of its source, but in ranges, out of
order and from several processes at once, while SHA-256 can only be computed over a file's
bytes in order, in one place. Two ways, chosen per file when the run's jobs are known
(`remote.streamed.plan_streams`, called by `execution.parallel.run_jobs`):

- A file that exactly one job reads whole, in file order (upcast's and quantize's job per
  source shard: `Job.in_order`), is streamed by that job itself (`remote.streamed`): one
  in-order stream of ranged GETs, hashed as it passes, the bytes used being the bytes hashed;
  no copy on disk, no second reader, and the hash costs only SHA-256 on the worker that
  reads the bytes anyway. The job's result counts once the rest of the file is streamed and
  its digest matched (`await_checked_reads`, below).
- Any other (reshard's output files draw on several source files; a scale stored in
  another shard than its weight) is copied. Each is streamed once, in order,
through a fixed buffer (`STREAM_BYTES`), hashed, and written to a local copy in `copies` (a
directory inside the destination, `output.SOURCE_COPY_DIR`): `<sha256>.partial` while it is
written, renamed `<sha256>` once its digest matched. From then on the tree serves every read
of a hashed file from its copy, in this process and in every worker (the directory travels
with the tree's description, `stores.TreeRef`). The copies are made by background threads of
the main process while the jobs run (`CheckedCopies`), from when the jobs are planned, or a
file is first read outside them (a side file).

A job does not wait for a whole file's copy: a read of bytes [a, b) waits only until the copy
holds b bytes (`CopySource`), so the conversion follows the download closely. What waits for
the digest is what makes a result count, in one place for every writer: a file's rename to
its final name (`SafetensorsWriter.close`, `part_writer.commit`, side files) and a job's
return (`execution.job.timed_call`: the main process journals a file, or commits it from its
parts, only from returned jobs) first call `await_checked_reads`, which waits until every
copy this process read from has matched its digest, and every file it streamed was streamed
to its end and matched, and raises the mismatch otherwise. So a
byte that differs from the listing, even near the end of a large file whose beginning was
already converted, leaves nothing derived from it under a final name nor in the journal:
their `.partial` files are removed, and a rerun writes them again.

The copier also compares each copy's header bytes with those planning read
(`stores._Tree.header_bytes` notes their digest): a server that changed a header between
planning and copying fails naming the file before the copy serves a byte.

A mismatch fails naming the file, the expected and the found digest (`<digest>.failed` holds
the message for the jobs waiting on that file). A kill keeps the finished copies
(content-addressed: a copy is valid for any run that lists that digest), so the rerun fetches
nothing twice; it hashes each again (as `<sha256>.kept`, which no reader opens) before
trusting it: copies are not synced to disk (an fsync per file cost every run seconds of I/O
on the path to each digest), so a crash of the machine may leave one damaged under its
digest's name. Partial copies are removed when their copy fails or stops, and at the next
start; the directory is removed when the run ends (`remote.output.open_output`).

A read waiting for bytes has no timer of its own: the copier's every request has the remote
layer's connect and read timeouts and retries (`byte_source.remote_timeouts`), so a stalled
server fails the copy, and the copy's failure (naming the file) fails every read waiting on it.

Cost: local disk for the source's LFS files while the run lasts (ranged reads needed none).
`CKPT_VERIFY_READS=0` turns the check off (ranged reads, unchecked), for a machine without
that disk and for measuring the cost (bench/verified_reads.py).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CkptError, FormatError
from .byte_source import LocalSource
from .path import RemotePath

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

STREAM_BYTES = 8 << 20  # one ranged request per step, the only buffer
COPY_THREADS = 4  # files copied at once (each is one in-order stream)
WAIT_SECONDS = 0.02  # how often a read waiting for its copy looks again
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


def _partial(copies: Path, sha256: str) -> Path:
    return copies / f"{sha256}.partial"


def note_streamed(copies: Path, sha256: str) -> None:
    """A job streamed this file whole and its digest matched (`remote.streamed`): kept with
    the copies across a kill, so a resumed run that no longer reads it need not fetch it
    again to check it."""
    try:
        (copies / f"{sha256}.streamed").touch()
    except OSError:
        pass  # only costs a resumed run a second check


def streamed_before(copies: Path, sha256: str) -> bool:
    return (copies / f"{sha256}.streamed").is_file()


def _raise_failure(failed: Path) -> None:
    error = FormatError(failed.read_text())
    error.finding = CHECKSUM_MISMATCH if CHECKSUM_MISMATCH in str(error) else None
    raise error


# -- the copier (threads of the main process) ----------------------------------------------
class HeaderCheck:
    """Compares the first bytes of a stream with the header planning read (its length and
    SHA-256, `stores._Tree.planned_headers`), as they pass."""

    def __init__(self, label: str, planned: tuple[int, str] | None):
        self.label, self.planned = label, planned
        self._digest, self._seen = hashlib.sha256(), 0

    def feed(self, chunk: bytes | memoryview) -> None:
        if self.planned is None or self._seen >= self.planned[0]:
            return
        length, expected = self.planned
        take = chunk[:length - self._seen]
        self._digest.update(take)
        self._seen += len(take)
        if self._seen == length and self._digest.hexdigest() != expected:
            raise FormatError(f"{self.label}: its header bytes [0, {length}) differ from those "
                              f"read when the run was planned (SHA-256 "
                              f"{self._digest.hexdigest()}, planned {expected}): the server "
                              f"changed the file during the run; nothing read from it was "
                              f"written")


def _write_all(fd: int, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        view = view[os.write(fd, view):]


def _stopped(label: str) -> CkptError:
    return CkptError(f"{label}: not checked: the run stopped before its copy was complete")


def _kept(copies: Path, sha256: str) -> Path:
    return copies / f"{sha256}.kept"


def _rehash_kept(kept: Path, header: HeaderCheck, cancel: threading.Event, label: str) -> str:
    """SHA-256 of a copy an earlier run left (`CheckedCopies.start` named it `.kept`, which
    no reader opens): it was not synced to disk, so it is trusted again only if it still
    matches."""
    digest = hashlib.sha256()
    with open(kept, "rb", buffering=0) as f:
        while chunk := f.read(STREAM_BYTES):
            if cancel.is_set():
                raise _stopped(label)
            header.feed(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def _copy_checked(root: RemotePath, rel: str, copies: Path, cancel: threading.Event) -> None:
    info = root.tree.files[rel]
    final, partial = copies / info.sha256, _partial(copies, info.sha256)
    label = f"{root.tree.url.rstrip('/')}/{rel}"
    header = HeaderCheck(label, root.tree.planned_headers.get(rel))
    kept = _kept(copies, info.sha256)
    if kept.is_file() and kept.stat().st_size == info.size:
        if _rehash_kept(kept, header, cancel, label) == info.sha256:
            os.replace(kept, final)
            return
        header = HeaderCheck(label, header.planned)
    kept.unlink(missing_ok=True)  # damaged (a crash before its write-back): fetched again
    source = root.tree.open_store(rel)
    digest = hashlib.sha256()
    # unbuffered and in order: the file's size is how far readers may read (CopySource)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for pos in range(0, info.size, STREAM_BYTES):
            if cancel.is_set():  # the run stopped: whoever waits for it must too
                raise _stopped(label)
            chunk = source.read_exact(pos, min(STREAM_BYTES, info.size - pos))
            header.feed(chunk)  # before the bytes are written: no reader sees a changed header
            digest.update(chunk)
            _write_all(fd, chunk)
        found = digest.hexdigest()
        if found != info.sha256:
            error = FormatError(f"{label}: SHA-256 {found} differs from the Hub's {info.sha256}: "
                                f"the bytes served are not the file the Hub lists; nothing "
                                f"read from it was written [{CHECKSUM_MISMATCH}]")
            error.finding = CHECKSUM_MISMATCH
            raise error
        os.replace(partial, final)  # not synced: a rerun hashes a kept copy again
    finally:
        os.close(fd)
        source.close()
        partial.unlink(missing_ok=True)


_unbegun: weakref.WeakSet[CheckedCopies] = weakref.WeakSet()  # started, not yet copying


class CheckedCopies:
    """Background threads copying and checking every hashed file under `roots` into
    `copies`, in file order; the trees serve reads from there from `start` to `stop`.

    The first failure cancels the other copies (each then fails its waiting reads too).
    `stop` cancels what still runs when the run failed, and raises the first failure when
    the run succeeded (it read no failed file, but the source is not what the Hub lists)."""

    def __init__(self, roots: list[RemotePath], copies: Path):
        self.roots, self.copies = roots, copies
        self._cancel = threading.Event()
        self._pool: ThreadPoolExecutor | None | bool = None  # False: stopped before it began
        self._begun = threading.Lock()
        self._futures: list = []
        self._first_error: BaseException | None = None

    def start(self) -> None:
        """Make the copies' directory and serve hashed files from it; the copying itself
        begins with the run's jobs (`begin`), which may stream some files themselves."""
        self.copies.mkdir(parents=True, exist_ok=True)
        for stale in [*self.copies.glob("*.failed"), *self.copies.glob("*.partial")]:
            stale.unlink()  # a killed run's (the destination's lock keeps other runs out)
        for kept in self.copies.glob("?" * 64):  # checked by an earlier run: checked again
            os.replace(kept, _kept(self.copies, kept.name))
        forget_reads()
        for root in self.roots:
            root.tree.checked_copies = str(self.copies)
            root.tree.copier = self
        _unbegun.add(self)

    @property
    def begun(self) -> bool:
        return self._pool is not None

    def begin(self, streamed: frozenset[tuple[int, str]] = frozenset()) -> None:
        """Start copying every hashed file but the `streamed` ones ((id(tree), rel): a job
        reads each whole, in order, and hashes it itself, or one did in an earlier run of
        this job: `remote.streamed`); once per run."""
        with self._begun:
            if self._pool is not None:
                return
            by_digest = {root.tree.files[rel].sha256: (root, rel)  # one copy serves equal files
                         for root in self.roots for rel in hashed_files(root)
                         if (id(root.tree), rel) not in streamed}
            todo = sorted(by_digest.values(), key=lambda p: p[1])
            from concurrent.futures import ThreadPoolExecutor  # only writers reading hf:// copy

            _unbegun.discard(self)
            self._pool = ThreadPoolExecutor(max(1, min(COPY_THREADS, len(todo))))
            self._futures = [self._pool.submit(self._one, root, rel) for root, rel in todo]

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
        with self._begun:
            if self._pool:
                self._pool.shutdown(wait=True)
            self._pool = self._pool or False  # no copy begins after the run
            _unbegun.discard(self)
        forget_reads()
        for root in self.roots:
            root.tree.checked_copies, root.tree.copier, root.tree.streamed = None, None, {}
        if not failed and self._first_error is not None:
            raise self._first_error


# -- readers (any process) -------------------------------------------------------------------
def wait_for_copy(copies: Path, sha256: str, label: str) -> Path:
    """The checked copy of a file, once its digest matched (raises the copy's failure)."""
    final, failed = copies / sha256, _failure(copies, sha256)
    while not final.is_file():
        if failed.is_file():
            _raise_failure(failed)
        if not copies.is_dir():
            raise FormatError(f"{label}: its checked copy in {copies} disappeared during the run")
        time.sleep(WAIT_SECONDS)
    return final


# The copies this process has read from, (directory, sha256) -> label: what a result derived
# from them waits for (`await_checked_reads`).
_reads: dict[tuple[str, str], str] = {}
_reads_lock = threading.Lock()


_streams: list = []  # the files this process streams itself (remote.streamed)


def register_stream(stream) -> None:
    """A file this process streams itself (`remote.streamed.StreamedSource`): what is derived
    from it waits for its `finish` (`await_checked_reads`)."""
    with _reads_lock:
        _streams.append(stream)


def copies_waiting() -> bool:
    """Whether a run of this process has copies that have not begun (`CheckedCopies.begin`)."""
    return bool(_unbegun)


def forget_reads() -> None:
    """Start a new account of what this process read (a run, or a job, begins)."""
    with _reads_lock:
        _reads.clear()
        _streams.clear()


def await_checked_reads() -> None:
    """Return once every copy this process has read from matched its digest; raise the
    first mismatch (naming the file and both digests) otherwise. Called before a result
    derived from those reads counts: a file's rename to its final name, a job's return."""
    with _reads_lock:
        pending, streams = list(_reads.items()), list(_streams)
    for (copies, sha256), label in pending:
        wait_for_copy(Path(copies), sha256, label)
        with _reads_lock:
            _reads.pop((copies, sha256), None)
    for stream in streams:
        stream.finish()
        with _reads_lock:
            if stream in _streams:
                _streams.remove(stream)


class CopySource(LocalSource):
    """A hashed file's bytes from its copy, while the copy is still being written: a read of
    [a, b) waits until the copy holds b bytes, or raises the copy's failure. Registered with
    this process's reads, so what is derived from it waits for the digest."""

    def __init__(self, copies: Path, sha256: str, size: int, label: str):
        self.label, self.size = label, size
        self._copies, self._sha256 = copies, sha256
        self._fd: int | None = None
        self._copied = 0  # bytes the copy is known to hold
        with _reads_lock:
            _reads[(str(copies), sha256)] = label

    def _wait_for(self, stop: int) -> None:
        while self._copied < stop:
            if self._fd is None:  # checked, or being copied (the same file once renamed)
                for path in (self._copies / self._sha256, _partial(self._copies, self._sha256)):
                    try:
                        self._fd = os.open(path, os.O_RDONLY)
                        break
                    except FileNotFoundError:
                        continue
            if self._fd is not None:
                self._copied = os.fstat(self._fd).st_size
                if self._copied >= stop:
                    return
            failed = _failure(self._copies, self._sha256)
            if failed.is_file():
                _raise_failure(failed)
            if not self._copies.is_dir():
                raise FormatError(f"{self.label}: bytes [0, {stop}): its checked copy in "
                                  f"{self._copies} disappeared during the run")
            time.sleep(WAIT_SECONDS)

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset + length > self.size:
            raise FormatError(f"{self.label}: bytes [{offset}, {offset + length}) are outside "
                              f"the {self.size:,}-byte file (truncated?)")
        self._wait_for(offset + length)
        return super().read_at(offset, length)

    read_exact = read_at
