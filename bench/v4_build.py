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
from ckpt_tools.index import ShardIndex, write_index  # noqa: E402
from ckpt_tools.safetensors_io import SafetensorsWriter  # noqa: E402

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


def layer_specs(c: dict, layer: int) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, kind, shape): kind fp8 / fp4 / bf16 / f32 / i64 (scales added by the writer)."""
    D, m, H, A = c["hidden_size"], c["hc_mult"], c["num_attention_heads"], c["head_dim"]
    ql, G, R, E = c["q_lora_rank"], c["o_groups"], c["o_lora_rank"], c["n_routed_experts"]
    f, X, Y = c["moe_intermediate_size"], c["index_n_heads"], c["index_head_dim"]
    ratio, p, n = c["compress_ratios"][layer], f"layers.{layer}.", (2 + m) * m
    specs = [(p + "attn_norm.weight", "bf16", (D,)), (p + "ffn_norm.weight", "bf16", (D,))]
    for hc in ("hc_attn", "hc_ffn"):
        specs += [(f"{p}{hc}_fn", "f32", (n, m * D)), (f"{p}{hc}_base", "f32", (n,)),
                  (f"{p}{hc}_scale", "f32", (3,))]
    a = p + "attn."
    specs += [(a + "attn_sink", "f32", (H,)), (a + "wq_a.weight", "fp8", (ql, D)),
              (a + "q_norm.weight", "bf16", (ql,)), (a + "wq_b.weight", "fp8", (H * A, ql)),
              (a + "wkv.weight", "fp8", (A, D)), (a + "kv_norm.weight", "bf16", (A,)),
              (a + "wo_a.weight", "fp8", (G * R, H * A // G)),
              (a + "wo_b.weight", "fp8", (D, G * R))]
    if ratio:
        coff = 2 if ratio == 4 else 1
        specs += [(a + "compressor.ape", "f32", (ratio, coff * A)),
                  (a + "compressor.wkv.weight", "bf16", (coff * A, D)),
                  (a + "compressor.wgate.weight", "bf16", (coff * A, D)),
                  (a + "compressor.norm.weight", "bf16", (A,))]
    if ratio == 4:
        specs += [(a + "indexer.wq_b.weight", "fp8", (X * Y, ql)),
                  (a + "indexer.weights_proj.weight", "bf16", (X, D)),
                  (a + "indexer.compressor.ape", "f32", (4, 2 * Y)),
                  (a + "indexer.compressor.wkv.weight", "bf16", (2 * Y, D)),
                  (a + "indexer.compressor.wgate.weight", "bf16", (2 * Y, D)),
                  (a + "indexer.compressor.norm.weight", "bf16", (Y,))]
    specs.append((p + "ffn.gate.weight", "bf16", (E, D)))
    if layer < c["num_hash_layers"]:
        specs.append((p + "ffn.gate.tid2eid", "i64", (c["vocab_size"], c["num_experts_per_tok"])))
    else:
        specs.append((p + "ffn.gate.bias", "f32", (E,)))
    specs += [(p + f"ffn.shared_experts.{w}.weight", "fp8", (D, f) if w == "w2" else (f, D))
              for w in ("w1", "w2", "w3")]
    specs += [(p + f"ffn.experts.{e}.{w}.weight", "fp4", (D, f) if w == "w2" else (f, D))
              for e in range(E) for w in ("w1", "w2", "w3")]
    return specs


def stored(specs):
    """The safetensors entries of logical specs: quantised weights get their `.scale`."""
    for name, kind, shape in specs:
        scale = name[:-len(".weight")] + ".scale"
        if kind == "fp8":
            yield name, "F8_E4M3", shape, kind
            yield scale, "F8_E8M0", (-(-shape[0] // 128), -(-shape[1] // 128)), "e8m0"
        elif kind == "fp4":
            yield name, "I8", (shape[0], shape[1] // 2), kind
            yield scale, "F8_E8M0", (shape[0], shape[1] // 32), "e8m0"
        else:
            yield name, {"bf16": "BF16", "f32": "F32", "i64": "I64"}[kind], shape, kind


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
    c = dict(FLASH, num_hidden_layers=layers, n_routed_experts=experts)
    c["compress_ratios"] = ([0, 0] + [4, 128] * layers)[:layers]  # no MTP block
    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    D, V, m = c["hidden_size"], c["vocab_size"], c["hc_mult"]
    files = [("model-00000.safetensors",
              [("embed.weight", "bf16", (V, D)), ("head.weight", "bf16", (V, D)),
               ("norm.weight", "bf16", (D,)), ("hc_head_fn", "f32", (m, m * D)),
               ("hc_head_base", "f32", (m,)), ("hc_head_scale", "f32", (1,))])]
    files += [(f"model-{k + 1:05d}.safetensors", layer_specs(c, k)) for k in range(layers)]
    weight_map, total = {}, 0
    for file, specs in files:
        entries = list(stored(specs))
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
