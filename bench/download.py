"""Benchmark `ckpt download` against huggingface_hub's own `hf download`, on a loopback Hub.

Data: a V3-shaped FP8 checkpoint with V3's real widths (1 dense + 1 MoE layer, 4 routed
experts, small vocab: about 1 GB in 6 shards), built with make-tiny in a temp dir and
published on the fake Hub of tests/fake_hub.py, served from this process on 127.0.0.1.
Nothing leaves the machine.

Commands, run interleaved, each a fresh subprocess with an empty destination and its own
HF_HOME (so nothing is cached), wall time and peak RSS from os.wait4 on that child:

- baseline `hf download REPO --local-dir D` (the client alone: no checksum, no plan);
- `ckpt download REPO --local-dir D` (+ SHA-256 of every byte, `ckpt validate`, manifest);
- `ckpt download REPO --local-dir D --no-verify` (sizes and headers only);
- `ckpt download REPO --local-dir D --layers 1-1` (the MoE layer: only its shards).

For each, the bytes the server sent are summed from its request log.

Reproduce: python bench/download.py [--reps 3]
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

from timing import run_child  # bench/timing.py, shared by the benchmarks

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_hub import FakeHub  # noqa: E402

REPO = "bench/v3-real-widths"
OVERRIDES = {"vocab_size": 8192, "num_nextn_predict_layers": 0, "first_k_dense_replace": 1,
             "num_hidden_layers": 2, "n_routed_experts": 4, "num_experts_per_tok": 2,
             "n_group": 2, "topk_group": 1}
SHARDS = 6


def script(name: str) -> list[str]:
    """The console script next to this interpreter (not a pyenv shim, whose start-up would
    be counted)."""
    path = Path(sys.executable).with_name(name)
    if path.is_file():
        return [str(path)]
    return [sys.executable, "-m", "ckpt_tools"] if name == "ckpt" else [name]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="runs per command")
    args = ap.parse_args()
    ckpt, hf = script("ckpt"), script("hf")
    with tempfile.TemporaryDirectory(prefix="ckpt-bench-download-") as tmp:
        tmp = Path(tmp)
        src = tmp / "src"
        t0 = time.perf_counter()
        sets = [a for k, v in OVERRIDES.items() for a in ("--set", f"{k}={v}")]
        subprocess.run([*ckpt, "make-tiny", str(src), "--preset", "v3", "--real-widths", "--fp8",
                        "--shards", str(SHARDS), *sets], check=True, stdout=subprocess.DEVNULL)
        sizes = {p.name: p.stat().st_size for p in src.iterdir()}
        total = sum(sizes.values())
        print(f"checkpoint: {total / 1e9:.2f} GB in {len(sizes)} files "
              f"(built in {time.perf_counter() - t0:.0f} s); {args.reps} runs per command")
        with FakeHub(tmp / "hub") as hub:
            hub.add_commit(REPO, src, copy=False)
            commands = {
                "python -c pass (RSS floor)": [sys.executable, "-c", "pass", "--local-dir"],
                "baseline: hf download": [*hf, "download", REPO, "--local-dir"],
                "ckpt download": [*ckpt, "download", REPO, "--local-dir"],
                "ckpt download --no-verify": [*ckpt, "download", REPO, "--no-verify",
                                              "--local-dir"],
                "ckpt download --layers 1-1": [*ckpt, "download", REPO, "--layers", "1-1",
                                               "--local-dir"],
            }
            results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in commands}
            sent: dict[str, int] = {}
            for rep in range(args.reps):
                for name, cmd in commands.items():
                    dest, home = tmp / "dest", tmp / "home"
                    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(home),
                               HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1",
                               HF_HUB_DISABLE_PROGRESS_BARS="1")
                    env.pop("HF_TOKEN", None)
                    start = len(hub.log)
                    results[name].append(run_child([*cmd, str(dest)], env))
                    sent[name] = sum(sizes[r.path.rsplit("/", 1)[-1]]
                                     for r in hub.gets(since=start))
                    shutil.rmtree(dest, ignore_errors=True), shutil.rmtree(home, ignore_errors=True)
    base = statistics.median(w for w, _, _ in results["baseline: hf download"])
    print(f"{'command':<28} {'median s':>9} {'min s':>7} {'max s':>7} {'cpu s':>7} "
          f"{'x baseline':>11} {'peak RSS':>9} {'bytes sent':>14}")
    for name, runs in results.items():
        walls = [w for w, _, _ in runs]
        med = statistics.median(walls)
        print(f"{name:<28} {med:9.2f} {min(walls):7.2f} {max(walls):7.2f} "
              f"{statistics.median(c for _, c, _ in runs):7.2f} {med / base:10.2f}x "
              f"{max(r for _, _, r in runs):6.0f} MB {sent[name]:>14,}")
    layers = sent["ckpt download --layers 1-1"]
    print(f"--layers 1-1 fetched {layers / total:.1%} of the checkpoint's bytes")
    print(f"\nreproduce: python bench/download.py --reps {args.reps}")


if __name__ == "__main__":
    main()
