"""Benchmark `ckpt reshard` against a plain copy of the same bytes.

Builds a V3-shaped FP8 checkpoint with the real widths (hidden 7168, 128 heads, dense
width 18432, expert width 2048; 4 layers, 8 experts, a 32k vocabulary, no MTP) in a temp
directory: about 3.3 GB in shards of about 1.1 GB. Then, several times each, in child
processes:

- baseline: `cp` of the shards into an empty directory, then `sync` of the copies
  (ckpt's writers fsync every file they finish, so the durable copy is the fair baseline;
  the plain `cp` time is printed too);
- `ckpt reshard SRC DST --max-shard-size 1GB`;
- `ckpt reshard SRC DST --to deepseek-mp --model-parallel 4` (column splits, row splits
  gathered row by row, experts whole);
- `ckpt reshard MP DST --to hf` (rank pieces interleaved back).

Throughput is the bytes of tensor data written per second; the ratio divides it by the
baseline's. The CPU ratio does the same per CPU second (user + system): on a shared machine
wall times swing with the load, CPU time much less. Peak RSS is the child's ru_maxrss
(os.wait4), so it counts mmap'd pages too.
The source stays in the page cache between runs (24 GB RAM): both sides read it warm.

`--v3-plan` instead times only the planning and the coverage proof at V3 scale: DeepSeek-V3's
real FP8 tensor plan (91,991 tensors) in 163 sparse shards (bench/validate.py's builder, no
data on disk), planned for --to deepseek-mp -N 16 and --max-shard-size 5GB in a child.

Run: python bench/reshard.py [--runs 3] [--shards 3] [--keep DIR] [--tmp DIR] [--v3-plan]
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
from timing import run_child  # bench/timing.py: wall, CPU and peak RSS of one child

# This process stays small on purpose: a forked child's peak RSS starts from its parent's
# (Linux carries the high-water mark across exec), so the checkpoint is built in a child.
OVERRIDES = {"vocab_size": 32768, "num_nextn_predict_layers": 0}


PLAN_V3 = """
import resource, sys, time
from ckpt_tools.commands.reshard_plan import plan_reshard, prove_coverage
src, kind = sys.argv[1], sys.argv[2]
t = time.perf_counter()
plan = (plan_reshard(src, model_parallel=16) if kind == "mp" else
        plan_reshard(src, max_shard_size=5 * 10**9))
planned = time.perf_counter() - t
proof = prove_coverage(plan)
print(f"{planned:.2f} {time.perf_counter() - t - planned:.2f} {len(plan.files)} "
      f"{proof['output_tensors']} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")
