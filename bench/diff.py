"""Benchmark `ckpt diff`: interactive start-up of a preset diff, and (--values) the
streaming value comparison of two checkpoints.

1. `ckpt diff v2.5 v3` as a fresh subprocess (interpreter start included), median of
   --reps runs, next to two baselines run in the same loop: `python -c pass` (the floor)
   and `ckpt info v3` (the other preset command). The goal is under 0.5 s.
2. With --values: `ckpt diff A B --values` on an FP8 checkpoint with V3's real widths
   (~1.1 GB, make-tiny) against the BF16 checkpoint of the same seed, next to the obvious
   in-memory baseline (dequantise/convert each whole tensor to float32, then numpy metrics).
   Data is built in a temp dir and removed afterwards.

Every run is its own subprocess; its wall time, CPU time and peak RSS come from os.wait4
on that child (bench/timing.py). The ckpt entry point is the console script next to this
interpreter (not a pyenv shim, whose bash start-up would be counted otherwise).

With --compare TREE, the same preset diff also runs from this tree and from TREE through
one identical entry (`python -c`), so a change's start-up cost is measured in one run.

Reproduce: python bench/diff.py [--reps 15] [--values] [--compare TREE]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import run_child  # bench/timing.py: wall, CPU and peak RSS of one child

# V3 widths; 1 dense + 1 MoE layer, 2 routed experts, small vocab: ~1 GB of FP8 weights.
OVERRIDES = {"vocab_size": 8192, "num_nextn_predict_layers": 0, "first_k_dense_replace": 1,
             "num_hidden_layers": 2, "n_routed_experts": 2, "num_experts_per_tok": 1,
             "n_group": 1, "topk_group": 1}

BASELINE_VALUES = r"""
import sys, numpy as np
from ckpt_tools.inventory.checkpoint import Checkpoint
a, b = Checkpoint(sys.argv[1]), Checkpoint(sys.argv[2])
worst = 0.0
for name in a.index.weight_map:
    if name not in b.index.weight_map:
        continue
    x = a.read_float32(name).astype(np.float64)  # whole tensors, dequantised
    y = b.read_float32(name).astype(np.float64)
    d = x - y
    worst = max(worst, float(np.linalg.norm(d) / (np.linalg.norm(x) or 1.0)))
print(worst)
"""


def ckpt_command() -> list[str]:
    script = Path(sys.executable).with_name("ckpt")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ckpt_tools"]


Runs = dict[str, list[tuple[float, float, float]]]


def measure(commands: dict[str, list[str]], reps: int) -> Runs:
    results: Runs = {k: [] for k in commands}
    for name, cmd in commands.items():  # warm the page cache and .pyc files
        run_child(cmd)
    for _ in range(reps):  # interleaved, so load changes hit every command alike
        for name, cmd in commands.items():
            results[name].append(run_child(cmd))
    return results


def report(results: Runs, reference: str) -> None:
    """Wall and CPU medians (CPU time is what load from other processes disturbs least)."""
    ref = statistics.median(w for w, _, _ in results[reference])
    print(f"{'command':<34} {'median s':>9} {'min s':>7} {'max s':>7} {'cpu s':>7} "
          f"{'x ' + reference:>12} {'peak RSS':>9}")
    for name, runs in results.items():
        walls = [w for w, _, _ in runs]
        med = statistics.median(walls)
        cpu = statistics.median(c for _, c, _ in runs)
        rss = max(r for _, _, r in runs)
        print(f"{name:<34} {med:9.3f} {min(walls):7.3f} {max(walls):7.3f} {cpu:7.3f} "
              f"{med / ref:11.2f}x {rss:7.0f} MB")


def tree_command(tree: Path) -> list[str]:
    """`ckpt` run from the source tree `tree` (another checkout or an exported commit)."""
    code = (f"import sys; sys.path.insert(0, {str(tree)!r}); sys.argv[0] = 'ckpt'; "
            f"from ckpt_tools.cli import main; main()")
    return [sys.executable, "-c", code]


def bench_startup(reps: int, compare: Path | None = None) -> None:
    ckpt = ckpt_command()
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "ckpt info v3": [*ckpt, "info", "v3"],
        "ckpt diff v2.5 v3": [*ckpt, "diff", "v2.5", "v3"],
        "ckpt diff v2.5 v3 --json": [*ckpt, "diff", "v2.5", "v3", "--json"],
        **({"this tree: diff v2.5 v3": [*tree_command(Path(__file__).parents[1]), "diff",
                                          "v2.5", "v3"],
            "--compare tree: diff v2.5 v3": [*tree_command(compare), "diff", "v2.5", "v3"]}
           if compare else {}),
    }
    print(f"start-up, {reps} runs each, entry point {' '.join(ckpt)}")
    results = measure(commands, reps)
    report(results, "python -c pass")
    diff_med = statistics.median(w for w, _, _ in results["ckpt diff v2.5 v3"])
    info_med = statistics.median(w for w, _, _ in results["ckpt info v3"])
    print(f"ckpt diff v2.5 v3: {diff_med:.3f} s median (goal < 0.5 s: "
          f"{'met' if diff_med < 0.5 else 'NOT met'}), {diff_med / info_med:.2f}x ckpt info v3")


def bench_values(reps: int) -> None:
    ckpt = ckpt_command()
    sets = [arg for k, v in OVERRIDES.items() for arg in ("--set", f"{k}={v}")]
    with tempfile.TemporaryDirectory(prefix="ckpt-bench-diff-") as tmp:
        a, b = Path(tmp) / "fp8", Path(tmp) / "bf16"
        t0 = time.perf_counter()
        for dst, fp8 in ((a, ["--fp8"]), (b, [])):
            subprocess.run([*ckpt, "make-tiny", str(dst), "--preset", "v3", "--real-widths",
                            "--shards", "4", *fp8, *sets], check=True, stdout=subprocess.DEVNULL)
        size = sum(f.stat().st_size for d in (a, b) for f in d.glob("*.safetensors"))
        print(f"\nvalues: FP8 vs BF16 checkpoints, V3 widths, {size / 1e9:.2f} GB together "
              f"(built in {time.perf_counter() - t0:.0f} s), {reps} runs each")
        results = measure({
            "ckpt diff A B --values": [*ckpt, "diff", str(a), str(b), "--values"],
            "baseline: whole tensors in numpy": [sys.executable, "-c", BASELINE_VALUES,
                                                 str(a), str(b)],
        }, reps)
        report(results, "baseline: whole tensors in numpy")
        med = statistics.median(w for w, _, _ in results["ckpt diff A B --values"])
        print(f"ckpt diff --values: {size / med / 1e6:.0f} MB/s of checkpoint bytes")
        shutil.rmtree(a), shutil.rmtree(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=15, help="runs per command (>= 10 for startup)")
    ap.add_argument("--values", action="store_true",
                    help="also bench --values (~3 GB temp data, minutes to build)")
    ap.add_argument("--values-reps", type=int, default=3)
    ap.add_argument("--compare", type=Path, metavar="TREE",
                    help="also time `diff v2.5 v3` from this source tree (e.g. `git archive "
                         "<commit> | tar -x -C /tmp/before`), next to this one")
    args = ap.parse_args()
    bench_startup(max(args.reps, 10), args.compare)
    if args.values:
        bench_values(args.values_reps)
    print(f"\nreproduce: python bench/diff.py --reps {max(args.reps, 10)}"
          + (f" --values --values-reps {args.values_reps}" if args.values else "")
          + (f" --compare {args.compare}" if args.compare else ""))


if __name__ == "__main__":
    main()
