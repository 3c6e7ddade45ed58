"""Deterministic crash points for the crash tests; inert unless the variable is set.

With `CKPT_FAULT_KILL_AFTER=N` the process SIGKILLs itself at the N-th crash point: after
each tensor a writer streams out, and right after each finished file is renamed into place.
The crash tests pick N at random (several seeds), rerun the command, and require output
byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "CKPT_FAULT_KILL_AFTER"
_remaining: int | None = None


def crash_point() -> None:
    global _remaining
    if _remaining is None:
        value = os.environ.get(ENV_VAR, "")
        _remaining = int(value) if value.isdigit() else -1
    if _remaining < 0:
        return
    _remaining -= 1
    if _remaining == 0:
        os.kill(os.getpid(), signal.SIGKILL)
