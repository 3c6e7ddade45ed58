"""Measure one child process: wall time, CPU time and peak RSS (shared by the benchmarks).

Import from a bench script run as `python bench/<topic>.py` (its directory is on sys.path).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def run_child(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MB) of `cmd`; exits with its stderr if it fails.

    CPU and RSS come from os.wait4 on this very child, not RUSAGE_CHILDREN totals.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"{' '.join(cmd)} failed: {err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
