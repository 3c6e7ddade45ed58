"""What a run's workers pay for numba when each imports it, against the run importing it once
before it forks them (execution.parallel.prepare_workers, issue 26).

Each row is a fresh child (bench/timing.py: wall, CPU of the run and its workers, peak RSS),
interleaved: a 2-worker run of 4 jobs, each dequantising one 512 x 512 FP8 block with the
compiled kernel (numba imported and its cached code loaded in the process that calls it);
`each worker`: the workers import numba on their first job, as every run did before;
`prepared`: the run imports it in a thread first and the forked workers inherit it.
The difference is what every worker but the first saves on every large local conversion.

Reproduce: python bench/worker_preload.py [--reps 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from timing import run_child

RUN = r"""
import sys
import ml_dtypes
import numpy as np
from ckpt_tools.execution.parallel import PARALLEL_MIN_BYTES, Job, prepare_workers, run_jobs
from ckpt_tools.formats import fp8_block

def job(seed):
    codes = np.random.default_rng(seed).integers(0, 256, (512, 512), np.uint8)
    out = fp8_block.dequantize(codes.view(fp8_block.FP8_E4M3), np.ones((4, 4), np.float32),
                               out_dtype=ml_dtypes.bfloat16)
    return out.shape

if sys.argv[1] == "prepared":
    prepare_workers(PARALLEL_MIN_BYTES, 2, "local", ["ckpt_tools.formats.compiled"])
run_jobs(job, [Job(str(i), 1, (i,)) for i in range(4)], workers=2)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=9)
    args = ap.parse_args()
    tree = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=tree, CKPT_KERNELS="compiled")
    rows = {name: [sys.executable, "-c", RUN, name] for name in ("each worker", "prepared")}
    for cmd in rows.values():  # warm numba's cache and the page cache
        run_child(cmd, env)
    runs: dict[str, list] = {name: [] for name in rows}
    for _ in range(args.reps):
        for name, cmd in rows.items():
            runs[name].append(run_child(cmd, env))
    print(f"medians of {args.reps} runs; load average {os.getloadavg()[0]:.2f}")
    print(f"{'2 workers, numba imported by':<30}{'wall s':>8}{'CPU s':>8}{'peak RSS MB':>13}")
    for name, values in runs.items():
        wall, cpu, rss = (statistics.median(v[i] for v in values) for i in range(3))
        print(f"{name:<30}{wall:>8.3f}{cpu:>8.3f}{rss:>13.0f}")
    print(f"reproduce: python bench/worker_preload.py --reps {args.reps}")


if __name__ == "__main__":
    main()
