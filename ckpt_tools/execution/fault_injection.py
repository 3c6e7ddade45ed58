"""Deterministic crash points for the crash tests; inert unless a variable is set.

With `CKPT_FAULT_KILL_AFTER=N` the process SIGKILLs itself at the N-th crash point: after
each tensor a writer streams out, and right after each finished file is renamed into place.
The crash tests pick N at random (several seeds), rerun the command, and require output
byte-identical to an uninterrupted run.

For executors that retry (Ray), where every worker process inherits the variables, two
one-shot faults: the first process of all to reach a crash point creates FILE (exclusive
create, so exactly one process ever does) and then
- `CKPT_FAULT_KILL_ONCE=FILE`: SIGKILLs itself (a worker dies mid-job);
- `CKPT_FAULT_STALL_ONCE=FILE`: writes its pid into FILE and waits until its parent (the
  node's raylet) is gone, then exits (the test removes that worker's node mid-job).

`CKPT_FAULT_HANG_AFTER=N:FILE`: the first process to reach its N-th crash point writes its
pid into FILE and hangs there for good; the test then kills the run (the hung worker must
die with it, as must the others).
"""

from __future__ import annotations

import os
import signal
import time

ENV_VAR = "CKPT_FAULT_KILL_AFTER"
KILL_ONCE_VAR = "CKPT_FAULT_KILL_ONCE"
STALL_ONCE_VAR = "CKPT_FAULT_STALL_ONCE"
HANG_AFTER_VAR = "CKPT_FAULT_HANG_AFTER"
_remaining: int | None = None


def _first_to_claim(path: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def _once() -> None:
    kill, stall = os.environ.get(KILL_ONCE_VAR), os.environ.get(STALL_ONCE_VAR)
    if kill and _first_to_claim(kill):
        os.kill(os.getpid(), signal.SIGKILL)
    if stall and _first_to_claim(stall):
        parent = os.getppid()
        while os.getppid() == parent:  # reparented once the node's processes are killed
            time.sleep(0.05)
        os._exit(1)


_hang_points: list | None = None  # [points left, FILE] while a hang is armed


def _hang() -> None:
    global _hang_points
    if _hang_points is None:
        count, _, path = os.environ.get(HANG_AFTER_VAR, "").partition(":")
        _hang_points = [int(count), path] if count.isdigit() and path else []
    if not _hang_points:
        return
    _hang_points[0] -= 1
    if _hang_points[0] == 0 and _first_to_claim(_hang_points[1]):
        while True:
            time.sleep(3600)


def crash_point() -> None:
    global _remaining
    _hang()
    if _remaining is None:
        value = os.environ.get(ENV_VAR, "")
        _remaining = int(value) if value.isdigit() else -1
        if os.environ.get(KILL_ONCE_VAR) or os.environ.get(STALL_ONCE_VAR):
            _remaining = -2  # marks: check the one-shot faults at every point
    if _remaining == -2:
        _once()
        return
    if _remaining < 0:
        return
    _remaining -= 1
    if _remaining == 0:
        os.kill(os.getpid(), signal.SIGKILL)
