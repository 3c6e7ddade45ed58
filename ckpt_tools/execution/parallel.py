"""Run independent jobs (one per output file, or per file read) on an executor.

One implementation of each job, two executors that run it:
- "local": worker processes on this machine (with one worker, this very process: easier to
  debug, nothing pickled);
- "ray": tasks on a Ray cluster (`ray_executor`, the optional `ray` extra), each declaring
  the memory it holds at most so Ray never oversubscribes a node, rerun by Ray when its
  worker or node dies.

A job is `Job(label, nbytes, args, memory)`; `fn(*args)` returns a picklable result. Jobs
must be idempotent (they write their own file under a temporary name and rename it when
complete), so a rerun after a crash, or Ray's retry, ends with the same bytes. Results
come back in job order whatever order jobs finish in; `on_result(i, result)` runs in this
process as each one finishes (e.g. to journal finished files) and the progress bar
advances by the job's bytes. Each job is timed where it runs; `JobRun.nodes` sums bytes,
jobs and seconds per node for the reports.

Progress moves inside a job, not only when it ends: code running in a job calls
`report_bytes(n)` as it goes (`SafetensorsWriter` does, per chunk written); local workers
add to a shared counter per job that this process polls, and when a job ends its remaining
bytes are counted (Ray tasks count when they end). So `nbytes` should be the bytes the job
writes, or reads when it writes nothing.

Local workers live and die with the run: each one ignores Ctrl-C (the run handles it by
killing them, as a SIGKILL would: every job resumes), dies with its parent (Linux's parent
death signal, and a poll of the parent's pid elsewhere), and holds none of the run's
locks (`output` closes them in a forked child). So a killed run leaves no worker writing
behind it, and its rerun finds the destination free.

Workers are forked when the pool starts, and import on their own what the jobs need that
this process has not imported (numba's compiled kernels: 0.3 to 0.7 s of CPU each). A run
that knows at its start that it will have several workers has this process import those
modules in a thread while it reads headers and plans (`prepare_workers`); the pool joins
that thread before it forks (no thread may be running at a fork), so every worker
inherits what it loaded.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, NamedTuple

from pydantic import Field

from ..errors import ArgumentError, WorkerError
from .job import WORKER_MEMORY, Job, start_order, timed_call  # noqa: F401  (re-exported)
from .progress import Progress, or_null
from ..remote.streamed import plan_streams
from ..results import Result

ExecutorName = Literal["local", "ray"]
EXECUTORS = ("local", "ray")
class NodeWork(Result):
    """The jobs one machine (a Ray node, or this host for the local executor) ran."""

    node: str = Field(description="Ray node id, or this host's name for the local executor")
    address: str = Field(description="The node's IP address (host name locally)")
    jobs: int
    bytes: int = Field(description="Bytes the node's jobs processed: written by writers "
                                   "(upcast, quantize, reshard), read by validate")
    seconds: float = Field(description="Sum of the node's job wall times")
    files: list[str] = Field(description="The files its jobs wrote (or read), in job order")


class JobRun(NamedTuple):
    results: list[Any]
    nodes: list[NodeWork]


POLL_SECONDS = 0.2  # how often worker byte counts are read for progress

# Set inside a job: where report_bytes() counts (a worker's slot in shared memory, or the
# caller's progress when jobs run in this process).
_shared_counts = None
_job = 0
_in_process: list | None = None  # [progress, bytes counted, nbytes] of the current job


def report_bytes(n: int) -> None:
    """Count `n` bytes of the running job's work (no-op outside `run_jobs`)."""
    if _in_process is not None:  # [progress, counted, the job's nbytes]: never past nbytes
        n = min(n, max(0, _in_process[2] - _in_process[1]))
        _in_process[0].advance(n)
        _in_process[1] += n
    elif _shared_counts is not None:
        _shared_counts[_job] += n  # one job runs in one process: its slot has one writer


PARENT_POLL_SECONDS = 0.5  # how often a worker checks its parent where no death signal exists
_PR_SET_PDEATHSIG = 1  # prctl(2)


def _init_worker(counts, parent: int) -> None:
    global _shared_counts
    _shared_counts = counts
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's: it stops its workers
    _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """End this worker as soon as the process that started it is gone (SIGKILLed runs
    included): the kernel's parent death signal on Linux, a pid poll as the fallback."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the poll below does it
        pass
    if os.getppid() != parent:  # it died before the death signal was armed
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="ckpt-parent-watch", daemon=True).start()


def _stop_workers(pool) -> None:
    """Kill `pool`'s workers now and reap them (an interrupted run: its jobs resume)."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
    try:  # a second Ctrl-C while the workers are reaped must not leave them running
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.kill()
        pool.shutdown(wait=True, cancel_futures=True)
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)


def _run_job(fn: Callable[..., Any], index: int, args: tuple) -> tuple[Any, float]:
    global _job
    _job = index
    return timed_call(fn, args)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


PARALLEL_MIN_BYTES = 1 << 30  # below this, starting worker processes costs more than it saves


def workers_for(nbytes: int, workers: int | None = None, *,
                min_bytes: int = PARALLEL_MIN_BYTES) -> int:
    """`workers` if given; else every core when there are at least `min_bytes` to process,
    one below that (starting worker processes costs more than it saves on small inputs)."""
    if workers is not None:
        return max(1, workers)
    return default_workers() if nbytes >= min_bytes else 1


_preparing: list[threading.Thread] = []  # joined by the next local pool before it forks


