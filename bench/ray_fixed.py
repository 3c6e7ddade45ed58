"""The fixed cost of `--executor ray` when a cluster is already up (goal: < 0.5 s).

Starts a Ray head on this machine for the run (bench/scaling.py's: its own process group,
stopped afterwards), then times, each a fresh child process, medians of --reps runs
interleaved (bench/timing.py):
- `python -c "import ray"`, what any Ray client pays;
- connecting to the head and disconnecting (`ray.init(address)`, `ray.shutdown()`);
- one empty task round trip after connecting;
- `ckpt upcast TINY --executor ray` against `ckpt upcast TINY --workers 2` on a tiny FP8
  checkpoint (make-tiny v3: the work is nothing, the difference is the executor's fixed cost).

Reproduce: python bench/ray_fixed.py [--reps 5] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scaling import RAY_ENV, start_ray_head, stop_ray_head
from timing import run_child

CKPT = [sys.executable, "-m", "ckpt_tools"]
CONNECT = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False, "
           "include_dashboard=False); ray.shutdown()")
ROUND_TRIP = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False, "
              "include_dashboard=False); f = ray.remote(lambda: 1); ray.get(f.remote()); "
              "ray.shutdown()")
GOAL_SECONDS = 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--tmp", default=None)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-ray-", dir=args.tmp))
    head = None
    try:
        tiny, out = root / "tiny", root / "out"
        subprocess.run([*CKPT, "make-tiny", str(tiny), "--preset", "v3", "--fp8"], check=True,
                       capture_output=True)
        t0 = time.monotonic()
        head, address = start_ray_head(2, root / "ray")
        print(f"Ray head at {address}, up in {time.monotonic() - t0:.1f} s", flush=True)
        env = {**RAY_ENV, "RAY_ADDRESS": address}
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "import ray": [sys.executable, "-c", "import ray"],
            "connect + shutdown": [sys.executable, "-c", CONNECT, address],
            "connect + 1 task": [sys.executable, "-c", ROUND_TRIP, address],
            "ckpt upcast TINY --workers 2": [*CKPT, "upcast", str(tiny), str(out), "-q",
                                             "--workers", "2"],
            "ckpt upcast TINY --executor ray": [*CKPT, "upcast", str(tiny), str(out), "-q",
                                                "--executor", "ray"],
        }
        runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in commands}
        for _ in range(args.reps):
            for name, cmd in commands.items():
                shutil.rmtree(out, ignore_errors=True)
                runs[name].append(run_child(cmd, env))
    finally:
        if head is not None:
            stop_ray_head(head)
        shutil.rmtree(root, ignore_errors=True)
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
           for k, v in runs.items()}
    print(f"\nmedians of {args.reps} runs; load average {os.getloadavg()[0]:.1f}")
    print(f"{'':34s}{'wall s':>8s}{'CPU s':>8s}")
    for name, (wall, cpu) in med.items():
        print(f"{name:34s}{wall:8.3f}{cpu:8.3f}")
    fixed = med["ckpt upcast TINY --executor ray"][0] - med["ckpt upcast TINY --workers 2"][0]
    print(f"\nRay's fixed cost over the local pool: {fixed:.3f} s wall "
          f"({'meets' if fixed < GOAL_SECONDS else 'MISSES'} the {GOAL_SECONDS} s goal)")
    print(f"reproduce: python bench/ray_fixed.py --reps {args.reps}")


if __name__ == "__main__":
    main()
