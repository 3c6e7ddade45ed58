"""Benchmark what reading hf:// costs in CPU: huggingface_hub's client against the lean ranged
GET (`ckpt_tools.remote.http_range`), on the same bytes, in the same run.

Data: one shard of random bytes (--mb, default 512 MB) published on the fake Hub of
tests/fake_hub.py (127.0.0.1, bodies sent with sendfile: the server costs little). Each way
reads the whole shard in 8 MB ranged GETs (`remote.verified.STREAM_BYTES`, the copier's
step) through the Hub store's reader (`RangeSource`), in one thread; CPU is that thread's
(time.thread_time), medians of --reps; memcpy of the same bytes is the physical limit.

Reproduce: python bench/http_reads.py [--reps 5] [--mb 512]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_hub import FakeHub  # noqa: E402

REPO = "bench/http-reads"
STEP = 8 << 20


def read_all(source, size: int) -> float:
    t0 = time.thread_time()
    for pos in range(0, size, STEP):
        source.read_exact(pos, min(STEP, size - pos))
    return time.thread_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--mb", type=int, default=512)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ckpt-bench-http-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        size = args.mb << 20
        (src / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(size))
        with FakeHub(Path(tmp) / "hub") as hub:
            hub.add_commit(REPO, src, copy=False)
            os.environ.update(HF_ENDPOINT=hub.url, HF_HOME=str(Path(tmp) / "hf-home"),
                              NO_PROXY="127.0.0.1,localhost", HF_HUB_DISABLE_TELEMETRY="1")
            from ckpt_tools.io.source import locate
            from ckpt_tools.remote import http_range

            root = locate(f"hf://{REPO}")
            lean_usable = http_range.usable
            ways = {"huggingface_hub client": lambda url: False, "lean ranged GET": lean_usable}
            cpu: dict[str, list[float]] = {w: [] for w in ways}
            for _ in range(args.reps):
                for way, usable in ways.items():  # interleaved: drift hits both
                    http_range.usable = usable
                    cpu[way].append(read_all(root.tree.open_store("model.safetensors"), size))
            http_range.usable = lean_usable
            data = np.frombuffer(np.random.default_rng(1).bytes(size), np.uint8)
            out = np.empty_like(data)
            copies = []
            for _ in range(args.reps):
                t0 = time.thread_time()
                np.copyto(out, data)
                copies.append(time.thread_time() - t0)
    memcpy = statistics.median(copies)
    gb = size / 1e9
    print(f"{gb:.2f} GB read from the fake Hub on 127.0.0.1 in {STEP >> 20} MB ranged GETs, "
          f"one thread; medians of {args.reps}")
    for way, runs in cpu.items():
        m = statistics.median(runs)
        print(f"  {way:24s}: {m:6.3f} CPU s = {gb / m:5.2f} GB per CPU s "
              f"({memcpy / m:.0%} of memcpy)")
    ratio = statistics.median(cpu["huggingface_hub client"]) / statistics.median(
        cpu["lean ranged GET"])
    print(f"  memcpy                  : {memcpy:6.3f} CPU s = {gb / memcpy:5.2f} GB per CPU s")
    print(f"  client / lean = {ratio:.2f}x")
    print(f"reproduce: python bench/http_reads.py --reps {args.reps} --mb {args.mb}")


if __name__ == "__main__":
    main()
