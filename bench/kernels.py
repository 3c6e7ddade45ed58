"""Throughput of the number-format kernels, compiled (numba) and NumPy, against memcpy.

Builds its own data (a V3-width 7168 x 2048 block by default: FP8 codes of every finite
value, BF16 weights, MXFP4 experts), then for each kernel and backend times `--reps` calls
and prints the median CPU and wall time per call as G elements/s, and the ratio to memcpy
of the same bytes per element (read + written: FP8 -> BF16 3, FP8 -> F32 5, MXFP4 -> BF16
2.5, BF16 -> FP8 3, F32 -> MXFP4 4.5), timed the same way. Dequantisation writes into
preallocated outputs; quantisation allocates its outputs, as a conversion does. The first
compiled call (numba's compile, or its cache load) is reported apart. The machine may be
shared: CPU time (time.process_time) is the figure to compare, wall time is beside it.

Reproduce: python bench/kernels.py [--rows 7168] [--cols 2048] [--reps 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from ckpt_tools.formats import fp8_block, kernels, mxfp4  # noqa: E402
from ckpt_tools.formats.e8m0 import E8M0  # noqa: E402
from ckpt_tools.formats.round_trip import RoundTripStats  # noqa: E402


def timed(fn, reps: int) -> tuple[float, float]:
    """Median (CPU s, wall s) of `reps` calls."""
    cpu, wall = [], []
    for _ in range(reps):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return statistics.median(cpu), statistics.median(wall)


def cases(rows: int, cols: int) -> list[tuple[str, float, int, object]]:
    """(name, bytes per element, elements, call) for every kernel."""
    rng = np.random.default_rng(0)
    finite = np.setdiff1d(np.arange(256), [0x7F, 0xFF]).astype(np.uint8)  # e4m3 NaN codes out
    codes = rng.choice(finite, (rows, cols)).view(fp8_block.FP8_E4M3)
    e5m2 = rng.integers(0, 0x7C, (rows, cols), dtype=np.uint8).view(fp8_block.FP8_E5M2)
    grid = fp8_block.block_grid((rows, cols))
    scale = (rng.random(grid, dtype=np.float32) * 1e-3 + 1e-5).astype(np.float32)
    e8m0 = rng.integers(110, 130, grid, dtype=np.uint8).view(E8M0)
    packed = rng.integers(-128, 128, (rows, cols // 2), dtype=np.int8)
    fp4_scale = rng.integers(110, 130, (rows, cols // 32), dtype=np.uint8).view(E8M0)
    weight = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(fp8_block.BF16)
    weight32 = weight.astype(np.float32)
    bf16, f32 = np.empty((rows, cols), fp8_block.BF16), np.empty((rows, cols), np.float32)
    n = rows * cols
    return [
        ("FP8 e4m3 -> BF16 (F32 scales)", 3, n,
         lambda: fp8_block.dequantize(codes, scale, out_dtype=fp8_block.BF16, out=bf16)),
        ("FP8 e4m3 -> BF16 (E8M0 scales)", 3, n,
         lambda: mxfp4.dequantize_fp8(codes, e8m0, fp8_block.BF16, out=bf16)),
        ("FP8 e5m2 -> BF16 (F32 scales)", 3, n,
         lambda: fp8_block.dequantize(e5m2, scale, out_dtype=fp8_block.BF16, out=bf16)),
        ("FP8 e4m3 -> F32", 5, n,
         lambda: fp8_block.dequantize(codes, scale, out_dtype=np.float32, out=f32)),
        ("MXFP4 -> BF16", 2.5, n,
         lambda: mxfp4.dequantize_fp4(packed, fp4_scale, fp8_block.BF16, out=bf16)),
        ("MXFP4 -> F32", 4.5, n, lambda: mxfp4.dequantize_fp4(packed, fp4_scale, out=f32)),
        ("BF16 -> FP8 (F32 scales)", 3, n, lambda: fp8_block.quantize(weight)),
        ("BF16 -> FP8 (F32 scales) + round-trip error", 3, n,  # what `ckpt quantize` runs
         lambda: fp8_block.quantize(weight, errors=RoundTripStats())),
        ("F32 -> MXFP4", 4.5, n, lambda: mxfp4.quantize_fp4(weight32)),
        ("BF16 -> FP8 (ue8m0) + round-trip error", 3, n,
         lambda: fp8_block.quantize(weight, scale_fmt="ue8m0", errors=RoundTripStats())),
    ]


def memcpy_rate(n: int, bytes_per_element: float, reps: int) -> tuple[float, float]:
    """Elements/s (CPU, wall) of copying `bytes_per_element` bytes per element."""
    src = np.ones(int(n * bytes_per_element), np.uint8)
    dst = np.empty_like(src)
    cpu, wall = timed(lambda: np.copyto(dst, src), reps)
    return n / cpu, n / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=7168)
    ap.add_argument("--cols", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args()
    rows = []
    memcpy: dict[float, tuple[float, float]] = {}
    for name, per_element, n, call in cases(args.rows, args.cols):
        if per_element not in memcpy:
            memcpy[per_element] = memcpy_rate(n, per_element, args.reps)
        row = {"kernel": name, "bytes_per_element": per_element, "elements": n}
        for backend in ("numpy", "compiled"):
            os.environ[kernels.ENV] = backend
            t0 = time.perf_counter()
            call()  # first call: numba's compile or cache load, and the tables' cache
            first = time.perf_counter() - t0
            cpu, wall = timed(call, args.reps)
            row[backend] = {"first_call_s": round(first, 3), "G_per_cpu_s": round(n / cpu / 1e9, 3),
                            "G_per_wall_s": round(n / wall / 1e9, 3),
                            "of_memcpy_cpu": round(n / cpu / memcpy[per_element][0], 3)}
        row["speedup_cpu"] = round(row["compiled"]["G_per_cpu_s"] / row["numpy"]["G_per_cpu_s"], 2)
        rows.append(row)
    doc = {"command": " ".join([sys.executable, *sys.argv]),
           "memcpy_G_per_cpu_s": {str(k): round(v[0] / 1e9, 3) for k, v in memcpy.items()},
           "memcpy_G_per_wall_s": {str(k): round(v[1] / 1e9, 3) for k, v in memcpy.items()},
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "kernels": rows}
    if args.json:
        print(json.dumps(doc, indent=1))
        return
    print(f"{args.rows} x {args.cols}, median of {args.reps}; G elem/s by CPU time (wall)")
    print(f"{'kernel':44} {'numpy':>14} {'compiled':>14} {'x':>5} "
          f"{'of memcpy':>10} {'1st call':>8}")
    for r in rows:
        np_, c = r["numpy"], r["compiled"]
        print(f"{r['kernel']:44} {np_['G_per_cpu_s']:6.2f} ({np_['G_per_wall_s']:5.2f})"
              f" {c['G_per_cpu_s']:6.2f} ({c['G_per_wall_s']:5.2f}) {r['speedup_cpu']:5.1f}"
              f" {c['of_memcpy_cpu']:10.2f} {c['first_call_s']:7.2f}s")
    for k, v in memcpy.items():
        print(f"memcpy at {k} bytes/element: {v[0] / 1e9:.2f} G elem/s CPU ({v[1] / 1e9:.2f} wall)")
    print(f"peak RSS {doc['peak_rss_mb']} MB; reproduce: {doc['command']}")


if __name__ == "__main__":
    main()
