"""Do workers scale? upcast, quantize, validate --deep and reshard with 1 and 2 workers on a
real-width checkpoint on tmpfs, each worker's rate next to memcpy's, and the local pool
against the Ray executor on the same machine.

The FP8 source is make-tiny with DeepSeek V3's real widths (hidden 7168, experts of 2048;
few layers and experts; about 1.2 GB by default), built in --tmp (default /dev/shm, so no
disk is in the way); the BF16 source for quantize and reshard is our upcast of it. Every
run is a `ckpt` child process timed end to end, start-up included (bench/timing.py:
wall, CPU, peak RSS); medians of --reps runs, interleaved so that a noisy neighbour hits
all variants alike.

Rates are in elements per second. memcpy's rate is measured in a child process on the
same machine (numpy copyto of 256 MB buffers: bytes copied per second), divided by the
bytes each element moves: upcast FP8 -> BF16 reads 1 and writes 2 (3), quantize BF16 ->
FP8 reads 2 and writes 1 (+ scales: 3), validate --deep reads each element once (1 for
FP8, 2 for BF16) and reshard copies the BF16 checkpoint (2 + 2). "% of memcpy" is a
worker's rate over that figure: 100% would mean the job costs as much as copying its
bytes once.

Ray: a Ray head is started for the run (`ray start --head --block`, its own process group,
stopped afterwards) and `ckpt upcast --executor ray` connects to it through RAY_ADDRESS;
the local pool runs with as many workers as the head has CPUs.

tmpfs space: the scaling part holds the FP8 source, its BF16 copy and one output (about
5x the FP8 size, 6 GB by default); --ray-only the source and one upcast output (3x).

Reproduce: python bench/scaling.py [--reps 3] [--tmp /dev/shm] [--experts 4] [--shards 4]
           [--no-ray | --ray-only]     (Ray at 3.9 GB: --ray-only --experts 64 --shards 8)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import BUILD_V3 as BUILD
from timing import V3_REAL_WIDTH_OVERRIDES as OVERRIDES
from timing import run_child

MEMCPY = r"""
import json, time, numpy as np
a = np.ones(256 << 20, np.uint8); b = np.empty_like(a); np.copyto(b, a)
best = []
for _ in range(7):
    t0 = time.perf_counter(); np.copyto(b, a); best.append(time.perf_counter() - t0)