"""


def v3_plan(tmp: Path) -> None:
    from validate import build  # bench/validate.py: the sparse V3 checkpoint

    src = tmp / "v3"
    src.mkdir()
    tensors, total = build(src)
    print(f"sparse V3: {tensors:,} tensors, {total / 1e9:.0f} GB apparent, 163 shards")
    for kind in ("mp", "size"):
        cmd = [sys.executable, "-c", PLAN_V3, str(src), kind]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
        what = "--to deepseek-mp -N 16" if kind == "mp" else "--max-shard-size 5GB"
        print(f"{what:<24} plan {out[0]} s, proof {out[1]} s, {out[2]} files, "
              f"{int(out[3]):,} output tensors, peak RSS {out[4]} MB")
    print("reproduce: python bench/reshard.py --v3-plan")


def run(cmd: list[str]) -> tuple[float, float, float]:
    """Wall s, CPU s and peak RSS MB of one child, after flushing earlier runs' dirty pages
    (they must not bill this one)."""
    os.sync()
    return run_child(cmd)


def column_split_share(src: Path) -> float:
    """Share of the tensor bytes that --to deepseek-mp splits on dim 1 (row-parallel
    o_proj / down_proj and their scales, routed experts excepted): those are gathered row
    by row, the rest is copied in large contiguous runs."""
    total = split = 0
    for shard in src.glob("*.safetensors"):
        with open(shard, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            nbytes = info["data_offsets"][1] - info["data_offsets"][0]
            total += nbytes
            module = name.rsplit(".", 1)[0]
            if module.endswith(("o_proj", "down_proj")) and ".experts." not in module:
                split += nbytes
    return split / total


def data_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.safetensors"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--model-parallel", type=int, default=4)
    ap.add_argument("--workers", type=int, help="passed to ckpt (default: ckpt's own)")
    ap.add_argument("--keep", type=Path, help="build (or reuse) the checkpoint here")
    ap.add_argument("--v3-plan", action="store_true",
                    help="only time planning + coverage proof on a sparse V3-scale checkpoint")
    ap.add_argument("--tmp", type=Path, help="where outputs go (default: the system temp dir; "
                                             "/dev/shm measures without the disk)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-reshard-", dir=args.tmp))
    src = args.keep or tmp / "src"
    try:
        if args.v3_plan:
            return v3_plan(tmp)
        if not (src / "config.json").is_file():
            t0 = time.perf_counter()
            print(f"building a V3-shaped FP8 checkpoint in {src} ...", file=sys.stderr)
            subprocess.run([sys.executable, "-c", BUILD, str(src), str(args.shards),
                            json.dumps(OVERRIDES)], check=True)
            print(f"  built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        shards = sorted(src.glob("*.safetensors"))
        size = data_bytes(src)
        tensors = len(json.loads((src / "model.safetensors.index.json").read_text())["weight_map"])
        print(f"source: {len(shards)} shards, {size / 1e9:.2f} GB, {tensors} tensors "
              f"(largest shard {max(p.stat().st_size for p in shards) / 1e9:.2f} GB); "
              f"{100 * column_split_share(src):.0f}% of the bytes are split on dim 1 by "
              f"deepseek-mp (real V3: about 1%)")

        ckpt = [sys.executable, "-m", "ckpt_tools", "reshard"]
        workers = ["--workers", str(args.workers)] if args.workers else []
        n = args.model_parallel
        mp = tmp / "mp-kept"
        subprocess.run([*ckpt, str(src), str(mp), "--to", "deepseek-mp", "--model-parallel",
                        str(n)], check=True, capture_output=True)
        cases = {
            "cp": lambda d: ["sh", "-c", f"cp {' '.join(map(str, shards))} {d}/"],
            "cp + sync": lambda d: ["sh", "-c", f"cp {' '.join(map(str, shards))} {d}/ && "
                                                f"sync {d}/*"],
            "--max-shard-size 1GB": lambda d: [*ckpt, str(src), str(d), "--max-shard-size",
                                                "1GB", *workers],
            f"--to deepseek-mp -N {n}": lambda d: [*ckpt, str(src), str(d), "--to", "deepseek-mp",
                                                  "--model-parallel", str(n), *workers],
            "--to hf (from mp)": lambda d: [*ckpt, str(mp), str(d), "--to", "hf", *workers],
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        cpu: dict[str, list[float]] = {k: [] for k in cases}
        rss: dict[str, list[float]] = {k: [] for k in cases}
        written: dict[str, int] = {}
        for _ in range(args.runs):
            for name, make in cases.items():
                dst = tmp / "dst"
                shutil.rmtree(dst, ignore_errors=True)
                if name.startswith("cp"):
                    dst.mkdir()
                seconds, cpu_seconds, peak = run(make(dst))
                times[name].append(seconds)
                cpu[name].append(cpu_seconds)
                rss[name].append(peak)
                written[name] = data_bytes(dst)
                shutil.rmtree(dst)

        base_rate = written["cp + sync"] / statistics.median(times["cp + sync"])
        base_cpu_rate = written["cp + sync"] / statistics.median(cpu["cp + sync"])
        print(f"\nmedian of {args.runs} runs; workers={args.workers or 'default'}; baseline = "
              f"cp + sync (durable, like ckpt's fsynced writes); CPU = user + system of the child")
        print(f"{'command':<26} {'wall s':>7} {'GB/s':>6} {'ratio':>6} {'CPU s':>6} "
              f"{'CPU ratio':>9} {'peak RSS MB':>12}")
        for name in cases:
            t, c = statistics.median(times[name]), statistics.median(cpu[name])
            rate = written[name] / t
            print(f"{name:<26} {t:>7.2f} {rate / 1e9:>6.2f} {rate / base_rate:>6.2f} {c:>6.2f} "
                  f"{written[name] / c / base_cpu_rate:>9.2f} {max(rss[name]):>12.0f}")
        print(f"\n(all runs, s: { {k: [round(x, 2) for x in v] for k, v in times.items()} })")
        where = f" --tmp {args.tmp}" if args.tmp else ""
        print(f"outputs in {tmp} ({os.statvfs(tmp).f_bsize}-byte blocks); reproduce: python "
              f"bench/reshard.py --runs {args.runs} --shards {args.shards} "
              f"--model-parallel {n}{where}"
              + (f" --workers {args.workers}" if args.workers else ""))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
