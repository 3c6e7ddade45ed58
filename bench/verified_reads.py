"""Benchmark what checking the Hub's SHA-256 costs a writer reading hf://.

Data: DeepSeek-V3 at real widths (bench/timing.py's builder: 1 dense + 1 MoE layer, 4 routed
experts, ~1.0 GB of FP8 weights in --shards files), published with its real SHA-256s on the
fake Hub of tests/fake_hub.py, served from this process on 127.0.0.1.

Command: `ckpt upcast hf://REPO DST --workers W` (a fresh DST each run), with the check
(default: every LFS file streamed once, hashed, and read from its checked copy) and without
(CKPT_VERIFY_READS=0: ranged reads from the Hub, unchecked). Runs alternate between the two
so drift on a shared machine hits both; medians of --reps runs each; peak RSS is the main
process's (os.wait4).

--link MB/s makes the fake Hub send every body through one shared link of that speed (repeat
it for several; 0 is loopback, as fast as this machine copies: the worst case for the check,
whose cost is CPU while the transfer costs nothing). The Hub's CDN serves a machine in a data
centre at a few hundred MB/s to about 1 GB/s.

Goal (issue 27): the check costs under 10% of the run.

Reproduce: python bench/verified_reads.py [--reps 3] [--shards 4] [--workers 2] [--link 0
--link 1000] [--keep DIR]
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
from pathlib import Path

from timing import BUILD_V3, V3_REAL_WIDTH_OVERRIDES, run_child  # bench/timing.py

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fake_hub import FakeHub  # noqa: E402

REPO = "bench/deepseek-v3-real-widths"


def report(runs: dict[str, list[tuple[float, float, float]]], link: str) -> None:
    med = {m: [statistics.median(r[i] for r in rs) for i in range(3)] for m, rs in runs.items()}
    print(f"{link}:")
    for mode, (wall, cpu, rss) in med.items():
        walls = ", ".join(f"{r[0]:.2f}" for r in runs[mode])
        print(f"  {mode:9s}: {wall:6.2f} s wall (runs {walls}), {cpu:6.2f} s CPU, "
              f"peak RSS {rss:.0f} MB")
    ratio = med["checked"][0] / med["unchecked"][0]
    # each checked run against the unchecked run right after it: drift on a shared machine
    # moves both; and the fastest of each, the least disturbed
    paired = statistics.median(c[0] / u[0] for c, u in zip(runs["checked"], runs["unchecked"]))
    best = min(r[0] for r in runs["checked"]) / min(r[0] for r in runs["unchecked"])
    cpu = med["checked"][1] / med["unchecked"][1]
    print(f"  ratio:     checked / unchecked = {ratio:.3f} ({ratio - 1:+.1%}; goal < +10%); "
          f"paired {paired - 1:+.1%}; fastest runs {best - 1:+.1%}; CPU {cpu - 1:+.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", type=Path, help="build (or reuse) the checkpoint here")
    ap.add_argument("--link", type=float, action="append",
                    help="MB/s of the Hub's link (repeatable; 0: loopback, the default)")
    args = ap.parse_args()
    links = args.link or [0.0]
    tmp = Path(tempfile.mkdtemp(prefix="ckpt-bench-verified-"))
    try:
        src = args.keep or tmp / "src"
        if not (src / "config.json").is_file():
            subprocess.run([sys.executable, "-c", BUILD_V3, str(src), str(args.shards),
                            json.dumps(V3_REAL_WIDTH_OVERRIDES)], check=True)
        size = sum(p.stat().st_size for p in src.glob("*.safetensors"))
        ckpt = [sys.executable, "-m", "ckpt_tools"]  # this tree's, with PYTHONPATH
        with FakeHub(tmp / "hub") as hub:
            hub.add_commit(REPO, src, copy=False)  # hashed: the real SHA-256s are listed
            base = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(tmp / "hf-home"),
                        NO_PROXY="127.0.0.1,localhost", HF_HUB_DISABLE_TELEMETRY="1")
            base.pop("CKPT_HEADER_CACHE", None)
            modes = {"checked": {**base, "CKPT_VERIFY_READS": "1"},
                     "unchecked": {**base, "CKPT_VERIFY_READS": "0"}}
            command = [*ckpt, "upcast", f"hf://{REPO}", "DST", "--workers", str(args.workers)]
            print(f"V3 real widths: {size / 1e9:.2f} GB of FP8 shards ({args.shards} files), "
                  f"served by the fake Hub on 127.0.0.1; medians of {args.reps} runs")
            for link in links:
                hub.limit_rate(link * 1e6 if link else None)
                runs: dict[str, list[tuple[float, float, float]]] = {m: [] for m in modes}
                for rep in range(args.reps):
                    for mode, env in modes.items():
                        dst = tmp / f"out-{mode}-{rep}"
                        runs[mode].append(run_child([*command[:-3], str(dst), *command[-2:]],
                                                    env))
                        shutil.rmtree(dst)
                report(runs, f"link {link:g} MB/s" if link else "loopback")
        print(f"command: {' '.join(command)}  (CKPT_VERIFY_READS=1 / 0)")
        print(f"reproduce: python bench/verified_reads.py --reps {args.reps} --shards "
              f"{args.shards} --workers {args.workers}"
              + "".join(f" --link {link:g}" for link in links))
    finally:
        if args.keep is None or not str(args.keep).startswith(str(tmp)):
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
