"""hf:// files a job streams and hashes itself, instead of reading a checked copy.

`remote.verified` says why a writer's reads of the Hub are hashed and how a copy checks
them. Where one job reads a file in file order, that job can hash it instead: `plan_streams`
chooses such files when a run's jobs are known, and `StreamedSource` is what those jobs read.
No copy is written, nothing is downloaded twice, and SHA-256 runs on the worker that reads
the bytes anyway. Files streamed this way are settled by the same gate as copies
(`verified.await_checked_reads`).
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import NamedTuple

from ..errors import FormatError
from . import verified
from .path import CONCURRENT_SMALL_READS, RemotePath
from .verified import CHECKSUM_MISMATCH, HeaderCheck, hashed_files, verification_on


WITNESS_BYTES = 64 << 20  # what other jobs may read of a file one job streams (V3: a scale)


class StreamPlan(NamedTuple):
    rel: str
    owner: int  # the job that streams the file
    witnesses: tuple[tuple[int, int, str], ...]  # (start, stop, SHA-256) other jobs read


def plan_streams(jobs) -> dict[int, set[int]]:
    """Before a run's jobs start, choose how each hashed file is checked, and begin the copies.
    A file is streamed by one job (`StreamedSource`) when one job reading in file order
    (`Job.in_order`, as every job reading it must) reads it all but what other jobs read of it,
    at most `WITNESS_BYTES` (V3's release stores a shard's last weight's scale in the next
    shard). Those other reads are witnessed: this process reads those bytes now and notes their
    SHA-256, the other jobs' reads must give the same bytes, and the streaming job checks that
    its stream holds them too; so what the others read is what was hashed, once the streaming
    job has returned. Returns, for each such other job, the streaming jobs whose return its
    results wait for (`write_files` commits nothing before). Every other hashed file is copied
    (`CheckedCopies.begin`). Once per run: later calls only return {}."""
    if not verified.copies_waiting():
        return {}  # no run of this process reads hashed hf:// files (the common case)
    readers: dict[tuple[int, str], dict[int, dict]] = {}  # file -> job -> {name: range}
    trees = {}
    for i, job in enumerate(jobs):
        for arg in job.args:
            for file, ranges in getattr(arg, "files_read", lambda: ())():
                tree = getattr(file, "tree", None)
                if tree is None or getattr(tree, "copier", None) is None:
                    continue
                trees[id(tree)] = tree
                readers.setdefault((id(tree), file.rel), {}).setdefault(i, {}).update(ranges)
    plans, waits = [], {}
    for (tree_id, rel), by_job in readers.items():
        tree = trees[tree_id]
        if tree.copier.begun or not tree.files[rel].sha256:
            continue
        plan = _stream_plan(tree, rel, by_job, jobs)
        if plan is not None:
            plans.append((tree, plan))
            for i in by_job:
                if i != plan.owner:
                    waits.setdefault(i, set()).add(plan.owner)
    witnessed = _read_witnesses([(tree, p) for tree, p in plans])
    for tree, plan in plans:
        tree.streamed[plan.rel] = (tree.planned_headers.get(plan.rel), witnessed[id(tree),
                                                                                 plan.rel])
    streamed = frozenset((id(t), p.rel) for t, p in plans)
    # a file no job reads that an earlier run of this job streamed and matched (a resumed
    # run's finished shard) is not fetched again to be checked, when every job says what
    # it reads
    known = all(any(hasattr(arg, "files_read") for arg in job.args) for job in jobs)
    for tree in trees.values():
        matched = frozenset(
            (id(tree), rel) for rel in tree.files if known and (id(tree), rel) not in readers
            and tree.files[rel].sha256 and verified.streamed_before(tree.copier.copies,
                                                                     tree.files[rel].sha256))
        tree.copier.begin(streamed | matched)
    return waits


def _stream_plan(tree, rel: str, by_job: dict[int, dict], jobs) -> StreamPlan | None:
    """How `rel` is streamed, or None (copied): see `plan_streams`."""
    if not all(getattr(jobs[i], "in_order", False) for i in by_job):
        return None  # (a whole-file writer renames its output in the job: it cannot wait)
    owner = max(by_job, key=lambda i: sum(b - a for a, b in by_job[i].values()))
    every = {name: r for ranges in by_job.values() for name, r in ranges.items()}
    others = {name: r for i, ranges in by_job.items() if i != owner
              for name, r in ranges.items()}
    info = tree.files[rel]
    data_start = min((a for a, _ in every.values()), default=info.size)
    whole = sum(b - a for a, b in every.values()) == info.size - data_start
    if (not whole or sum(b - a for a, b in others.values()) > WITNESS_BYTES
            or others.keys() & by_job[owner].keys()):  # a witnessed byte is read once
        return None
    return StreamPlan(rel, owner, tuple(sorted((a, b, "") for a, b in others.values())))


def _read_witnesses(plans) -> dict[tuple[int, str], tuple[tuple[int, int, str], ...]]:
    """The SHA-256 of each witnessed range, read now from the store."""
    wanted = [(tree, plan.rel, a, b) for tree, plan in plans for a, b, _ in plan.witnesses]
    found = {(id(tree), plan.rel): [] for tree, plan in plans}
    if not wanted:
        return {key: () for key in found}
    from concurrent.futures import ThreadPoolExecutor

    def digest(item):
        tree, rel, a, b = item
        store = tree.open_store(rel)
        try:
            return hashlib.sha256(store.read_exact(a, b - a)).hexdigest()
        finally:
            store.close()

    with ThreadPoolExecutor(max(1, min(CONCURRENT_SMALL_READS, len(wanted)))) as pool:
        for (tree, rel, a, b), sha in zip(wanted, pool.map(digest, wanted)):
            found[id(tree), rel].append((a, b, sha))
    return {key: tuple(v) for key, v in found.items()}


def streams_files(root) -> bool:
    """Whether a writer reading `root` has hashed files its jobs may stream themselves (so
    each file is better read by one job than cut into parts)."""
    return isinstance(root, RemotePath) and verification_on() and bool(hashed_files(root))


def begin_pending_copies(tree) -> None:
    """A hashed file is read outside the jobs (a side file): its copy begins now."""
    if getattr(tree, "copier", None) is not None:
        tree.copier.begin()


class StreamedSource:
    """A hashed file's bytes for the jobs of a run that streams it (`plan_streams`).

    Its streaming job reads it all, in file order: one in-order stream of the store, hashed
    as it passes, so the bytes used are the bytes hashed. A read ahead of the stream fetches
    up to its end and holds what it passed over until that is read (a scale stored after its
    weight: at most a tensor); each byte is read once, and a chunk is let go once read whole
    (the header, which planning read, and the witnessed ranges count as read). The stream
    checks each witnessed range against the SHA-256 the planner noted. What the job derives
    counts once the rest of the file is streamed and the digest matched
    (`await_checked_reads` calls `finish`).

    Another job reads only witnessed ranges: each is fetched whole once and must match the
    planner's SHA-256 (so it equals what the streaming job checks); its results wait for the
    streaming job's return (`write_files`)."""

    def __init__(self, store, sha256: str, size: int, plan: tuple | None, label: str,
                 copies: Path | None = None):
        planned, witnesses = plan if plan is not None else (None, ())
        self._copies = copies  # where the run notes a file streamed and matched
        self.label, self.size = label, size
        self._store, self._sha256 = store, sha256
        self._header = HeaderCheck(label, planned)
        self._header_bytes = planned[0] if planned else 0
        self._witnesses = witnesses  # ((start, stop, SHA-256), ...) sorted
        self._passing = [hashlib.sha256() for _ in witnesses]  # as the stream passes them
        self._witnessed: dict[int, bytes] = {}  # witness start -> its bytes (another job)
        self._step = verified.STREAM_BYTES
        self._digest, self._pos = hashlib.sha256(), 0
        self._held: dict[int, list] = {}  # chunk start -> [bytes, bytes of it not read yet]
        self._error: BaseException | None = None
        self._done = False
        self._lock = threading.Lock()
        verified.register_stream(self)

    def _changed(self, a: int, b: int) -> FormatError:
        """A witnessed range whose bytes are not those the planner hashed."""
        return FormatError(f"{self.label}: bytes [{a}, {b}) differ from those read when the run "
                           f"was planned: the server changed the file during the run; nothing "
                           f"read from it was written")

    def _not_read(self, start: int, chunk: bytes) -> int:
        """Bytes of the chunk at `start` that its job will not read (header, witnesses)."""
        stop = start + len(chunk)
        skipped = max(0, min(stop, self._header_bytes) - start)
        for i, (a, b, expected) in enumerate(self._witnesses):
            lo, hi = max(a, start), min(b, stop)
            if lo < hi:
                skipped += hi - lo
                self._passing[i].update(chunk[lo - start:hi - start])
                if hi == b and self._passing[i].hexdigest() != expected:
                    raise self._changed(a, b)
        return skipped

    def _stream_to(self, stop: int, hold: bool) -> None:
        while self._pos < stop:
            chunk = self._store.read_exact(self._pos, min(self._step, self.size - self._pos))
            self._header.feed(chunk)  # before any byte is used: a changed header fails here
            self._digest.update(chunk)
            unread = len(chunk) - self._not_read(self._pos, chunk)
            if hold and unread:
                self._held[self._pos] = [chunk, unread]
            self._pos += len(chunk)

    def _witness(self, offset: int, stop: int) -> bytes | None:
        """[offset, stop) from a witnessed range, for a job that does not stream the file."""
        for a, b, expected in self._witnesses:
            if a <= offset and stop <= b:
                data = self._witnessed.get(a)
                if data is None:
                    data = self._store.read_exact(a, b - a)
                    if hashlib.sha256(data).hexdigest() != expected:
                        raise self._changed(a, b)
                    self._witnessed[a] = data
                return data[offset - a:stop - a]
        return None

    def read_at(self, offset: int, length: int) -> bytes:
        stop = offset + length
        if offset < 0 or stop > self.size:
            raise FormatError(f"{self.label}: bytes [{offset}, {stop}) are outside the "
                              f"{self.size:,}-byte file (truncated?)")
        with self._lock:
            if self._done:
                raise FormatError(f"{self.label}: read after its digest was checked")
            if self._pos == 0 and (found := self._witness(offset, stop)) is not None:
                return found
            self._stream_to(stop, hold=True)
            parts = []
            for start in range(offset - offset % self._step, stop, self._step):
                held = self._held.get(start)
                if held is None:  # passed and let go: these bytes were hashed, not kept
                    raise FormatError(f"{self.label}: bytes [{offset}, {stop}) read twice by "
                                      f"one job; a streamed file is read once, in order")
                lo, hi = max(offset, start) - start, min(stop, start + len(held[0])) - start
                parts.append(held[0][lo:hi])
                held[1] -= hi - lo
                if held[1] <= 0:
                    del self._held[start]
            return parts[0] if len(parts) == 1 else b"".join(parts)

    read_exact = read_at

    def finish(self) -> None:
        """Stream the rest of the file (hashed, not kept) and compare its digest; raises
        the mismatch naming the file and both digests. Nothing for a job that read only
        witnessed ranges (its results wait for the streaming job's return)."""
        with self._lock:
            if not self._done:
                self._done = True
                self._held.clear()
                try:
                    if self._pos or not self._witnessed:
                        self._stream_to(self.size, hold=False)
                        found = self._digest.hexdigest()
                        if found != self._sha256:
                            self._error = FormatError(
                                f"{self.label}: SHA-256 {found} differs from the Hub's "
                                f"{self._sha256}: the bytes served are not the file the Hub "
                                f"lists; nothing read from it was written "
                                f"[{CHECKSUM_MISMATCH}]")
                            self._error.finding = CHECKSUM_MISMATCH
                        elif self._copies is not None:
                            verified.note_streamed(self._copies, self._sha256)
                except BaseException as e:
                    self._error = e
                finally:
                    self._store.close()
            if self._error is not None:
                raise self._error

    def close(self) -> None:
        """The job's reader is done with it; the stream ends in `finish`."""
