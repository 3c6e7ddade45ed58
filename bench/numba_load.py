"""What a process pays once for the compiled kernels: numba's import and its cached machine
code's load (issue 26), beside the same first dequantisation on NumPy.

Each row is a fresh child (bench/timing.py: wall, CPU, peak RSS), interleaved, after one
warm-up run of each that fills numba's on-disk cache:
- `import numpy, ml_dtypes`: what every tensor command pays anyway (the floor here);
- `first call, numpy`: that, the formats package and one 256 x 256 FP8 dequantisation and
  one BF16 quantisation with CKPT_KERNELS=numpy;
- `first call, compiled`: the same with CKPT_KERNELS=compiled (numba imported, both
  kernels' machine code loaded from the cache).
`fixed CPU s` is a row's CPU time minus the floor's. With `--tree DIR` (repeatable) the
rows run once per source tree (PYTHONPATH=DIR), e.g. a `git archive` of main against a
branch: an A/B on the same machine in the same run.

Reproduce: python bench/numba_load.py [--reps 9] [--tree DIR ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from timing import run_child

FIRST_CALL = r"""
import numpy as np, ml_dtypes
from ckpt_tools.formats import fp8_block
rng = np.random.default_rng(0)
codes = rng.integers(0, 256, (256, 256), dtype=np.uint8).view(fp8_block.FP8_E4M3)
scale = np.ones((2, 2), np.float32)
fp8_block.dequantize(codes, scale, out_dtype=ml_dtypes.bfloat16)
fp8_block.quantize(rng.standard_normal((256, 256)).astype(ml_dtypes.bfloat16))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--tree", action="append", type=Path,
                    help="a source tree to time (default: this checkout)")
    args = ap.parse_args()
    trees = [t.resolve() for t in args.tree or [Path(__file__).resolve().parent.parent]]
    rows: dict[str, tuple[list[str], dict[str, str]]] = {
        "import numpy, ml_dtypes": ([sys.executable, "-c", "import numpy, ml_dtypes"],
                                    dict(os.environ))}
    for tree in trees:
        for backend in ("numpy", "compiled"):
            env = dict(os.environ, PYTHONPATH=str(tree), CKPT_KERNELS=backend)
            name = f"first call, {backend}" + (f" [{tree}]" if len(trees) > 1 else "")
            rows[name] = ([sys.executable, "-c", FIRST_CALL], env)
    # `python -c` puts the working directory first on sys.path: a neutral one, so that
    # PYTHONPATH chooses the tree
    os.chdir(tempfile.gettempdir())
    for cmd, env in rows.values():  # warm: page cache, .pyc files, numba's cache
        run_child(cmd, env)
    runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in rows}
    for _ in range(args.reps):
        for name, (cmd, env) in rows.items():
            runs[name].append(run_child(cmd, env))
    med = {k: [statistics.median(r[i] for r in v) for i in range(3)] for k, v in runs.items()}
    floor_wall, floor_cpu = med["import numpy, ml_dtypes"][:2]
    print(f"medians of {args.reps} runs; load average {os.getloadavg()[0]:.2f}")
    print(f"{'row':<60}{'wall s':>8}{'CPU s':>8}{'fixed s':>9}{'fixed CPU s':>13}{'RSS MB':>8}")
    for name, (wall, cpu, rss) in med.items():
        print(f"{name:<60}{wall:>8.3f}{cpu:>8.3f}{wall - floor_wall:>9.3f}"
              f"{cpu - floor_cpu:>13.3f}{rss:>8.0f}")
    print(f"reproduce: python bench/numba_load.py --reps {args.reps}"
          + "".join(f" --tree {t}" for t in args.tree or []))


if __name__ == "__main__":
    main()
