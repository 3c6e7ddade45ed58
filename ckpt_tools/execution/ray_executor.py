"""The Ray executor: the same jobs as the local pool, as tasks on a Ray cluster.

Connects to the cluster `RAY_ADDRESS` names (or the one this process is already connected
to, or one `ray start`ed on this machine), else starts a local Ray for the run and stops it
afterwards. Every node must see the
source and destination at the same paths (a shared file system) and have ckpt_tools
installed. Each job is one task asking for one CPU, its declared `memory` (so Ray never
puts more jobs on a node than its memory holds) and any custom resources (a rank pinned
to a node). A task whose worker process or node dies is rerun by Ray up to `MAX_RETRIES`
times; jobs are idempotent, so the result is byte-identical. A job that raises fails the
run with its own error, exactly as locally; the other tasks are cancelled.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib.util import find_spec
from typing import Any

from ..errors import ARGUMENT_PLACEHOLDER, MissingDependencyError, WorkerError
from .job import Job, start_order, timed_call
from .progress import Progress

MAX_RETRIES = 3  # reruns of a task whose worker or node died (not of one that raised)
WAIT_SECONDS = 0.1  # the longest a finished job waits to be journaled and shown


def require_ray() -> None:
    """Raise, without importing it, when Ray is not installed: writers ask before they
    create anything in their destination."""
    if find_spec("ray") is None:
        raise _missing()


def _missing() -> MissingDependencyError:
    return MissingDependencyError(f"{ARGUMENT_PLACEHOLDER} needs Ray: pip install "
                                  f"'ckpt-tools[ray]'", argument="executor", value="ray")


def _ray():
    try:
        import ray
    except ImportError:
        raise _missing() from None
    return ray


def _where_and_call(fn: Callable[..., Any], args: tuple) -> tuple[Any, str, str, float]:
    """Runs in a Ray worker: the job, with the node it ran on and its wall time."""
    import ray

    result, seconds = timed_call(fn, args)
    ctx = ray.get_runtime_context()
    return result, ctx.get_node_id(), ray.util.get_node_ip_address(), seconds


def _connect(ray) -> bool:
    """Connect (RAY_ADDRESS, or the cluster `ray start`ed on this machine, or a new local
    Ray); True when this call connected (and so disconnects afterwards)."""
    if ray.is_initialized():
        return False
    # Workers must not echo onto our stdout (it carries --json); jobs print nothing anyway.
    ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=False,
             include_dashboard=False, configure_logging=True, logging_level="WARNING")
    return True


def _unwrap(ray, error: Exception, job: Job) -> BaseException:
    """The error to raise in this process for a failed task."""
    if isinstance(error, ray.exceptions.RayTaskError):
        cause = getattr(error, "cause", None)
        return cause if isinstance(cause, BaseException) else error
    if isinstance(error, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                          ray.exceptions.OutOfMemoryError, ray.exceptions.TaskCancelledError)):
        return WorkerError(f"a Ray worker died while writing {job.label} and {MAX_RETRIES} "
                           f"retries did not finish it ({type(error).__name__}); finished "
                           f"files are kept: rerun the same command to resume")
    return error


def run_on_ray(fn: Callable[..., Any], jobs: list[Job], *, progress: Progress,
               on_result: Callable[[int, Any], None] | None
               ) -> tuple[list[Any], list[tuple[str, str, float] | None]]:
    ray = _ray()
    started = _connect(ray)
    task = ray.remote(_where_and_call)
    # the job function once in the object store, not pickled into each of ~5,000 tasks
    # (Ray resolves an ObjectRef argument before the task runs)
    fn_ref = ray.put(fn)
    results: list[Any] = [None] * len(jobs)
    ran: list[tuple[str, str, float] | None] = [None] * len(jobs)
    refs: dict[Any, int] = {}
    try:
        for i in start_order(jobs, len(jobs)):  # every node's jobs apart
            job = jobs[i]
            # SPREAD: jobs are bound by memory and storage bandwidth, which grow with nodes
            options = dict(num_cpus=1, memory=job.memory, max_retries=MAX_RETRIES,
                           retry_exceptions=False, scheduling_strategy="SPREAD")
            if job.resources:
                options["resources"] = dict(job.resources)
            refs[task.options(**options).remote(fn_ref, job.args)] = i
        pending = list(refs)
        while pending:
            # whatever finished within WAIT_SECONDS: one pass over the refs per wait, not
            # one per finished job (V3 upcast is ~5,000 jobs)
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=WAIT_SECONDS)
            for ref in done:
                i = refs[ref]
                try:
                    result, node, address, seconds = ray.get(ref)
                except Exception as e:
                    for other in pending:
                        ray.cancel(other, force=True)
                    raise _unwrap(ray, e, jobs[i]) from None
                results[i], ran[i] = result, (node, address, seconds)
                if on_result is not None:
                    on_result(i, result)
                progress.advance(jobs[i].nbytes)
        return results, ran
    finally:
        if started:
            ray.shutdown()
