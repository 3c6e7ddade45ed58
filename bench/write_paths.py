"""Which way of writing a new file on tmpfs is cheapest? (what limits upcast end to end)

Writes --mb MB of one 4 MB buffer into a new file on --tmp (default /dev/shm) by: pwrite
(what `SafetensorsWriter` and `part_writer` do), ftruncate then pwrite, posix_fallocate
then pwrite, mmap of a sized file then copy, pwrite of 64 MB buffers; and, for scale, a
memcpy into fresh anonymous pages and into pages already touched. CPU seconds per run
(time.process_time), best of --reps: on a shared machine, CPU time is the figure to read.

Then two processes at once, each pwriting --mb MB: into two halves of one file, and into
two files (wall and CPU seconds of both, best of --reps). Linux takes a file's lock for each
buffered write, so the writers of one file wait on each other (and spin while they wait):
why the executors start the parts of one output file apart (`execution.job.start_order`).

Reproduce: python bench/write_paths.py [--mb 512] [--reps 3] [--tmp /dev/shm]
"""

from __future__ import annotations

import argparse
import mmap
import multiprocessing
import os
import time

import numpy as np

CHUNK = 4 << 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tmp", default="/dev/shm")
    args = ap.parse_args()
    n = args.mb << 20
    buf = np.ones(CHUNK, np.uint8)
    big = np.ones(64 << 20, np.uint8)
    path = os.path.join(args.tmp, f"write-paths-{os.getpid()}")

    def pwrite(prepare=None, chunk=buf):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        if prepare:
            prepare(fd)
        for o in range(0, n, chunk.size):
            os.pwrite(fd, chunk, o)
        os.close(fd)

    def mapped():
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        os.ftruncate(fd, n)
        with mmap.mmap(fd, n) as m:
            a = np.frombuffer(m, np.uint8)
            for o in range(0, n, CHUNK):
                a[o:o + CHUNK] = buf
            del a
        os.close(fd)

    touched = np.ones(n, np.uint8)

    def memcpy(into):
        a = np.empty(n, np.uint8) if into is None else into
        for o in range(0, n, CHUNK):
            a[o:o + CHUNK] = buf

    ways = {
        "pwrite 4 MB (ours)": lambda: pwrite(),
        "ftruncate + pwrite": lambda: pwrite(lambda fd: os.ftruncate(fd, n)),
        "posix_fallocate + pwrite": lambda: pwrite(lambda fd: os.posix_fallocate(fd, 0, n)),
        "mmap + copy": mapped,
        "pwrite 64 MB": lambda: pwrite(chunk=big),
        "memcpy, fresh pages": lambda: memcpy(None),
        "memcpy, touched pages": lambda: memcpy(touched),
    }
    best = {k: float("inf") for k in ways}
    try:
        for _ in range(args.reps):
            for name, way in ways.items():
                t0 = time.process_time()
                way()
                best[name] = min(best[name], time.process_time() - t0)
                if os.path.exists(path):
                    os.unlink(path)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    print(f"{args.mb} MB, best of {args.reps}; load average {os.getloadavg()[0]:.1f}")
    for name, seconds in best.items():
        print(f"{name:28s} {seconds:7.3f} CPU s  {n / seconds / 1e9:6.2f} GB per CPU s")
    print()
    two_writers(args, n, path)
    print(f"reproduce: python bench/write_paths.py --mb {args.mb} --reps {args.reps} "
          f"--tmp {args.tmp}")


def _write_range(path: str, start: int, n: int) -> None:
    buf = np.ones(CHUNK, np.uint8)
    fd = os.open(path, os.O_WRONLY)
    for o in range(start, start + n, CHUNK):
        os.pwrite(fd, buf, o)
    os.close(fd)


def two_writers(args, n: int, path: str) -> None:
    """Two processes writing n bytes each: into one file (disjoint halves), into two files."""
    ctx = multiprocessing.get_context("fork")
    best = {"one file": (float("inf"), 0.0), "two files": (float("inf"), 0.0)}
    for _ in range(args.reps):
        for name in best:
            paths = [path] if name == "one file" else [path + ".a", path + ".b"]
            for p in paths:
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.close(fd)
            ranges = [(path, 0), (path, n)] if name == "one file" else [(p, 0) for p in paths]
            before, t0 = os.times(), time.perf_counter()
            procs = [ctx.Process(target=_write_range, args=(p, start, n)) for p, start in ranges]
            for proc in procs:
                proc.start()
            for proc in procs:
                proc.join()
            wall, after = time.perf_counter() - t0, os.times()
            cpu = (after.children_user + after.children_system
                   - before.children_user - before.children_system)
            best[name] = min(best[name], (wall, cpu))
            for p in paths:
                os.unlink(p)
    for name, (wall, cpu) in best.items():
        print(f"2 writers, {name:9s}        {wall:7.3f} wall s {cpu:7.3f} CPU s  "
              f"{2 * n / wall / 1e9:6.2f} GB/s")


if __name__ == "__main__":
    main()
