"""Benchmark `ckpt upcast` on a DeepSeek-V4-width FP4-expert checkpoint against a torch CPU port.

The checkpoint is `make-tiny --preset v4-flash --fp8` with V4-Flash's real widths (hidden
4096, 64 heads of 512, q rank 1024, 8 output groups of 1024, experts of 2048 as MXFP4) and
few layers/experts, built in a child process in a temp dir removed afterwards. Each run is
a child measured by bench/timing.py's run_child (wall, CPU, peak RSS). The baseline is the
torch port of the same dequantisation that DeepSeek's V4 convert.py and transformers use:
`load_file` each shard (two cached, for a scale in another shard), MXFP4 unpacked through a
16-entry table (low nibble first) times the E8M0 scale repeated 32 times along the row, FP8
times its block scale repeated 128x128, in float32, cast to BF16, `save_file`. The two
outputs are checked bit for bit once.

Reproduce: python bench/upcast_v4.py [--reps 3] [--shards 4] [--experts 16] [--tmp DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from upcast import CHECK, measure  # the bit-equality check and timing of bench/upcast.py

FLASH_WIDTHS = {"vocab_size": 8192, "hidden_size": 4096, "num_attention_heads": 64,
                "head_dim": 512, "qk_rope_head_dim": 64, "q_lora_rank": 1024, "o_groups": 8,
                "o_lora_rank": 1024, "moe_intermediate_size": 2048, "num_experts_per_tok": 6,
                "index_n_heads": 64, "index_head_dim": 128, "index_topk": 512,
                "sliding_window": 128, "num_hidden_layers": 2, "num_nextn_predict_layers": 0,
                "compress_ratios": [0, 0], "num_hash_layers": 1}

BUILD = ("import json, sys; from ckpt_tools.commands.tiny import make_tiny; "
         "make_tiny(sys.argv[1], 'v4-flash', fp8=True, shards=int(sys.argv[2]), "
         "overrides=json.loads(sys.argv[3]))")

BASELINE = r"""
import json, sys, time
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file

t0 = time.monotonic()  # after imports: the conversion alone
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
weight_map = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
dst.mkdir(parents=True, exist_ok=True)
E2M1 = torch.tensor([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6])
cache = {}

def shard_tensors(shard):
    if shard not in cache:
        cache[shard] = load_file(str(src / shard))
        if len(cache) > 2:
            del cache[next(iter(cache))]
    return cache[shard]

new_map = {}
for shard in sorted(set(weight_map.values())):
    out = {}
    for name, w in shard_tensors(shard).items():
        if name.endswith(".scale"):
            continue
        scale_name = name.removesuffix(".weight") + ".scale"
        if scale_name in weight_map:
            s = shard_tensors(weight_map[scale_name])[scale_name].float()
            if w.dtype == torch.int8:
                u = w.view(torch.uint8)
                v = torch.stack([E2M1[(u & 15).long()], E2M1[(u >> 4).long()]], -1).flatten(1)
                out[name] = (v * s.repeat_interleave(32, 1)).to(torch.bfloat16)
            else:
                m, n = w.shape
                full = s.repeat_interleave(128, 0).repeat_interleave(128, 1)[:m, :n]
                out[name] = (w.float() * full).to(torch.bfloat16)
        else:
            out[name] = w
        new_map[name] = shard
    save_file(out, str(dst / shard), metadata={"format": "pt"})
    del out
index = {"metadata": {}, "weight_map": new_map}
(dst / "model.safetensors.index.json").write_text(json.dumps(index))
print(json.dumps({"seconds": time.monotonic() - t0}))
"""

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--tmp", default=None, help="Directory for the data (default: the system's)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-upcast-v4-", dir=args.tmp))
    try:
        src = root / "src"
        t0 = time.monotonic()
        overrides = {**FLASH_WIDTHS, "n_routed_experts": args.experts}
        subprocess.run([sys.executable, "-c", BUILD, str(src), str(args.shards),
                        json.dumps(overrides)], check=True)
        size = sum(p.stat().st_size for p in src.glob("*.safetensors"))
        print(f"source: {len(list(src.glob('*.safetensors')))} shards, {size / 1e9:.3f} GB, "
              f"{args.experts} MXFP4 experts x 2 layers (built in {time.monotonic() - t0:.0f} s)",
              flush=True)
        labels = ("baseline (torch)", "ckpt --workers 1")
        commands = {
            labels[0]: lambda d: measure([sys.executable, "-c", BASELINE, str(src), str(d)]),
            labels[1]: lambda d: measure([sys.executable, "-m", "ckpt_tools", "upcast", str(src),
                                          str(d), "--workers", "1", "-q"]),
        }
        runs: dict[str, list[dict]] = {label: [] for label in labels}
        for rep in range(args.reps):
            for label in labels:
                dst = root / "out"
                shutil.rmtree(dst, ignore_errors=True)
                runs[label].append(commands[label](dst))
                if rep == 0 and label == labels[1]:
                    commands[labels[0]](root / "base")
                    same = subprocess.run(
                        [sys.executable, "-c", CHECK, str(dst), str(root / "base")],
                        check=True, capture_output=True, text=True).stdout.strip()
                    print(f"check: {same} tensors bit-equal to the baseline's", flush=True)
                    shutil.rmtree(root / "base")
                r = runs[label][-1]
                print(f"  rep {rep + 1} {label:17s} wall {r['wall']:6.2f} s  CPU {r['cpu']:6.2f} s"
                      f"  peak RSS {r['maxrss_mb']:7.0f} MB", flush=True)
        print(f"\nmedians of {args.reps} runs on {size / 1e9:.3f} GB:")
        med = {label: tuple(statistics.median(r[k] for r in rs)
                            for k in ("wall", "cpu", "maxrss_mb")) for label, rs in runs.items()}
        for label, (wall, cpu, rss) in med.items():
            print(f"{label:18s} wall {wall:7.2f} s  {size / wall / 1e9:6.3f} GB/s  CPU {cpu:7.2f} s"
                  f"  peak RSS {rss:7.0f} MB")
        (bw, _, brss), (w1, _, rss1) = med[labels[0]], med[labels[1]]
        print(f"\nthroughput ckpt / baseline: {bw / w1:.2f}x (goal >= 3x); "
              f"peak RSS ckpt / baseline: {rss1 / brss:.3f}")
        print(f"reproduce: python bench/upcast_v4.py --reps {args.reps} --shards {args.shards} "
              f"--experts {args.experts}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
