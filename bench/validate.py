"""Benchmark header-only `ckpt validate` on a V3- or V4-Pro-scale checkpoint. Goals: V3 under
1 s, V4-Pro under 2 s.

Builds, in a temp directory, DeepSeek-V3's real FP8 tensor plan (91,991 tensors,
688,574,839,360 bytes of tensor data) in 163 shards like the release (with --preset v4-pro:
DeepSeek-V4-Pro's plan, 145,116 tensors in 64 shards, FP4 experts): real headers
(`{"format": "pt"}`, every dtype, shape and offset), data left as holes (each file is
truncated up to its full size, so ~688 GB apparent and ~20 MB on disk), an index with
`total_size`, and V3's config.json. Then, interleaved, each a fresh subprocess:

- `ckpt validate DIR` (structure, FP8 pairing, the whole tensor plan; no data read);
- baseline, what a loader does before reading weights: load the index, then open every
  shard with `safetensors.safe_open` and list its keys (Rust header parser, no checks);
- `python -c pass`, the interpreter floor both pay.

Wall time and CPU time are medians over --reps runs; peak RSS is the child's ru_maxrss
from os.wait4 (the data is built in a child so that this process, whose RSS every child
inherits as a floor, stays small). ckpt runs as the console script next to this
interpreter (a pyenv shim would add its bash start-up). Before timing, the run checks that
validate finds nothing on this checkpoint and one `shard-truncated` after a shard loses
its last byte.

With --deep: `ckpt validate DIR --deep` on a real-width V3 FP8 checkpoint (make-tiny:
hidden 7168, 1 dense + 1 MoE layer, 4 experts, 32k vocabulary; about 1.9 GB in 3 shards)
against the obvious script (safetensors.torch.load_file of each shard, then isnan/isinf
per tensor), both reading warm from the page cache. Peak RSS shows the memory bound: one
16 MB chunk per worker against whole shards.

Reproduce: python bench/validate.py [--reps 7] [--preset v3|v4-pro] [--keep DIR] [--deep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import run_child

from ckpt_tools.io.index import INDEX_FILE, shard_file_name
from ckpt_tools.presets import find_preset
from ckpt_tools.configs.sources import CONFIG_FILE
from ckpt_tools.inventory.tensor_plan import plan_for

# preset -> (shards, as in its release; header-only validate goal in seconds)
PRESETS = {"v3": (163, 1.0), "v4-pro": (64, 2.0)}
DEEP_OVERRIDES = {"vocab_size": 32768, "num_nextn_predict_layers": 0, "first_k_dense_replace": 1,
                  "num_hidden_layers": 2, "n_routed_experts": 4, "num_experts_per_tok": 2,
                  "n_group": 2, "topk_group": 1}

BASELINE = r"""
import json, sys
from pathlib import Path
from safetensors import safe_open
root = Path(sys.argv[1])
weight_map = json.loads((root / "model.safetensors.index.json").read_text())["weight_map"]
n = 0
for shard in dict.fromkeys(weight_map.values()):
    with safe_open(str(root / shard), "np") as f:
        n += len(list(f.keys()))
assert n == len(weight_map), n
"""

BASELINE_DEEP = r"""
import json, sys
from pathlib import Path
import torch
from safetensors.torch import load_file
root = Path(sys.argv[1])
weight_map = json.loads((root / "model.safetensors.index.json").read_text())["weight_map"]
bad = 0
for shard in dict.fromkeys(weight_map.values()):
    for name, t in load_file(str(root / shard)).items():  # the whole shard in memory
        if t.dtype == torch.float8_e4m3fn:
            bad += int((t.view(torch.uint8) & 0x7F == 0x7F).sum())
        else:
            bad += int(torch.isnan(t).sum() + torch.isinf(t).sum())
