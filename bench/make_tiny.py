"""Benchmark `ckpt make-tiny --real-widths`: peak memory must stay below 1 GB whatever the
widths, and the size must be announced before anything is written.

Runs `ckpt make-tiny DST --preset v3 --fp8 --real-widths --shards 4` (V3's real widths,
~10 GB of FP8 shards) as a child process and reports its wall time, CPU time and peak RSS
(os.wait4 on that child), the first line it printed on stderr (the size estimate), and
the bytes written. The baseline, in the same run, is the I/O floor: a child writing the
same number of bytes in 64 MB chunks of zeros, so the ratio is the cost of generating and
quantising the values. Data goes to a temp dir (or --dir) and is removed afterwards.

Reproduce: python bench/make_tiny.py [--preset v3] [--shards 4] [--dir /big/tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIMIT_MB = 1000

IO_FLOOR = r"""
import sys
total, path = int(sys.argv[1]), sys.argv[2]
block = bytes(64 << 20)
with open(path, "wb") as f:
    while total > 0:
        n = min(total, len(block))
        f.write(memoryview(block)[:n])
        total -= n
"""


def run(cmd: list[str]) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS MB, stderr) of one child."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode()  # small: the size note (no bar: stderr is a pipe)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"{' '.join(cmd)} failed: {err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="v3")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--no-fp8", action="store_true", help="BF16 instead of FP8 (twice the bytes)")
    ap.add_argument("--dir", type=Path, default=None, help="where the temp data goes")
    args = ap.parse_args()
    script = Path(sys.executable).with_name("ckpt")
    ckpt = [str(script)] if script.is_file() else [sys.executable, "-m", "ckpt_tools"]
    with tempfile.TemporaryDirectory(prefix="ckpt-bench-tiny-", dir=args.dir) as tmp:
        dst = Path(tmp) / "tiny"
        cmd = [*ckpt, "make-tiny", str(dst), "--preset", args.preset, "--real-widths",
               "--shards", str(args.shards)] + ([] if args.no_fp8 else ["--fp8"])
        wall, cpu, rss, err = run(cmd)
        written = sum(p.stat().st_size for p in dst.iterdir())
        shutil.rmtree(dst)
        f_wall, f_cpu, f_rss, _ = run([sys.executable, "-c", IO_FLOOR, str(written),
                                       str(Path(tmp) / "floor.bin")])
    first = err.strip().splitlines()[0] if err.strip() else "(nothing)"
    print(f"command: ckpt {' '.join(cmd[len(ckpt):])}")
    print(f"first line on stderr: {first}")
    print(f"{'run':<28} {'wall s':>8} {'cpu s':>8} {'peak RSS MB':>12} {'MB/s':>8}")
    for name, w, c, r in (("make-tiny --real-widths", wall, cpu, rss),
                          ("I/O floor (zeros, 64 MB)", f_wall, f_cpu, f_rss)):
        print(f"{name:<28} {w:>8.1f} {c:>8.1f} {r:>12.0f} {written / w / 1e6:>8.0f}")
    print(f"written: {written / 1e9:.2f} GB; make-tiny / floor wall time: {wall / f_wall:.2f}x")
    print(f"peak RSS {rss:.0f} MB: {'below' if rss < LIMIT_MB else 'NOT below'} the "
          f"{LIMIT_MB} MB goal")
    print(f"\nreproduce: python bench/make_tiny.py --preset {args.preset} --shards {args.shards}"
          + (" --no-fp8" if args.no_fp8 else ""))


if __name__ == "__main__":
    main()
