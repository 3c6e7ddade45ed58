"""Benchmark reading a V3-scale checkpoint where it lives: bytes transferred and wall time.

Data: DeepSeek-V3's real FP8 tensor plan (91,991 tensors, 688,574,839,360 bytes of tensor
data) in 163 sparse shards (bench/validate.py's builder: real headers, data left as holes),
published on the fake Hub of tests/fake_hub.py, served from this process on 127.0.0.1
(`hashed=False`: the content is not hashed, so `--checksums hub` is not part of this run).
Bytes are what the server sent, summed from its request log (API answers included).

Commands, each a fresh subprocess pointed at the fake Hub with HF_ENDPOINT:

1. `ckpt validate hf://REPO` (headers only: structure, FP8 pairing, the whole tensor plan)
   against downloading the repository. Downloading 688 GB is not run: its bytes are the
   files' sizes, its time is extrapolated from the transfer rate measured in 2.
2. `ckpt verify hf://REPO --against LOCAL --layers 2` (the candidate read by range, the
   reference the same checkpoint on local disk) against downloading the shards layers 0-1
   live in (embedding included), measured as a transfer that discards the bytes (a lower
   bound of a download's time: nothing is written to disk).

Goals (issue 19): validate transfers < 0.1% of the checkpoint's bytes; verify of 2 layers
< 10% of what downloading their shards would. V3's layers 0-2 are dense, so verify must read
all of their weights; the ratio is then set by how much else their shards hold.

Reproduce: python bench/remote.py [--reps 3] [--keep DIR]
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

from timing import run_child  # bench/timing.py
from validate import build, ckpt_command  # bench/validate.py: the sparse V3 checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_hub import FakeHub  # noqa: E402

REPO = "bench/deepseek-v3-sparse"
LAYERS = 2

DISCARD = r"""
import sys, urllib.request
total = 0
for url in sys.argv[1:]:
    with urllib.request.urlopen(url) as r:
        while chunk := r.read(1 << 22):
            total += len(chunk)
print(total)
"""


def layer_shards(root: Path, layers: int) -> list[str]:
    """Shards holding the embedding or a tensor of layers 0..layers-1."""
    weight_map = json.loads((root / "model.safetensors.index.json").read_text())["weight_map"]
    prefixes = ("model.embed_tokens.",) + tuple(f"model.layers.{i}." for i in range(layers))
    return sorted({s for n, s in weight_map.items() if n.startswith(prefixes)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="runs of ckpt validate")
    ap.add_argument("--keep", type=Path, help="build (or reuse) the checkpoint here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ckpt-bench-remote-"))
    try:
        src = args.keep or tmp / "src"
        if not (src / "config.json").is_file():
            src.mkdir(parents=True, exist_ok=True)
            build(src)
        sizes = {p.name: p.stat().st_size for p in src.iterdir() if p.is_file()}
        repo_bytes = sum(sizes.values())
        print(f"sparse V3: {len(sizes) - 2} shards, {repo_bytes / 1e9:.1f} GB in the repo")
        ckpt = ckpt_command()
        with FakeHub(tmp / "hub") as hub:
            hub.add_commit(REPO, src, copy=False, hashed=False)
            env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(tmp / "hf-home"),
                       NO_PROXY="127.0.0.1,localhost", HF_HUB_DISABLE_TELEMETRY="1")
            env.pop("CKPT_HEADER_CACHE", None)

            # 1. validate
            walls, sent, rss = [], [], []
            for _ in range(args.reps):
                since = len(hub.log)
                wall, _, peak = run_child([*ckpt, "validate", f"hf://{REPO}"], env)
                walls.append(wall)
                sent.append(hub.sent(since))
                rss.append(peak)
            v_bytes, v_wall = statistics.median(sent), statistics.median(walls)

            # 2. verify --layers 2 against a download of those layers' shards
            shards = layer_shards(src, LAYERS)
            since = len(hub.log)
            t0 = time.perf_counter()
            out = subprocess.run([*ckpt, "verify", f"hf://{REPO}", "--against", str(src),
                                  "--layers", str(LAYERS), "--json"], env=env,
                                 capture_output=True, text=True)
            verify_wall = time.perf_counter() - t0
            if out.returncode != 0:
                sys.exit(f"verify failed: {out.stderr[-2000:]}")
            verify_bytes = hub.sent(since)
            commit = hub.repos[REPO].refs["main"]
            urls = [f"{hub.url}/{REPO}/resolve/{commit}/{s}" for s in shards]
            since = len(hub.log)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", DISCARD, *urls], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            download_wall = time.perf_counter() - t0
            download_bytes = hub.sent(since)
            rate = download_bytes / download_wall

        print(f"\n1. ckpt validate hf://{REPO} (median of {args.reps}; peak RSS "
              f"{statistics.median(rss):.0f} MB)")
        print(f"   ckpt:     {v_bytes / 1e6:10.1f} MB transferred, {v_wall:6.2f} s wall")
        print(f"   download: {repo_bytes / 1e9:10.1f} GB, ~{repo_bytes / rate:,.0f} s at the "
              f"measured {rate / 1e9:.2f} GB/s (extrapolated, not run)")
        print(f"   ratio:    {v_bytes / repo_bytes:.5%} of the bytes (goal < 0.1%), "
              f"{v_wall / (repo_bytes / rate):.5%} of the time")
        print(f"\n2. ckpt verify hf://{REPO} --against LOCAL --layers {LAYERS}")
        print(f"   ckpt:     {verify_bytes / 1e9:10.2f} GB transferred, {verify_wall:6.1f} s "
              f"wall (both forwards included)")
        print(f"   download: {download_bytes / 1e9:10.2f} GB ({len(shards)} shards: "
              f"{', '.join(shards)}), {download_wall:6.1f} s streamed and discarded")
        print(f"   ratio:    {verify_bytes / download_bytes:.1%} of the bytes (goal < 10%)")
        print(f"\nreproduce: python bench/remote.py --reps {args.reps}")
    finally:
        if args.keep is None or not str(args.keep).startswith(str(tmp)):
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
