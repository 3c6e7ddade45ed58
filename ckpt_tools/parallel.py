"""Run independent jobs (one per output file) in worker processes, reporting bytes.

Each job is `(label, nbytes, args)`; `fn(*args)` runs in a worker and returns a picklable
result. With `workers <= 1` everything runs in this process (easier to debug, no pickling).
Results come back in job order whatever order workers finish in.

Progress moves inside a job, not only when it ends: code running in a job calls
`report_bytes(n)` as it goes (`SafetensorsWriter` does, per chunk written), workers add to
a shared counter per job that this process polls, and when a job ends its remaining bytes
are counted. So `nbytes` should be the bytes the job writes.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .errors import WorkerError
from .progress import Progress, or_null


POLL_SECONDS = 0.2  # how often worker byte counts are read for progress

# Set inside a job: where report_bytes() counts (a worker's slot in shared memory, or the
# caller's progress when jobs run in this process).
_shared_counts = None
_job = 0
_in_process: list | None = None  # [progress, bytes reported for the current job]


def report_bytes(n: int) -> None:
    """Count `n` bytes of the running job's work (no-op outside `run_jobs`)."""
    if _in_process is not None:
        _in_process[0].advance(n)
        _in_process[1] += n
    elif _shared_counts is not None:
        _shared_counts[_job] += n  # one job runs in one process: its slot has one writer


def _init_worker(counts) -> None:
    global _shared_counts
    _shared_counts = counts


def _run_job(fn: Callable[..., Any], index: int, args: tuple) -> Any:
    global _job
    _job = index
    return fn(*args)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def workers_for(nbytes: int, workers: int | None = None, *, min_bytes: int = 1 << 30) -> int:
    """`workers` if given; else every core when there are at least `min_bytes` to process,
    one below that (starting worker processes costs more than it saves on small inputs)."""
    if workers is not None:
        return max(1, workers)
    return default_workers() if nbytes >= min_bytes else 1


def run_jobs(fn: Callable[..., Any], jobs: Sequence[tuple[str, int, tuple]], *, workers: int = 1,
             progress: Progress | None = None, label: str = "converting",
             on_result: Callable[[int, Any], None] | None = None) -> list[Any]:
    """Run every job; `on_result(i, result)` is called in this process as each one finishes
    (e.g. to journal finished files so an interrupted run resumes after them)."""
    global _in_process
    progress = or_null(progress)
    progress.start(sum(n for _, n, _ in jobs), label)
    results: list[Any] = [None] * len(jobs)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for i, (_, nbytes, args) in enumerate(jobs):
                _in_process = [progress, 0]
                results[i] = fn(*args)
                progress.advance(max(0, nbytes - _in_process[1]))
                _in_process = None
                if on_result is not None:
                    on_result(i, results[i])
            return results
        counts = multiprocessing.get_context().RawArray("q", len(jobs))
        shown = [0] * len(jobs)

        def show(i: int, upto: int) -> None:
            upto = min(upto, jobs[i][1])
            if upto > shown[i]:
                progress.advance(upto - shown[i])
                shown[i] = upto

        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), initializer=_init_worker,
                                 initargs=(counts,)) as pool:
            futures = {pool.submit(_run_job, fn, i, args): i
                       for i, (_, _, args) in enumerate(jobs)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_EXCEPTION)
                for f in pending:
                    show(futures[f], counts[futures[f]])
                for f in done:
                    i = futures[f]
                    try:
                        results[i] = f.result()  # re-raises a worker's error here
                    except BrokenProcessPool:
                        raise WorkerError(
                            f"a worker process died while writing {jobs[i][0]} (killed, or out "
                            f"of memory); finished files are kept: rerun the same command to "
                            f"resume") from None
                    if on_result is not None:
                        on_result(i, results[i])
                    show(i, jobs[i][1])
        return results
    finally:
        _in_process = None
        progress.finish()
