"""Build a DeepSeek-V4 checkpoint at V4-Flash widths for bench/forward.py (bench data only).

Released storage and names: dense projections F8_E4M3 with an F8_E8M0 scale per 128x128
block, routed experts MXFP4 (I8, two e2m1 codes per byte) with an E8M0 scale per 32 inputs,
compressor / gate / embedding BF16, hc_* / ape / sinks / gate bias F32, tid2eid I64.
V4-Flash's widths (hidden 4096, 64 heads of 512, q_lora 1024, 8 output groups of 1024,
experts 2048 wide, indexer 64 x 128, hc_mult 4) with its first layers' schedule
(sliding, sliding, CSA, HCA; the first three hash-routed), but 32 routed experts and a
16384-token vocabulary, so the build stays near 2.4 GB. Values are random codes with
scales that keep activations finite; they are not a trained model.

Usage: python bench/v4_build.py DIR [--layers 4] [--experts 32]
Tensors are written one at a time (the builder holds one tensor).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import ml_dtypes
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ckpt_tools.configs.parse import parse_config  # noqa: E402
from ckpt_tools.io.index import ShardIndex, write_index  # noqa: E402
from ckpt_tools.io.safetensors_io import SafetensorsWriter  # noqa: E402
from ckpt_tools.families import family_of  # noqa: E402

FLASH = {
    "architectures": ["DeepseekV4ForCausalLM"], "model_type": "deepseek_v4",
    "vocab_size": 16384, "hidden_size": 4096, "num_hidden_layers": 4,
    "num_attention_heads": 64, "num_key_value_heads": 1, "head_dim": 512,
    "qk_rope_head_dim": 64, "q_lora_rank": 1024, "o_groups": 8, "o_lora_rank": 1024,
    "n_routed_experts": 32, "n_shared_experts": 1, "num_experts_per_tok": 6,
    "moe_intermediate_size": 2048, "scoring_func": "sqrtsoftplus", "topk_method": "noaux_tc",
    "norm_topk_prob": True, "routed_scaling_factor": 1.5, "swiglu_limit": 10.0,
    "num_hash_layers": 3, "index_n_heads": 64, "index_head_dim": 128, "index_topk": 512,
    "sliding_window": 128, "hc_mult": 4, "hc_sinkhorn_iters": 20, "hc_eps": 1e-6,
    "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "compress_rope_theta": 160000.0,
    "rope_scaling": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536,
                     "beta_fast": 32, "beta_slow": 1},
    "max_position_embeddings": 1048576, "num_nextn_predict_layers": 0,
    "compress_ratios": [0, 0, 4, 128], "expert_dtype": "fp4",
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                            "quant_method": "fp8", "scale_fmt": "ue8m0",
                            "weight_block_size": [128, 128]},
    "bos_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


KINDS = {"F8_E4M3": "fp8", "I8": "fp4", "F8_E8M0": "e8m0", "I64": "i64", "BF16": "bf16",
         "F32": "f32"}


def files_of(c: dict) -> list[tuple[str, list[tuple[str, str, tuple[int, ...], str]]]]:
    """(file, [(name, dtype, shape, kind)]): the V4 tensor plan of the released storage
    (scales included), embedding/head/norm/hc_head in the first file, one file per layer."""
    config = parse_config(c, source="bench V4 config")
    plan = family_of(config).plan(config, "fp8", include_mtp=False)
    files: dict[str, list] = {}
    for s in plan.specs:
        file = f"model-{0 if s.layer is None else s.layer + 1:05d}.safetensors"
        files.setdefault(file, []).append((s.name, s.dtype, tuple(s.shape), KINDS[s.dtype]))
    return sorted(files.items())


def value(rng, name: str, kind: str, shape, c: dict) -> np.ndarray:
    if kind == "fp8":  # codes of N(0, 16^2) times 2^-10: weights of about 0.016
        return (rng.standard_normal(shape, np.float32) * 16).astype(ml_dtypes.float8_e4m3fn)
    if kind == "fp4":  # any byte is two valid e2m1 codes
        return rng.integers(-128, 128, shape, dtype=np.int8)
    if kind == "e8m0":  # 2^-10 for FP8 blocks, 2^-8 for FP4 groups
        exponent = 127 - (8 if ".experts." in name and "shared" not in name else 10)
        return np.full(shape, exponent, np.uint8).view(ml_dtypes.float8_e8m0fnu)
    if kind == "i64":
        E, K = c["n_routed_experts"], shape[1]
        return np.argsort(rng.random((shape[0], E), np.float32), axis=1)[:, :K].astype(np.int64)
    if name.endswith("norm.weight"):
        return np.ones(shape, ml_dtypes.bfloat16)
    if kind == "bf16":
        return (rng.standard_normal(shape, np.float32) * 0.02).astype(ml_dtypes.bfloat16)
    scale = 0.01 if name.endswith("_fn") else 0.5
    return (rng.standard_normal(shape, np.float32) * scale).astype(np.float32)


def build(dst: Path, layers: int, experts: int) -> None:
    c = dict(FLASH, num_hidden_layers=layers, n_routed_experts=experts,
             num_hash_layers=min(FLASH["num_hash_layers"], layers))
    c["compress_ratios"] = ([0, 0] + [4, 128] * layers)[:layers]  # no MTP block
    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    weight_map, total = {}, 0
    for file, entries in files_of(c):
        with SafetensorsWriter(dst / file, [(n, d, s) for n, d, s, _ in entries]) as w:
            for name, _, shape, kind in entries:
                array = value(rng, name, kind, shape, c)
                w.write(name, array)
                total += array.nbytes
                weight_map[name] = file
    write_index(dst / "model.safetensors.index.json", ShardIndex(weight_map, total))
    (dst / "config.json").write_text(json.dumps(c, indent=2))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dst")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--experts", type=int, default=32)
    args = ap.parse_args()
    build(Path(args.dst), args.layers, args.experts)
