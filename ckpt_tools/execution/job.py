"""One job of an executor (`parallel`), and what runs it where it runs.

Kept apart from `parallel` so the Ray executor, which `parallel` imports on demand, can use
it without importing `parallel` back.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
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


def start_order(jobs: Sequence[Job], workers: int) -> list[int]:
    """Job indices in the order to start them on `workers` workers: the largest first, so a
    big job never begins last while the other workers idle (shards of one checkpoint differ
    by 2x and more), and jobs with the same label (the parts of one output file) apart.

    Linux takes a file's lock for every buffered write (tmpfs, ext4 and XFS alike), so two
    workers writing one file wait on each other, and spin while they wait:
    `bench/write_paths.py` measures two writers of one tmpfs file at half the speed of two
    writers of two. So each job starts on a label none of the `workers - 1` jobs started
    just before it has when one is left (the largest such), else on the label started
    longest ago."""
    queues: dict[str, list[int]] = {}
    for i in sorted(range(len(jobs)), key=lambda i: -jobs[i].nbytes):
        queues.setdefault(jobs[i].label, []).append(i)
    # (-size of the label's next job, the label's rank, label, position of that job)
    heap = [(-jobs[q[0]].nbytes, rank, label, 0)
            for rank, (label, q) in enumerate(queues.items())]
    heapq.heapify(heap)
    # a label's next job, held back until `workers` jobs have started since its last one,
    # oldest first (the release steps grow with the start steps)
    cooling: deque[tuple[int, tuple]] = deque()
    order: list[int] = []
    while heap or cooling:
        while cooling and cooling[0][0] <= len(order):
            heapq.heappush(heap, cooling.popleft()[1])
        _, rank, label, at = heapq.heappop(heap) if heap else cooling.popleft()[1]
        if at + 1 < len(queues[label]):
            cooling.append((len(order) + workers,
                            (-jobs[queues[label][at + 1]].nbytes, rank, label, at + 1)))
        order.append(queues[label][at])
    return order