print(bad)
"""


def build(dst: Path, preset_name: str) -> tuple[int, int]:
    """Write the sparse checkpoint of `preset_name`; (tensors, tensor bytes)."""
    preset = find_preset(preset_name)
    shards = PRESETS[preset_name][0]
    plan = plan_for(preset.config)
    total = plan.total_bytes
    groups: list[list] = [[] for _ in range(shards)]
    done = 0
    for spec in plan.specs:  # contiguous, about equal bytes per shard
        groups[min(shards - 1, done * shards // total)].append(spec)
        done += spec.nbytes
    weight_map = {}
    for i, group in enumerate(groups, start=1):
        name = shard_file_name(i, shards)
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for s in group:
            header[s.name] = {"dtype": s.dtype, "shape": list(s.shape),
                              "data_offsets": [offset, offset + s.nbytes]}
            offset += s.nbytes
            weight_map[s.name] = name
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with open(dst / name, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            f.truncate(8 + len(raw) + offset)  # a hole: no data blocks on disk
    (dst / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total},
                                              "weight_map": weight_map}))
    (dst / CONFIG_FILE).write_text(json.dumps(preset.raw_config, indent=2))
    return len(weight_map), total


def ckpt_command() -> list[str]:
    script = Path(sys.executable).with_name("ckpt")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ckpt_tools"]


def output(cmd: list[str], ok: tuple[int, ...] = (0,)) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode not in ok:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def sanity(ckpt: list[str], root: Path, tensors: int, shards: int) -> None:
    """validate finds nothing here, and the one defect we make."""
    doc = json.loads(output([*ckpt, "validate", str(root), "--json"]))
    assert doc["findings"] == [] and doc["tensors"] == tensors, doc["findings"][:3]
    victim = root / shard_file_name(shards * 2 // 3, shards)
    size = victim.stat().st_size
    os.truncate(victim, size - 1)
    try:
        doc = json.loads(output([*ckpt, "validate", str(root), "--json"], ok=(1,)))
        # V4's expert format is judged from the tensors, so it may report more after this
        assert doc["findings"][0]["code"] == "shard-truncated", doc["findings"][:3]
    finally:
        os.truncate(victim, size)


def measure(commands: dict[str, list[str]], reps: int) -> dict[str, list[float]]:
    """Median (wall s, CPU s, peak RSS MB) per command, runs interleaved after a warm-up."""
    for cmd in commands.values():  # warm page cache and .pyc files
        run_child(cmd)
    results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in commands}
    for _ in range(reps):  # interleaved, so load changes hit every command alike
        for name, cmd in commands.items():
            results[name].append(run_child(cmd))
    med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in results.items()}
    print(f"\nmedians of {reps} runs (load average now {os.getloadavg()[0]:.2f}):")
    print(f"{'command':<36}{'wall s':>8}{'CPU s':>8}{'peak RSS MB':>13}")
    for name, (wall, cpu, rss) in med.items():
        print(f"{name:<36}{wall:>8.2f}{cpu:>8.2f}{rss:>13.0f}")
    return med


def deep(ckpt: list[str], root: Path, reps: int) -> None:
    path = root / "deep"
    sets = [x for k, v in DEEP_OVERRIDES.items() for x in ("--set", f"{k}={v}")]
    made = json.loads(output([*ckpt, "make-tiny", str(path), "--preset", "v3", "--fp8",
                              "--shards", "3", "--real-widths", *sets, "--json"]))
    gb = made["total_bytes"] / 1e9
    print(f"\n--deep on {made['tensors']:,} tensors, {gb:.2f} GB (real V3 widths, FP8)")
    med = measure({"ckpt validate --deep": [*ckpt, "validate", str(path), "--deep"],
                   "baseline: load_file + isnan/isinf": [sys.executable, "-c", BASELINE_DEEP,
                                                        str(path)]}, reps)
    ours, base = med["ckpt validate --deep"], med["baseline: load_file + isnan/isinf"]
    print(f"validate --deep: {gb / ours[0]:.2f} GB/s; {ours[0] / base[0]:.2f}x the baseline's "
          f"time at {ours[2] / base[2]:.2f}x its peak RSS")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="v3")
    ap.add_argument("--keep", type=Path, help="build here and keep it (default: a temp dir)")
    ap.add_argument("--deep", action="store_true", help="also time --deep on ~1.9 GB")
    ap.add_argument("--build-into", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_into:  # in a child, so that this process stays small (see below)
        print(json.dumps(build(args.build_into, args.preset)))
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="ckpt-bench-validate-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        # Children report the larger of their own peak RSS and that of the process they were
        # forked from (Linux keeps maxrss across exec), so the data is built in a child.
        t0 = time.perf_counter()
        tensors, nbytes = json.loads(output([sys.executable, __file__, "--build-into", str(root),
                                             "--preset", args.preset]))
        shards, goal = PRESETS[args.preset]
        apparent = sum(p.stat().st_size for p in root.iterdir())
        on_disk = sum(p.stat().st_blocks * 512 for p in root.iterdir())
        print(f"built {args.preset}: {tensors:,} tensors ({nbytes / 1e9:,.1f} GB of tensor data) "
              f"in {shards} shards in {time.perf_counter() - t0:.1f} s: "
              f"{apparent / 1e9:,.1f} GB apparent, {on_disk / 1e6:,.1f} MB on disk, at {root}")
        ckpt = ckpt_command()
        sanity(ckpt, root, tensors, shards)
        med = measure({
            "ckpt validate (header-only)": [*ckpt, "validate", str(root)],
            "baseline: index + safe_open keys": [sys.executable, "-c", BASELINE, str(root)],
            "python -c pass": [sys.executable, "-c", "pass"],
        }, args.reps)
        ours, base = med["ckpt validate (header-only)"], med["baseline: index + safe_open keys"]
        verdict = "meets" if ours[0] < goal else "MISSES"
        print(f"\nvalidate / baseline: {ours[0] / base[0]:.2f}x wall, "
              f"{ours[1] / base[1]:.2f}x CPU; {verdict} the {goal:g} s goal ({ours[0]:.2f} s)")
        if args.deep:
            deep(ckpt, root, max(3, args.reps // 2))
        print(f"\nreproduce: {sys.executable} bench/validate.py --reps {args.reps} "
              f"--preset {args.preset}"
              + (" --deep" if args.deep else ""))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
