"""What the benchmarks share: measuring a child process (wall time, CPU time, peak RSS,
medians over repetitions) and the real-width V3 checkpoint several of them build.

Import from a bench script run as `python bench/<topic>.py` (its directory is on sys.path).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

# V3 widths; 1 dense + 1 MoE layer, 4 routed experts, small vocab: ~1.0 GB of FP8 weights.
V3_REAL_WIDTH_OVERRIDES = {
    "vocab_size": 8192, "num_nextn_predict_layers": 0, "first_k_dense_replace": 1,
    "num_hidden_layers": 2, "n_routed_experts": 4, "num_experts_per_tok": 2, "n_group": 2,
    "topk_group": 1}
# python -c BUILD_V3 DST SHARDS OVERRIDES_JSON: make-tiny of V3 at real widths, FP8
BUILD_V3 = ("import json, sys; from ckpt_tools.commands.tiny import make_tiny; "
            "make_tiny(sys.argv[1], 'v3', fp8=True, shards=int(sys.argv[2]), real_widths=True, "
            "overrides=json.loads(sys.argv[3]))")


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


def median_runs(cmd: list[str], reps: int, env: dict[str, str] | None = None
                ) -> tuple[float, float, float, list[tuple[float, float, float]]]:
    """Median wall s, CPU s and peak RSS MB of `reps` runs of `cmd`, and every run."""
    runs = [run_child(cmd, env) for _ in range(reps)]
    return (*(statistics.median(r[i] for r in runs) for i in range(3)), runs)
