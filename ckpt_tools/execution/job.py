"""One job of an executor (`parallel`), and what runs it where it runs.

Kept apart from `parallel` so the Ray executor, which `parallel` imports on demand, can use
it without importing `parallel` back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from ..remote.verified import await_checked_reads, forget_reads

# What a worker process holds before any buffer: the interpreter, numpy and ml_dtypes
# (measured ~90 MB resident), with headroom. Each job adds its own buffers to this.
WORKER_MEMORY = 192 << 20


class Job(NamedTuple):
    label: str  # what the job writes or reads (for errors)
    nbytes: int  # bytes it writes, or reads if it writes nothing (progress, per-node totals)
    args: tuple
    memory: int = WORKER_MEMORY  # bytes it holds at most, worker included (Ray's `memory`)
    resources: dict[str, float] | None = None  # custom Ray resources it must run on
    # it reads each source file it reads whole in file order (remote.verified.plan_streams)
    in_order: bool = False


def timed_call(fn: Callable[..., Any], args: tuple) -> tuple[Any, float]:
    """`fn(*args)` and its wall time: what every executor runs where the job runs. A job
    returns only once the checked copies it read from matched their digests (so the
    main process journals and commits only what derives from checked bytes)."""
    t0 = time.perf_counter()
    forget_reads()
    result = fn(*args)
    await_checked_reads()
    return result, time.perf_counter() - t0


def largest_first(jobs: Sequence[Job]) -> list[int]:
    """Job indices by decreasing size: started in this order, a big job never begins last
    while the other workers idle (shards of one checkpoint differ by 2x and more)."""
    return sorted(range(len(jobs)), key=lambda i: -jobs[i].nbytes)
