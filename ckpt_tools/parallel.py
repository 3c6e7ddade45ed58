"""Run independent jobs (one per output file) in worker processes, reporting bytes.

Each job is `(label, nbytes, args)`; `fn(*args)` runs in a worker and returns a picklable
result. With `workers <= 1` everything runs in this process (easier to debug, no pickling).
Results come back in job order whatever order workers finish in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .errors import WorkerError
from .progress import Progress, or_null


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
    progress = or_null(progress)
    progress.start(sum(n for _, n, _ in jobs), label)
    results: list[Any] = [None] * len(jobs)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for i, (_, nbytes, args) in enumerate(jobs):
                results[i] = fn(*args)
                if on_result is not None:
                    on_result(i, results[i])
                progress.advance(nbytes)
            return results
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            futures = {pool.submit(fn, *args): i for i, (_, _, args) in enumerate(jobs)}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
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
                    progress.advance(jobs[i][1])
        return results
    finally:
        progress.finish()
