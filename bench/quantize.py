"""`ckpt quantize` (BF16 -> block FP8) end to end with 1 worker: CPU seconds, G elements per
CPU second and % of memcpy, optionally two source trees side by side.

Builds a DeepSeek-V3 checkpoint at real widths (bench/timing.py's build, FP8, 1.23 GB) on
--tmp (default /dev/shm), upcasts it to BF16 (2.22 GB, the quantize source), then runs
`python -m ckpt_tools quantize SRC OUT --workers 1 -q` --reps times for each --tree
(a checkout whose ckpt_tools is imported: PYTHONPATH, the child's working directory
outside every tree), interleaved so that a noisy neighbour hits every tree alike; the
first round of each tree only warms caches (numba's machine code, .pyc files). CPU time
(the child's user + system) is the figure to compare on a shared machine; % memcpy is the
bytes moved (read + written) at numpy's copy rate over the median wall time, as
bench/report.py counts it.

Reproduce: python bench/quantize.py [--tree DIR ...] [--reps 3] [--experts 4] [--tmp /dev/shm]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from scaling import MEMCPY
from timing import BUILD_V3, run_child
from timing import V3_REAL_WIDTH_OVERRIDES as V3_WIDTHS

HERE = Path(__file__).resolve().parents[1]


def tensor_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.glob("*.safetensors"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", help="a checkout to time (default: this one)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--experts", type=int, default=V3_WIDTHS["n_routed_experts"])
    ap.add_argument("--tmp", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    args = ap.parse_args()
    trees = [str(Path(t).resolve()) for t in (args.tree or [HERE])]
    root = Path(tempfile.mkdtemp(prefix="bench-quantize-", dir=args.tmp))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    try:
        fp8, src, out = root / "fp8", root / "bf16", root / "out"
        widths = json.dumps({**V3_WIDTHS, "n_routed_experts": args.experts})
        build_env = {**env, "PYTHONPATH": trees[0]}
        subprocess.run([sys.executable, "-c", BUILD_V3, str(fp8), "4", widths], check=True,
                       env=build_env, cwd=root)
        subprocess.run([sys.executable, "-m", "ckpt_tools", "upcast", str(fp8), str(src), "-q"],
                       check=True, env=build_env, cwd=root, stdout=subprocess.DEVNULL)
        shutil.rmtree(fp8)
        memcpy = json.loads(subprocess.run([sys.executable, "-c", MEMCPY], check=True,
                                           capture_output=True, text=True).stdout)
        runs: dict[str, list] = {t: [] for t in trees}
        moved = 0
        for rep in range(args.reps + 1):
            for tree in trees:
                shutil.rmtree(out, ignore_errors=True)
                os.chdir(root)  # `python -m` puts the working directory first on sys.path
                run = run_child([sys.executable, "-m", "ckpt_tools", "quantize", str(src),
                                 str(out), "--workers", "1", "-q"], {**env, "PYTHONPATH": tree})
                moved = tensor_bytes(src) + tensor_bytes(out)
                if rep:
                    runs[tree].append(run)
        elements = tensor_bytes(src) / 2
        print(f"quantize of {tensor_bytes(src) / 1e9:.2f} GB BF16 ({elements / 1e9:.2f} G "
              f"elements), 1 worker, median of {args.reps}; memcpy {memcpy / 1e9:.2f} GB/s")
        for tree, r in runs.items():
            wall, cpu, rss = (statistics.median(x[i] for x in r) for i in range(3))
            print(f"{tree}: CPU {cpu:.2f} s ({elements / cpu / 1e9:.2f} G elem per CPU s), "
                  f"wall {wall:.2f} s, {moved / memcpy / wall:.1%} of memcpy, peak RSS "
                  f"{rss:.0f} MB; CPU s of each run {[round(x[1], 2) for x in r]}")
    finally:
        os.chdir(HERE)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
