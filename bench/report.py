"""The whole speed story in one run: every tensor command against the torch CPU port a user
would write, `cp` of the same bytes and memcpy, with 1 and 2 workers; a Markdown table for
the README.

Data (built first, on --tmp, default /dev/shm so that no disk is in the way, removed at the
end): make-tiny of DeepSeek-V3 at its real widths, FP8 (bench/timing.py's build: hidden
7168, dense width 18432, experts of 2048; 2 layers, --experts routed experts), its BF16
upcast (ours) for quantize and reshard, and make-tiny of DeepSeek-V4-Flash at its real
widths with MXFP4 experts (bench/upcast_v4.py's build). About 5 GB of tmpfs at the defaults.

Rows, each timed end to end as a user runs it (a fresh child process: interpreter start-up
and imports included, on both sides), medians of --reps runs interleaved so that a noisy
neighbour hits every variant alike (bench/timing.py: wall, CPU, peak RSS from os.wait4):
- upcast V3 FP8 -> BF16, torch port: bench/upcast.py's (checked bit-equal there);
- upcast V4 FP8 + MXFP4 -> BF16, torch port: bench/upcast_v4.py's (checked there);
- quantize BF16 -> block FP8, torch port below (128x128 amax / 448, the same tensors as
  ours; its bytes are not compared: rounding may differ in the last bit);
- validate --deep of the FP8 checkpoint (NaN/Inf scan), torch port: bench/validate.py's;
- reshard of the BF16 checkpoint into shards of at most 1 GB, torch port below (load each
  shard, regroup, save_file); and --to deepseek-mp 2 (ours only: no port is that short).
`cp` copies the command's source files; the I/O floor is a child that reads every source
file with pread and writes as many bytes as the command's output (one new file, pwrite of
one 4 MB buffer, no compute; a bare interpreter's start-up included): what the command's
own reads and writes cost on this machine however fast its kernels were (`ckpt / floor`
is how far we are from it). memcpy is the bytes the command reads plus writes at the copy
rate of numpy's copyto in a child (`% memcpy` = that time over ours: 100% would be a
command as cheap as moving its bytes once in memory).

On a shared machine wall time waits for a core: the lead runs this on a quiet machine.
`--quick` runs tiny widths and one repetition: it checks the script, not the speed.

Reproduce: python bench/report.py [--reps 3] [--experts 4] [--v4-experts 8] [--shards 4]
           [--tmp /dev/shm] [--rows upcast-v3,validate]
           [--no-torch]   (the steady state: --experts 40 --shards 8)
           [--quick]
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

from scaling import MEMCPY
from timing import BUILD_V3
from timing import V3_REAL_WIDTH_OVERRIDES as V3_WIDTHS
from timing import run_child
from upcast import BASELINE as TORCH_UPCAST_V3
from upcast_v4 import BASELINE as TORCH_UPCAST_V4
from upcast_v4 import BUILD as BUILD_V4
from upcast_v4 import FLASH_WIDTHS as V4_WIDTHS
from validate import BASELINE_DEEP as TORCH_VALIDATE_DEEP

CKPT = [sys.executable, "-m", "ckpt_tools"]
RESHARD_LIMIT = "1GB"

TORCH_QUANTIZE = r"""
import json, sys
from pathlib import Path
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
src, dst, like = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
index = json.loads((like / "model.safetensors.index.json").read_text())["weight_map"]
quantized = {n[:-len("_scale_inv")] for n in index if n.endswith("_scale_inv")}
dst.mkdir(parents=True, exist_ok=True)
weight_map = {}
for shard in sorted(p.name for p in src.glob("*.safetensors")):
    out = {}
    for name, w in load_file(str(src / shard)).items():
        weight_map[name] = shard
        if name not in quantized:
            out[name] = w
            continue
        m, n = w.shape
        x = torch.nn.functional.pad(w.float(), (0, -n % 128, 0, -m % 128))
        x = x.view(x.shape[0] // 128, 128, x.shape[1] // 128, 128)
        scale = (x.abs().amax((1, 3)) / 448).clamp(min=1e-12)
        q = (x / scale[:, None, :, None]).clamp(-448, 448).to(torch.float8_e4m3fn)
        out[name] = q.view(x.shape[0] * 128, -1)[:m, :n].contiguous()
        out[name + "_scale_inv"] = scale
        weight_map[name + "_scale_inv"] = shard
    save_file(out, str(dst / shard), metadata={"format": "pt"})
(dst / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
"""

IO_FLOOR = r"""
import os, sys
from pathlib import Path
src, out, written = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
buf = memoryview(bytearray(4 << 20))
for path in sorted(src.glob("*.safetensors")):
    fd, pos = os.open(path, os.O_RDONLY), 0
    while n := os.preadv(fd, [buf], pos):
        pos += n
    os.close(fd)
if written:
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / "floor.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    for at in range(0, written, len(buf)):
        os.pwrite(fd, buf[:min(len(buf), written - at)], at)
    os.close(fd)
"""

TORCH_RESHARD = r"""
import json, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
src, dst, limit = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
dst.mkdir(parents=True, exist_ok=True)
shards, current, size = [], {}, 0
def flush():
    global current, size
    if current:
        name = f"model-{len(shards) + 1:05d}.safetensors"
        save_file(current, str(dst / name), metadata={"format": "pt"})
        shards.append((name, list(current)))
    current, size = {}, 0
for shard in sorted(p.name for p in src.glob("*.safetensors")):
    for name, t in load_file(str(src / shard)).items():
        nbytes = t.numel() * t.element_size()
        if size and size + nbytes > limit:
            flush()
        current[name] = t
        size += nbytes
flush()
weight_map = {n: f for f, names in shards for n in names}
(dst / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
"""


def tensor_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.glob("*.safetensors"))


def build(root: Path, args, needed: set[str]) -> dict[str, Path]:
    """The sources the chosen rows read (`needed`), each built in a child (this process
    stays small: its RSS would be every later child's)."""
    fp8, bf16, v4 = root / "v3-fp8", root / "v3-bf16", root / "v4"
    if "fp8" in needed or "bf16" in needed:
        if args.quick:
            cmd = ["make-tiny", str(fp8), "--preset", "v3", "--fp8", "--shards", "2"]
            subprocess.run([*CKPT, *cmd], check=True, capture_output=True)
        else:
            v3_widths = {**V3_WIDTHS, "n_routed_experts": args.experts}
            subprocess.run([sys.executable, "-c", BUILD_V3, str(fp8), str(args.shards),
                            json.dumps(v3_widths)], check=True)
    if "v4" in needed:
        if args.quick:
            cmd = ["make-tiny", str(v4), "--preset", "v4-flash", "--fp8", "--expert-dtype",
                   "fp4", "--shards", "2"]
            subprocess.run([*CKPT, *cmd], check=True, capture_output=True)
        else:
            v4_widths = {**V4_WIDTHS, "n_routed_experts": args.v4_experts}
            subprocess.run([sys.executable, "-c", BUILD_V4, str(v4), "2",
                            json.dumps(v4_widths)], check=True)
    if "bf16" in needed:
        subprocess.run([*CKPT, "upcast", str(fp8), str(bf16), "-q"], check=True,
                       stdout=subprocess.DEVNULL)
        if "fp8" not in needed:
            shutil.rmtree(fp8)
    return {k: p for k, p in {"fp8": fp8, "bf16": bf16, "v4": v4}.items() if k in needed}


# row key -> the source it reads
ROW_SOURCES = {"upcast-v3": "fp8", "upcast-v4": "v4", "quantize": "bf16", "validate": "fp8",
               "reshard": "bf16", "reshard-mp": "bf16"}


def rows(src: dict[str, Path], out: Path, quantized_like: Path) -> list[dict]:
    """Every row: its key, name, source, our command (`out` the destination) and the torch
    port (its script and argv; None: no port)."""
    src = {k: src.get(k, Path("unbuilt")) for k in ("fp8", "bf16", "v4")}
    limit = str(10**9)
    return [
        {"key": "upcast-v3", "name": "upcast V3 FP8 -> BF16", "src": src["fp8"],
         "ours": ["upcast", src["fp8"], out, "-q"],
         "torch": (TORCH_UPCAST_V3, [src["fp8"], out])},
        {"key": "upcast-v4", "name": "upcast V4 FP8+MXFP4 -> BF16", "src": src["v4"],
         "ours": ["upcast", src["v4"], out, "-q"],
         "torch": (TORCH_UPCAST_V4, [src["v4"], out])},
        {"key": "quantize", "name": "quantize BF16 -> FP8", "src": src["bf16"],
         "ours": ["quantize", src["bf16"], out, "-q"],
         "torch": (TORCH_QUANTIZE, [src["bf16"], out, quantized_like])},
        {"key": "validate", "name": "validate --deep (FP8)", "src": src["fp8"],
         "ours": ["validate", src["fp8"], "--deep", "-q"],
         "torch": (TORCH_VALIDATE_DEEP, [src["fp8"]])},
        {"key": "reshard", "name": f"reshard --max-shard-size {RESHARD_LIMIT}", "src": src["bf16"],
         "ours": ["reshard", src["bf16"], out, "--max-shard-size", RESHARD_LIMIT, "-q"],
         "torch": (TORCH_RESHARD, [src["bf16"], out, limit])},
        {"key": "reshard-mp", "name": "reshard --to deepseek-mp -N 2", "src": src["bf16"],
         "ours": ["reshard", src["bf16"], out, "--to", "deepseek-mp", "--model-parallel", "2",
                  "-q"],
         "torch": None},
    ]


def timed(cmd: list, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    wall, cpu, rss = run_child([str(c) for c in cmd])
    moved = tensor_bytes(out) if out.is_dir() else 0
    shutil.rmtree(out, ignore_errors=True)
    return {"wall": wall, "cpu": cpu, "rss": rss, "written": moved}


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--experts", type=int, default=V3_WIDTHS["n_routed_experts"])
    ap.add_argument("--v4-experts", type=int, default=8)
    ap.add_argument("--shards", type=int, default=4, help="Shards of the V3 checkpoint")
    ap.add_argument("--rows", default=",".join(ROW_SOURCES),
                    help=f"Which rows, comma-separated (default all: {','.join(ROW_SOURCES)})")
    ap.add_argument("--no-torch", action="store_true",
                    help="Skip the torch ports (at large sizes: their RSS is the checkpoint's)")
    ap.add_argument("--tmp", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    ap.add_argument("--quick", action="store_true",
                    help="Tiny widths, one repetition: checks the script, not the speed")
    args = ap.parse_args()
    chosen = args.rows.split(",")
    if unknown := set(chosen) - set(ROW_SOURCES):
        ap.error(f"--rows: unknown {', '.join(sorted(unknown))}; expected some of "
                 f"{', '.join(ROW_SOURCES)}")
    reps = 1 if args.quick else args.reps
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="bench-report-", dir=args.tmp))
    try:
        src = build(root, args, {ROW_SOURCES[k] for k in chosen})
        out = root / "out"
        like = root / "quantized-by-ckpt"  # which tensors the torch port quantises
        if "quantize" in chosen and not args.no_torch:
            subprocess.run([*CKPT, "quantize", str(src["bf16"]), str(like), "-q"], check=True,
                           stdout=subprocess.DEVNULL)
        memcpy = json.loads(subprocess.run([sys.executable, "-c", MEMCPY], check=True,
                                           capture_output=True, text=True).stdout)
        print(f"data on {root}: " + ", ".join(f"{k} {tensor_bytes(p) / 1e9:.2f} GB"
                                              for k, p in src.items())
              + f"; built in {time.monotonic() - started:.0f} s; memcpy {memcpy / 1e9:.2f} GB/s",
              flush=True)
        plan = [r for r in rows(src, out, like) if r["key"] in chosen]
        if args.no_torch:
            plan = [{**r, "torch": None} for r in plan]
        table = measure_rows(plan, out, reps, memcpy)
        shutil.rmtree(like, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_table(table, reps, args, time.monotonic() - started)


def measure_rows(plan: list[dict], out: Path, reps: int, memcpy: float) -> list[dict]:
    results = []
    for row in plan:
        writes = row["ours"][2] == out  # a command with an output directory
        # the floor writes as many bytes as our 1-worker run just did (it runs first)
        variants = {"1": lambda: [*CKPT, *row["ours"], "--workers", "1"],
                    "2": lambda: [*CKPT, *row["ours"], "--workers", "2"],
                    "floor": lambda: [sys.executable, "-c", IO_FLOOR, row["src"], out,
                                      runs["1"][-1]["written"] if writes else 0],
                    "cp": lambda: ["cp", "-r", row["src"], out]}
        if row["torch"] is not None:
            script, argv = row["torch"]
            variants["torch"] = lambda: [sys.executable, "-c", script, *argv]
        runs: dict[str, list[dict]] = {k: [] for k in variants}
        for _ in range(reps):  # interleaved
            for name, cmd in variants.items():
                runs[name].append(timed(cmd(), out))
        read = tensor_bytes(row["src"])
        written = median(runs["1"], "written")
        result = {"name": row["name"], "moved": read + written,
                  "memcpy": (read + written) / memcpy,
                  "command": "ckpt " + " ".join(str(c) for c in row["ours"]
                                                if c != "-q").replace(str(out.parent), "$D")}
        for name, rs in runs.items():
            result[name] = {k: median(rs, k) for k in ("wall", "cpu", "rss")}
        results.append(result)
        print(f"  {row['name']}: " + ", ".join(f"{k} {v['wall']:.2f} s"
                                               for k, v in result.items()
                                               if isinstance(v, dict)), flush=True)
    return results


def print_table(table: list[dict], reps: int, args, seconds: float) -> None:
    print(f"\nmedians of {reps} run(s), wall seconds end to end (start-up included), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; whole run "
          f"{seconds:.0f} s\n")
    print("| command | GB moved | ckpt 1 worker s | ckpt 2 workers s | 2 vs 1 | torch port s "
          "| torch / ckpt | cp s | I/O floor s | ckpt / floor | memcpy s | % memcpy (1 worker) "
          "| peak RSS ckpt / torch MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in table:
        one, two, cp = r["1"]["wall"], r["2"]["wall"], r["cp"]["wall"]
        floor = r["floor"]["wall"]
        torch = r.get("torch")
        port = f"{torch['wall']:.2f} | {torch['wall'] / one:.2f}x" if torch else "n/a | n/a"
        port_rss = f"{torch['rss']:.0f}" if torch else "n/a"
        print(f"| {r['name']} | {r['moved'] / 1e9:.2f} | {one:.2f} | {two:.2f} | "
              f"{one / two:.2f}x | {port} | {cp:.2f} | {floor:.2f} | {one / floor:.1f}x | "
              f"{r['memcpy']:.3f} | "
              f"{100 * r['memcpy'] / one:.1f}% | {r['1']['rss']:.0f} / {port_rss} |")
    print("\ncommands ($D: the data directory; each also ran with --workers 1 and 2):")
    for r in table:
        print(f"- {r['name']}: `{r['command']}`")
    flags = " --quick" if args.quick else (f" --reps {args.reps} --experts {args.experts} "
                                           f"--v4-experts {args.v4_experts} --shards {args.shards}")
    if args.rows != ",".join(ROW_SOURCES):
        flags += f" --rows {args.rows}"
    if args.no_torch:
        flags += " --no-torch"
    print(f"\nreproduce: python bench/report.py{flags}"
          + (f" --tmp {args.tmp}" if args.tmp else ""))


if __name__ == "__main__":
    main()
