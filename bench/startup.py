"""What every command pays before its work: start-up time of `ckpt`. Goal: under 0.3 s.

Runs, interleaved, each a fresh child process (bench/timing.py: wall, CPU, peak RSS):
- `python -c pass`, the interpreter's floor;
- `ckpt --help` (lists every command, imports none of them);
- `ckpt info v3` (a preset: config, plan and figures, no numpy);
- `ckpt CMD --help` for every command (its module, no work);
- `ckpt validate TINY` (header-only validate of a tiny checkpoint written here first: a
  command's fixed cost plus very little work);
- `python -c "import numpy"` and `python -c "import numpy, ml_dtypes"`, what a command that
  touches tensor data adds on top (ml_dtypes 0.7.0 costs about 1 s at import, 0.6.0 about
  0.02 s: see the README's start-up note).

"fixed s" is a command's median wall time minus the interpreter's, "fixed CPU s" the same in
CPU time (the figure to read on a shared, busy machine, where wall time waits for a core).
Children run without PYTHONDONTWRITEBYTECODE (set in some CI and container images): an
installed package has its .pyc files, and compiling ckpt_tools' sources on every run
would add 0.15 to 0.25 s that no user pays.
ckpt runs as
`python -m ckpt_tools` with this interpreter, so a pyenv shim's bash start-up is not counted.

Reproduce: python bench/startup.py [--reps 15] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import run_child

GOAL_SECONDS = 0.3
CKPT = [sys.executable, "-m", "ckpt_tools"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="3 reps: check the script runs")
    args = ap.parse_args()
    reps = 3 if args.quick else args.reps
    with tempfile.TemporaryDirectory(prefix="ckpt-startup-") as tmp:
        tiny = Path(tmp) / "v3"
        subprocess.run([*CKPT, "make-tiny", str(tiny), "--preset", "v3", "--fp8"], check=True,
                       capture_output=True)
        measure(reps, tiny)


def measure(reps: int, tiny: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from ckpt_tools.cli import COMMANDS

    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "ckpt --help": [*CKPT, "--help"],
        "ckpt info v3": [*CKPT, "info", "v3"],
        "ckpt validate TINY": [*CKPT, "validate", str(tiny)],
        **{f"ckpt {name} --help": [*CKPT, name, "--help"] for name in COMMANDS},
        "import numpy": [sys.executable, "-c", "import numpy"],
        "import numpy, ml_dtypes": [sys.executable, "-c", "import numpy, ml_dtypes"],
    }
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for cmd in commands.values():  # warm the page cache and the .pyc files
        run_child(cmd, env)
    runs: dict[str, list[tuple[float, float, float]]] = {k: [] for k in commands}
    for _ in range(reps):  # interleaved: a noisy neighbour hits every command alike
        for name, cmd in commands.items():
            runs[name].append(run_child(cmd, env))
    med = {k: [statistics.median(r[i] for r in v) for i in range(3)] for k, v in runs.items()}
    floor, cpu_floor = med["python -c pass"][:2]
    import ml_dtypes
    import numpy

    print(f"medians of {reps} runs; load average {os.getloadavg()[0]:.2f}; numpy "
          f"{numpy.__version__}, ml_dtypes {ml_dtypes.__version__}")
    print(f"{'command':<30}{'wall s':>8}{'CPU s':>8}{'fixed s':>9}{'fixed CPU s':>13}"
          f"{'peak RSS MB':>13}")
    for name, (wall, cpu, rss) in med.items():
        print(f"{name:<30}{wall:>8.3f}{cpu:>8.3f}{wall - floor:>9.3f}{cpu - cpu_floor:>13.3f}"
              f"{rss:>13.0f}")
    ours = [k for k in commands if k.startswith("ckpt")]
    worst = max(med[k][0] - floor for k in ours)
    worst_cpu = max(med[k][1] - cpu_floor for k in ours)
    verdict = "meets" if worst < GOAL_SECONDS else "MISSES"
    print(f"\nlargest fixed cost of a ckpt command: {worst:.3f} s wall, {worst_cpu:.3f} s CPU; "
          f"{verdict} the {GOAL_SECONDS} s goal")
    print(f"reproduce: python bench/startup.py --reps {reps}")


if __name__ == "__main__":
    main()
