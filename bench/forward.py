"""Benchmark the NumPy reference forward pass (`ckpt forward`).

1. Memory at V3's real widths: an FP8 checkpoint with hidden 7168, expert width 2048,
   V3's attention shapes, 2 dense + 2 MoE layers of 32 routed experts (top-8, 4 groups
   keep 2) and a 16384-token vocabulary is built with make-tiny (~5 GB). `ckpt forward --layers 4`
   runs as a fresh subprocess --reps times; peak RSS and wall time come from os.wait4 on
   that child. The goal is < 2 GB. For scale, the same run prints the bytes of those four
   layers as stored (FP8) and as float32, what a load-then-run implementation would hold.
2. DeepSeek-V4 at V4-Flash widths (hidden 4096, 64 heads of 512, 8 output groups, the
   indexer, hc_mult 4), with the release's storage (FP8 dense with E8M0 scales, MXFP4
   experts): layers sliding, sliding, CSA, HCA (three hash-routed), 32 routed experts of
   2048 (top-6), a 16384-token vocabulary, built by bench/v4_build.py (~2.4 GB).
   `ckpt forward --layers 4` runs --reps times as a fresh subprocess; same measures and
   goal (< 2 GB).
3. Speed next to transformers on the same tiny model (make-tiny v3, BF16): each side runs
   in its own subprocess, loads once, then times --reps forward passes over the same
   tokens (our NumPy `Model.forward` against `DeepseekV3ForCausalLM` in float32 on CPU,
   eager attention); medians per token, and each child's peak RSS.

Checkpoints are built by `ckpt make-tiny` in a child process (a large bench process would
hand its RSS to every child it forks), in a temp dir removed afterwards unless --data.

`--preset v3.2` runs [1] and [3] with DeepSeek-V3.2's lightning indexer (transformers'
`DeepseekV32ForCausalLM` on the other side; the tiny indexer keeps 8 keys per query).

Reproduce: python bench/forward.py [--preset v3|v3.2] [--reps 3] [--tokens 16] [--threads 1]
           [--skip-real] [--skip-v4] [--only-v4] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from timing import median_runs, run_child

# The vocabulary is cut to 16384 rows: --layers 4 never reads lm_head and reads the embedding
# row by row, so its size does not change the run, only the build (a 129280 x 7168 normal
# draw needs ~11 GB in make-tiny) and the disk.
REAL_OVERRIDES = {"num_nextn_predict_layers": 0, "n_routed_experts": 32,
                  "num_experts_per_tok": 8, "n_group": 4, "topk_group": 2, "vocab_size": 16384}
LAYERS = 4

TIMED = r"""
import json, statistics, sys, time
path, reps, tokens, out = sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[6]
if sys.argv[1] == "numpy":
    from ckpt_tools.inventory.checkpoint import Checkpoint
    from ckpt_tools.reference import Model
    model = Model(Checkpoint(path))
    run = lambda: model.forward(tokens)
else:
    import torch, transformers
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(int(sys.argv[5]))
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager")
    ids = torch.tensor([tokens])
    def run():
        with torch.no_grad():
            return model(ids).logits
run()  # warm-up
times = []
for _ in range(reps):
    t0 = time.perf_counter(); run(); times.append(time.perf_counter() - t0)