def prepare_workers(nbytes: int, workers: int | None, executor: ExecutorName,
                    modules: Sequence[str]) -> bool:
    """Import `modules` in a thread of this process now, when the run will have several
    local workers (`nbytes` to process, at least `PARALLEL_MIN_BYTES`: smaller runs are
    not worth it; `workers` as `workers_for` reads it): the workers forked later inherit
    them instead of importing them once each. True when it started. A module that fails to
    import is left to the jobs, which import it again and say why."""
    if executor != "local" or nbytes < PARALLEL_MIN_BYTES or workers_for(nbytes, workers) < 2:
        return False

    def load() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the jobs import it again and report it
                pass

    thread = threading.Thread(target=load, name="ckpt-prepare-workers", daemon=True)
    thread.start()
    _preparing.append(thread)
    return True


def _join_preparation() -> None:
    while _preparing:
        _preparing.pop().join()


def summarize_nodes(jobs: Sequence[Job], ran: list[tuple[str, str, float] | None]
                    ) -> list[NodeWork]:
    """Per-node totals from each job's (node, address, seconds); None: not run."""
    return merge_nodes(NodeWork(node=where[0], address=where[1], jobs=1, bytes=job.nbytes,
                                seconds=where[2], files=[job.label])
                       for job, where in zip(jobs, ran) if where is not None)


def run_jobs(fn: Callable[..., Any], jobs: Sequence[Job | tuple], *, workers: int = 1,
             executor: ExecutorName = "local", progress: Progress | None = None,
             label: str = "converting",
             on_result: Callable[[int, Any], None] | None = None) -> JobRun:
    """Run every job on `executor` (`workers` applies to the local one: Ray uses the
    cluster); see the module docstring.

    Raises:
        The first job's exception (its own `CkptError`, as raised where it ran);
        WorkerError when a worker died and (on Ray) its retries ran out;
        MissingDependencyError for executor="ray" without the `ray` extra.
    """
    global _in_process
    jobs = [j if isinstance(j, Job) else Job(*j) for j in jobs]
    if executor not in EXECUTORS:
        raise ArgumentError(f"executor={executor!r}: expected one of {', '.join(EXECUTORS)}")
    progress = or_null(progress)
    plan_streams(jobs)  # hashed remote files: streamed by the job reading each whole, or copied
    progress.start(sum(j.nbytes for j in jobs), label)
    try:
        if executor == "ray":
            from .ray_executor import run_on_ray

            results, ran = run_on_ray(fn, jobs, progress=progress, on_result=on_result)
        else:
            results, ran = _run_local(fn, jobs, workers, progress, on_result)
        return JobRun(results, summarize_nodes(jobs, ran))
    finally:
        _in_process = None
        progress.finish()


def merge_nodes(*runs: Iterable[NodeWork]) -> list[NodeWork]:
    """Per-node totals of several runs (e.g. validate's deep scan, then its hashing)."""
    totals: dict[tuple[str, str], list] = {}
    for run in runs:
        for w in run:
            t = totals.setdefault((w.node, w.address), [0, 0, 0.0, []])
            t[0], t[1], t[2] = t[0] + w.jobs, t[1] + w.bytes, t[2] + w.seconds
            t[3] += [f for f in w.files if f not in t[3]]  # a file read in parts: once
    return [NodeWork(node=node, address=address, jobs=n, bytes=b, seconds=round(s, 3),
                     files=files) for (node, address), (n, b, s, files) in sorted(totals.items())]


def _run_local(fn, jobs: list[Job], workers: int, progress: Progress, on_result):
    # imported here: header-only commands import this module for NodeWork alone
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    global _in_process
    _join_preparation()  # before any fork: what it loads, the workers inherit
    host = socket.gethostname()
    results: list[Any] = [None] * len(jobs)
    ran: list[tuple[str, str, float] | None] = [None] * len(jobs)

    def finished(i: int, result: Any, seconds: float) -> None:
        results[i], ran[i] = result, (host, host, seconds)
        if on_result is not None:
            on_result(i, result)

    if workers <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            _in_process = [progress, 0, job.nbytes]
            result, seconds = timed_call(fn, job.args)
            progress.advance(max(0, job.nbytes - _in_process[1]))
            _in_process = None
            finished(i, result, seconds)
        return results, ran
    counts = multiprocessing.get_context().RawArray("q", len(jobs))
    shown = [0] * len(jobs)

    def show(i: int, upto: int) -> None:
        upto = min(upto, jobs[i].nbytes)
        if upto > shown[i]:
            progress.advance(upto - shown[i])
            shown[i] = upto

    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), initializer=_init_worker,
                               initargs=(counts, os.getpid()))
    try:
        futures = {pool.submit(_run_job, fn, i, jobs[i].args): i
                   for i in start_order(jobs, min(workers, len(jobs)))}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_EXCEPTION)
            for f in pending:
                show(futures[f], counts[futures[f]])
            for f in done:
                i = futures[f]
                try:
                    result, seconds = f.result()  # re-raises a worker's error here
                except BrokenProcessPool:
                    raise WorkerError(
                        f"a worker process died while writing {jobs[i].label} (killed, or out "
                        f"of memory); finished files are kept: rerun the same command to "
                        f"resume") from None
                finished(i, result, seconds)
                show(i, jobs[i].nbytes)
    except KeyboardInterrupt:
        _stop_workers(pool)
        raise
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # queued jobs never start
        raise
    pool.shutdown(wait=True)
    return results, ran