best.sort()
print(json.dumps(a.nbytes / best[len(best) // 2]))
"""
CKPT = [sys.executable, "-m", "ckpt_tools"]


def elements(src: Path) -> int:
    """Tensor elements of a checkpoint, scales left out (from its headers)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ckpt_tools.io.safetensors_io import read_header

    return sum(e.numel for p in src.glob("*.safetensors")
               for e in read_header(p).entries.values() if not e.name.endswith("_scale_inv"))


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    os.sync()
    wall, cpu, rss = run_child(cmd, env)
    return {"wall": wall, "cpu": cpu, "rss": rss}


def medians(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


# A throwaway cluster on this machine: no token authentication (Ray >= 2.5x turns it on
# once any local Ray has written ~/.ray/auth_token, and clients then fail to connect).
RAY_ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def start_ray_head(cpus: int, tmp: Path) -> tuple[subprocess.Popen, str]:
    """A Ray head of `cpus` CPUs in its own process group; (process, address)."""
    port = 6390 + os.getpid() % 500
    proc = subprocess.Popen(
        ["ray", "start", "--head", "--block", f"--port={port}", f"--num-cpus={cpus}",
         "--object-store-memory=100000000", "--include-dashboard=false",
         f"--temp-dir={tmp}", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=RAY_ENV)
    address = f"127.0.0.1:{port}"
    probe = "import ray, sys; ray.init(address=sys.argv[1]); ray.shutdown()"
    for _ in range(120):
        probed = subprocess.run([sys.executable, "-c", probe, address], capture_output=True,
                                env=RAY_ENV, timeout=60)
        if probed.returncode == 0:
            return proc, address
        time.sleep(1)
    stop_ray_head(proc)
    sys.exit("the Ray head did not come up in 2 minutes")


def stop_ray_head(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its own processes
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group we created: our processes only
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tmp", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    ap.add_argument("--experts", type=int, default=OVERRIDES["n_routed_experts"])
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--no-ray", action="store_true", help="Skip the local vs Ray comparison")
    ap.add_argument("--ray-only", action="store_true",
                    help="Only the local vs Ray comparison (no BF16 copy: less tmpfs space)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-scaling-", dir=args.tmp))
    try:
        fp8, bf16 = root / "fp8", root / "bf16"
        t0 = time.monotonic()
        overrides = {**OVERRIDES, "n_routed_experts": args.experts}
        subprocess.run([sys.executable, "-c", BUILD, str(fp8), str(args.shards),
                        json.dumps(overrides)], check=True)
        if not args.ray_only:
            subprocess.run([*CKPT, "upcast", str(fp8), str(bf16), "-q"], check=True,
                           stdout=subprocess.DEVNULL)
        n = elements(fp8)
        size = sum(p.stat().st_size for p in fp8.glob("*.safetensors"))
        print(f"source: {args.shards} shards, {size / 1e9:.2f} GB FP8 ({n / 1e9:.2f} G "
              f"elements), on {root} (built in {time.monotonic() - t0:.0f} s)", flush=True)
        if not args.ray_only:
            scaling(fp8, bf16, root / "out", n, args.reps)
        if not args.no_ray:
            ray_runs(fp8, root / "out", root, args.reps)
        print(f"\nreproduce: python bench/scaling.py --reps {args.reps} --experts {args.experts} "
              f"--shards {args.shards}" + (f" --tmp {args.tmp}" if args.tmp else "")
              + (" --no-ray" if args.no_ray else "") + (" --ray-only" if args.ray_only else ""))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def scaling(fp8: Path, bf16: Path, out: Path, n: int, reps: int) -> None:
    """1 vs 2 workers for each command, next to memcpy."""
    memcpy = json.loads(subprocess.run([sys.executable, "-c", MEMCPY], check=True,
                                       capture_output=True, text=True).stdout)
    print(f"memcpy: {memcpy / 1e9:.2f} GB/s copied; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)

    ops = {  # name: (command, bytes moved per element, writes to out)
        "upcast": (["upcast", fp8, out, "-q"], 3),
        "quantize": (["quantize", bf16, out, "-q"], 3),
        "validate --deep": (["validate", fp8, "--deep"], 1),
        "reshard": (["reshard", bf16, out, "--to", "deepseek-mp", "--model-parallel", "2"], 4),
    }
    runs: dict[tuple[str, int], list[dict]] = {}
    for rep in range(reps):
        for op, (cmd, _) in ops.items():
            for workers in (1, 2):
                shutil.rmtree(out, ignore_errors=True)
                r = measure([*CKPT, *map(str, cmd), "--workers", str(workers)])
                runs.setdefault((op, workers), []).append(r)
                print(f"  rep {rep + 1} {op:16s} --workers {workers}: wall {r['wall']:6.2f} s"
                      f"  CPU {r['cpu']:6.2f} s  peak RSS {r['rss']:5.0f} MB", flush=True)
    print(f"\nmedians of {reps} runs, start-up included; rates in G elements/s "
          f"(memcpy: {memcpy / 1e9:.2f} GB/s)")
    print(f"{'':16s} {'1 worker s':>10s} {'2 workers s':>11s} {'speed-up':>8s} "
          f"{'rate/worker (1)':>15s} {'memcpy rate':>11s} {'% memcpy':>8s} {'CPU s (1)':>9s} "
          f"{'CPU s (2)':>9s}")
    for op, (_, moved) in ops.items():
        one, two = medians(runs[(op, 1)]), medians(runs[(op, 2)])
        rate = n / one["wall"]
        ceiling = memcpy / moved
        print(f"{op:16s} {one['wall']:10.2f} {two['wall']:11.2f} "
              f"{one['wall'] / two['wall']:7.2f}x {rate / 1e9:15.3f} {ceiling / 1e9:11.3f} "
              f"{100 * rate / ceiling:7.1f}% {one['cpu']:9.2f} {two['cpu']:9.2f}")
    print("goals (2 cores): speed-up >= 1.7x for upcast and validate --deep; one upcast "
          "worker >= 25% of memcpy")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          f"(above ~0.5, other processes share the cores and wall-time ratios mean little: "
          f"compare CPU seconds; equal CPU for 1 and 2 workers means no parallel overhead)")


def ray_runs(fp8: Path, out: Path, root: Path, reps: int) -> None:
    cpus = 2
    t0 = time.monotonic()
    head, address = start_ray_head(cpus, root / "ray")
    print(f"\nRay head with {cpus} CPUs at {address} (up in {time.monotonic() - t0:.0f} s)",
          flush=True)
    env = {**RAY_ENV, "RAY_ADDRESS": address}
    try:
        runs: dict[str, list[dict]] = {"local": [], "ray": []}
        for rep in range(reps):
            for name in runs:
                shutil.rmtree(out, ignore_errors=True)
                extra = ["--executor", "ray"] if name == "ray" else ["--workers", str(cpus)]
                r = measure([*CKPT, "upcast", str(fp8), str(out), "-q", *extra], env)
                runs[name].append(r)
                print(f"  rep {rep + 1} upcast {name:5s}: wall {r['wall']:6.2f} s", flush=True)
    finally:
        stop_ray_head(head)
    local, ray = medians(runs["local"]), medians(runs["ray"])
    print(f"upcast of {sum(p.stat().st_size for p in fp8.glob('*.safetensors')) / 1e9:.2f} GB: "
          f"local pool ({cpus} workers) {local['wall']:.2f} s, Ray ({cpus} CPUs, connecting "
          f"included) {ray['wall']:.2f} s: {ray['wall'] / local['wall']:.2f}x (goal <= 1.3x)")


if __name__ == "__main__":
    main()
