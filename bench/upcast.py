"""Benchmark `ckpt upcast` against the usual torch CPU port, on a ~1.2 GB FP8 checkpoint.

The checkpoint is make-tiny with DeepSeek V3's real widths (hidden 7168, dense width 18432,
experts of 2048, 128 heads) and few layers/experts, built (in a child process, so this one
stays small) in a temp dir that is removed afterwards. Each run is a child process measured
by bench/timing.py's run_child (os.wait4: wall, CPU, peak RSS of the child and the workers
it waited for), after an `os.sync()` so that no earlier run's writeback is billed to it.
The baseline does what CPU forks of DeepSeek's fp8_cast_bf16.py do: `load_file` each whole
shard (two cached, for scales in another shard), expand the scales with repeat_interleave,
multiply in float32, cast to BF16, `save_file`. Both read the same warm page cache; ours
also fsyncs every shard it writes (its crash safety), the baseline does not. The two
outputs are checked to hold the same values once.

Reproduce: python bench/upcast.py [--reps 5] [--shards 4] [--tmp DIR]
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
import time
from pathlib import Path

from timing import BUILD_V3 as BUILD
from timing import V3_REAL_WIDTH_OVERRIDES as OVERRIDES
from timing import run_child

BASELINE = r"""
import json, sys, time
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file

t0 = time.monotonic()  # after imports: the conversion alone
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
weight_map = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
dst.mkdir(parents=True, exist_ok=True)
cache = {}

def shard_tensors(shard):
    if shard not in cache:
        cache[shard] = load_file(str(src / shard))
        if len(cache) > 2:
            del cache[next(iter(cache))]
    return cache[shard]

new_map = {}
for shard in sorted(set(weight_map.values())):
    out = {}
    for name, w in shard_tensors(shard).items():
        if name.endswith("_scale_inv"):
            continue
        if w.element_size() == 1:
            scale_name = name + "_scale_inv"
            s = shard_tensors(weight_map[scale_name])[scale_name]
            m, n = w.shape
            full = s.repeat_interleave(128, 0).repeat_interleave(128, 1)[:m, :n]
            out[name] = (w.to(torch.float32) * full).to(torch.bfloat16)
        else:
            out[name] = w
        new_map[name] = shard
    save_file(out, str(dst / shard), metadata={"format": "pt"})
    del out
index = {"metadata": {}, "weight_map": new_map}
(dst / "model.safetensors.index.json").write_text(json.dumps(index))
print(json.dumps({"seconds": time.monotonic() - t0}))
"""


# Compares every tensor of two outputs (dtype, shape, bits; NaN need only meet NaN). As a child:
# a parent's peak RSS is inherited by every child it forks afterwards.
CHECK = r"""
import json, sys, torch
from safetensors import safe_open
a, b = sys.argv[1], sys.argv[2]
wa = json.load(open(a + "/model.safetensors.index.json"))["weight_map"]
wb = json.load(open(b + "/model.safetensors.index.json"))["weight_map"]
assert set(wa) == set(wb), "different tensor sets"
for name, shard in wa.items():
    with safe_open(a + "/" + shard, "pt") as fa, safe_open(b + "/" + wb[name], "pt") as fb:
        x, y = fa.get_tensor(name), fb.get_tensor(name)
    assert x.dtype == y.dtype and x.shape == y.shape, name
    if x.is_floating_point():
        nan = x.float().isnan()
        assert torch.equal(nan, y.float().isnan()) and torch.equal(x[~nan], y[~nan]), name
    else:
        assert torch.equal(x, y), name
print(len(wa))
"""


def measure(cmd: list[str]) -> dict:
    os.sync()
    wall, cpu, rss = run_child(cmd)
    return {"wall": wall, "cpu": cpu, "maxrss_mb": rss}


def ours(src: Path, dst: Path, workers: int) -> dict:
    return measure([sys.executable, "-m", "ckpt_tools", "upcast", str(src), str(dst),
                    "--workers", str(workers), "-q"])


def baseline(src: Path, dst: Path) -> dict:
    return measure([sys.executable, "-c", BASELINE, str(src), str(dst)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--tmp", default=None, help="Directory for the data (default: the system's)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-upcast-", dir=args.tmp))
    try:
        src = root / "src"
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", BUILD, str(src), str(args.shards),
                        json.dumps(OVERRIDES)], check=True)
        size = sum(p.stat().st_size for p in src.glob("*.safetensors"))
        print(f"source: {len(list(src.glob('*.safetensors')))} shards, {size / 1e9:.3f} GB "
              f"(built in {time.monotonic() - t0:.0f} s)", flush=True)
        labels = ("baseline (torch)", "ckpt --workers 1", "ckpt --workers 2")
        commands = {labels[0]: lambda d: baseline(src, d), labels[1]: lambda d: ours(src, d, 1),
                    labels[2]: lambda d: ours(src, d, 2)}
        runs: dict[str, list[dict]] = {label: [] for label in labels}
        for rep in range(args.reps):
            for label in labels:
                dst = root / "out"
                shutil.rmtree(dst, ignore_errors=True)
                runs[label].append(commands[label](dst))
                if rep == 0 and label == labels[1]:
                    baseline(src, root / "base")
                    same = subprocess.run(
                        [sys.executable, "-c", CHECK, str(dst), str(root / "base")],
                        check=True, capture_output=True, text=True).stdout.strip()
                    print(f"check: {same} tensors equal to the baseline's", flush=True)
                    shutil.rmtree(root / "base")
                r = runs[label][-1]
                print(f"  rep {rep + 1} {label:17s} wall {r['wall']:6.2f} s  CPU {r['cpu']:6.2f} s"
                      f"  peak RSS {r['maxrss_mb']:7.0f} MB", flush=True)
        print(f"\nmedians of {args.reps} runs on {size / 1e9:.3f} GB of FP8 checkpoint "
              f"(GB/s = checkpoint bytes / wall seconds):")
        print(f"{'':18s} {'wall s':>7s} {'GB/s':>6s} {'CPU s':>7s} {'peak RSS MB':>12s}")
        med = {}
        for label, rs in runs.items():
            wall, cpu, rss = (statistics.median(r[k] for r in rs)
                              for k in ("wall", "cpu", "maxrss_mb"))
            med[label] = (wall, cpu, rss)
            print(f"{label:18s} {wall:7.2f} {size / wall / 1e9:6.3f} {cpu:7.2f} {rss:12.0f}")
        (bw, bc, brss), (w1, c1, rss1), (w2, _, _) = (med[label] for label in labels)
        print(f"\nthroughput ckpt (1 worker) / baseline: {bw / w1:.1f}x (goal >= 3x); "
              f"CPU seconds: {bc / c1:.1f}x fewer")
        print(f"peak RSS ckpt / baseline: {rss1 / brss:.3f} (goal <= 0.333)")
        print(f"scaling: --workers 2 is {w1 / w2:.2f}x the throughput of --workers 1")
        print(f"\nreproduce: python bench/upcast.py --reps {args.reps} --shards {args.shards}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