open(out, "w").write(json.dumps({"median_s": statistics.median(times)}))
"""


def ckpt_command() -> list[str]:
    script = Path(sys.executable).with_name("ckpt")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ckpt_tools"]


def build(ckpt: Path, *args: str) -> None:
    """make-tiny in a child process: the bench process stays small, so children forked from
    it do not inherit (and report) the RSS of building ~8 GB of weights."""
    if (ckpt / "config.json").is_file():
        return
    t0 = time.perf_counter()
    run_child([*ckpt_command(), "make-tiny", str(ckpt), *args])
    print(f"built {ckpt.name} in {time.perf_counter() - t0:.0f} s")


def forward_memory(title: str, ckpt: Path, out: Path, tokens: list[int], reps: int,
                   build_hint: str) -> None:
    """`ckpt forward --layers LAYERS` on `ckpt`: medians, and peak RSS next to the bytes of
    those layers as stored and as float32 (from the checkpoint's own tensor plan)."""
    from ckpt_tools.inventory.checkpoint import Checkpoint

    with Checkpoint(ckpt) as ck:
        in_layers = [s for s in ck.plan.specs
                     if s.layer is not None and not s.mtp and s.layer < LAYERS]
    stored = sum(s.nbytes for s in in_layers)
    f32 = sum(s.numel * 4 for s in in_layers if s.scale_of is None)
    args = ["forward", str(ckpt), "--layers", str(LAYERS), "--tokens", ",".join(map(str, tokens)),
            "--out", str(out)]
    wall, cpu, rss, runs = median_runs([*ckpt_command(), *args], reps)
    print(f"\n{title}, {len(tokens)} tokens (median of {reps})")
    print(f"    peak RSS      {rss:8.0f} MB   (goal < 2048 MB; runs: "
          f"{', '.join(f'{r[2]:.0f}' for r in runs)})")
    print(f"    wall / CPU    {wall:6.1f} s / {cpu:.1f} s   ({1000 * wall / len(tokens):.0f} / "
          f"{1000 * cpu / len(tokens):.0f} ms per token, start-up and reads included)")
    print(f"    those {LAYERS} layers: {stored / 1e9:.2f} GB stored, {f32 / 1e9:.2f} GB as "
          f"float32; peak RSS is {rss * 2**20 / f32:.1%} of the float32 layers")
    print(f"    reproduce: {build_hint}; ckpt forward DIR --layers {LAYERS} --tokens {args[5]} "
          f"--out hidden.npy")


def real_widths(data: Path, reps: int, tokens: list[int], preset: str) -> None:
    ckpt = data / f"{preset}-real-widths-fp8"
    sets = [a for k, v in REAL_OVERRIDES.items() for a in ("--set", f"{k}={v}")]
    build(ckpt, "--preset", preset, "--fp8", "--real-widths", "--shards", "4", *sets)
    forward_memory(f"[1] ckpt forward --layers {LAYERS}, {preset} widths, 32 FP8 experts", ckpt,
                   data / "hidden.npy", tokens, reps,
                   f"ckpt make-tiny DIR --preset {preset} --fp8 --real-widths {' '.join(sets)}")


def v4_flash_widths(data: Path, reps: int, tokens: list[int]) -> None:
    ckpt = data / "v4-flash-widths"
    if not (ckpt / "config.json").is_file():
        t0 = time.perf_counter()
        run_child([sys.executable, str(Path(__file__).with_name("v4_build.py")), str(ckpt)])
        print(f"built {ckpt.name} in {time.perf_counter() - t0:.0f} s")
    forward_memory(f"[2] ckpt forward --layers {LAYERS}, V4-Flash widths (FP8 + MXFP4 experts, "
                   f"32 experts)", ckpt, data / "v4-hidden.npy", tokens, reps,
                   "python bench/v4_build.py DIR")


def against_transformers(data: Path, reps: int, tokens: list[int], threads: int,
                         preset: str) -> None:
    ckpt = data / f"{preset}-tiny"
    build(ckpt, "--preset", preset)
    # both sides get the same thread count (BLAS and torch); 1 keeps medians steady when
    # other work shares the cores, where spinning OpenMP threads distort torch's timings
    env = {**os.environ, **{v: str(threads) for v in
                            ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    results = {}
    for side in ("numpy", "transformers"):
        result = data / f"{side}.json"
        _, _, rss = run_child([sys.executable, "-c", TIMED, side, str(ckpt), str(reps),
                               json.dumps(tokens), str(threads), str(result)], env=env)
        results[side] = (json.loads(result.read_text())["median_s"], rss)
    (ours, our_rss), (theirs, their_rss) = results["numpy"], results["transformers"]
    per = lambda s: 1000 * s / len(tokens)
    print(f"\n[3] same tiny model (make-tiny {preset}, BF16 -> float32), {len(tokens)} tokens, "
          f"median of {reps} forward passes after one warm-up")
    print(f"    NumPy reference   {per(ours):7.2f} ms/token   peak RSS {our_rss:5.0f} MB")
    print(f"    transformers      {per(theirs):7.2f} ms/token   peak RSS {their_rss:5.0f} MB "
          f"({threads} thread(s) each)")
    print(f"    ratio (NumPy / transformers) {ours / theirs:.2f}x time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="v3", help="v3 (default) or v3.2 (with the indexer)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--skip-real", action="store_true",
                    help="only the comparison with transformers")
    ap.add_argument("--skip-v4", action="store_true", help="skip the V4-Flash-widths run")
    ap.add_argument("--only-v4", action="store_true", help="only the V4-Flash-widths run")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS / torch threads of both sides in the comparison (default 1)")
    ap.add_argument("--data", help="keep the built checkpoints in this directory and reuse "
                                   "them (default: a temp dir, removed)")
    args = ap.parse_args()
    tokens = [int(t) for t in range(1, 1 + 37 * args.tokens, 37)][:args.tokens]
    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="bench-forward-"))
    data.mkdir(parents=True, exist_ok=True)
    try:
        if not args.skip_real and not args.only_v4:
            real_widths(data, args.reps, tokens, args.preset)
        if not args.skip_v4:
            v4_flash_widths(data, args.reps, tokens)
        if not args.only_v4:
            against_transformers(data, max(args.reps, 5), [t % 320 for t in tokens],
                                 args.threads, args.preset)
    finally:
        if not args.data:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
