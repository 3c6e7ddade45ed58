"""Tiny DeepSeek-V4 models for the reference tests: a Hub-style config.json dict and its
tensors under DeepSeek's Hub names, drawn with NumPy from a seed (so runs without torch
rebuild exactly the weights the golden logits were computed from).

Parameters transformers initialises to zero or one (sinks, hc base/scale, compressor ape,
gate bias) get random values here, so every part of the forward pass is exercised.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

# Shared by every case; each case overrides the schedule and the lengths it tests.
BASE = {
    "architectures": ["DeepseekV4ForCausalLM"],
    "model_type": "deepseek_v4",
    "vocab_size": 96,
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "qk_rope_head_dim": 16,
    "q_lora_rank": 32,
    "o_groups": 2,
    "o_lora_rank": 16,
    "n_routed_experts": 8,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
    "scoring_func": "sqrtsoftplus",
    "topk_method": "noaux_tc",
    "norm_topk_prob": True,
    "routed_scaling_factor": 1.5,
    "swiglu_limit": 1.0,
    "num_hash_layers": 1,
    "index_n_heads": 4,
    "index_head_dim": 32,
    "index_topk": 3,
    "sliding_window": 8,
    "hc_mult": 4,
    "hc_sinkhorn_iters": 20,
    "hc_eps": 1e-6,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "compress_rope_theta": 160000.0,
    "rope_scaling": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 64,
                     "beta_fast": 32, "beta_slow": 1},
    "compress_ratios": [0, 4, 128, 0],
    "num_nextn_predict_layers": 1,
    "max_position_embeddings": 4096,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
}


def hub_config(**overrides) -> dict:
    config = json.loads(json.dumps(BASE))
    config.update(overrides)
    return config


def namespace(config: dict) -> SimpleNamespace:
    """The config as an object with the Hub keys as attributes (what the model reads)."""
    return SimpleNamespace(**config)


def _block_shapes(c: dict, ratio: int, hashed: bool) -> dict[str, tuple]:
    D, m, H, A = c["hidden_size"], c["hc_mult"], c["num_attention_heads"], c["head_dim"]
    ql, G, R = c["q_lora_rank"], c["o_groups"], c["o_lora_rank"]
    E, K, f = c["n_routed_experts"], c["num_experts_per_tok"], c["moe_intermediate_size"]
    X, Y, V = c["index_n_heads"], c["index_head_dim"], c["vocab_size"]
    n = (2 + m) * m
    s = {"attn_norm.weight": (D,), "ffn_norm.weight": (D,)}
    for hc in ("hc_attn", "hc_ffn"):
        s.update({f"{hc}_fn": (n, m * D), f"{hc}_base": (n,), f"{hc}_scale": (3,)})
    s.update({"attn.attn_sink": (H,), "attn.wq_a.weight": (ql, D), "attn.q_norm.weight": (ql,),
              "attn.wq_b.weight": (H * A, ql), "attn.wkv.weight": (A, D),
              "attn.kv_norm.weight": (A,), "attn.wo_a.weight": (G * R, H * A // G),
              "attn.wo_b.weight": (D, G * R)})
    if ratio:
        coff = 2 if ratio == 4 else 1
        s.update({"attn.compressor.ape": (ratio, coff * A),
                  "attn.compressor.wkv.weight": (coff * A, D),
                  "attn.compressor.wgate.weight": (coff * A, D),
                  "attn.compressor.norm.weight": (A,)})
    if ratio == 4:
        s.update({"attn.indexer.wq_b.weight": (X * Y, ql),
                  "attn.indexer.weights_proj.weight": (X, D),
                  "attn.indexer.compressor.ape": (4, 2 * Y),
                  "attn.indexer.compressor.wkv.weight": (2 * Y, D),
                  "attn.indexer.compressor.wgate.weight": (2 * Y, D),
                  "attn.indexer.compressor.norm.weight": (Y,)})
    s["ffn.gate.weight"] = (E, D)
    s["ffn.gate.tid2eid" if hashed else "ffn.gate.bias"] = (V, K) if hashed else (E,)
    for prefix in ["ffn.shared_experts."] + [f"ffn.experts.{e}." for e in range(E)]:
        s.update({prefix + "w1.weight": (f, D), prefix + "w3.weight": (f, D),
                  prefix + "w2.weight": (D, f)})
    return s


def hub_shapes(c: dict) -> dict[str, tuple]:
    """Every Hub tensor name of the config and its shape (MTP included)."""
    D, m, V, L = c["hidden_size"], c["hc_mult"], c["vocab_size"], c["num_hidden_layers"]
    shapes = {"embed.weight": (V, D), "head.weight": (V, D), "norm.weight": (D,),
              "hc_head_fn": (m, m * D), "hc_head_base": (m,), "hc_head_scale": (1,)}
    for layer in range(L):
        block = _block_shapes(c, c["compress_ratios"][layer], layer < c["num_hash_layers"])
        shapes.update({f"layers.{layer}.{k}": v for k, v in block.items()})
    for depth in range(c.get("num_nextn_predict_layers", 0)):
        p = f"mtp.{depth}."
        shapes.update({p + k: v for k, v in _block_shapes(c, c["compress_ratios"][L + depth],
                                                           False).items()})
        shapes.update({p + "e_proj.weight": (D, D), p + "h_proj.weight": (D, D),
                       p + "enorm.weight": (D,), p + "hnorm.weight": (D,), p + "norm.weight": (D,),
                       p + "hc_head_fn": (m, m * D), p + "hc_head_base": (m,),
                       p + "hc_head_scale": (1,)})
    return shapes


def hub_tensors(c: dict, seed: int) -> dict[str, np.ndarray]:
    """Random float32 tensors (int64 tid2eid) with values of a trained model's scale."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in sorted(hub_shapes(c).items()):
        leaf = name.rsplit(".", 1)[-1] if not name.endswith(".weight") else name
        if name.endswith("tid2eid"):  # distinct experts per token, as a real table
            E = c["n_routed_experts"]
            out[name] = np.argsort(rng.random((shape[0], E)), axis=1)[:, :shape[1]].astype(np.int64)
            continue
        if name.endswith("norm.weight"):
            value = 1.0 + 0.2 * rng.standard_normal(shape)
        elif name.endswith(("_scale", "_base")) or leaf in ("ape", "bias", "attn_sink"):
            value = 0.5 * rng.standard_normal(shape)
        elif name.endswith(("_fn",)):
            value = 0.05 * rng.standard_normal(shape)
        elif name in ("embed.weight",):
            value = rng.standard_normal(shape)
        else:  # projections: unit-variance outputs for unit-variance inputs
            value = rng.standard_normal(shape) / np.sqrt(shape[-1])
        out[name] = value.astype(np.float32)
    return out


def write_float32_checkpoint(path: Path, config: dict, tensors: dict[str, np.ndarray]) -> Path:
    """config.json + one model.safetensors with the Hub names (float32 / int64 as given)."""
    from safetensors.numpy import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
              str(path / "model.safetensors"))
    return path


# -- the released storage: FP8 dense, MXFP4 experts, BF16 / F32 / I64 for the rest ----------
FP8_ROLES = ("attn.wq_a.weight", "attn.wq_b.weight", "attn.wkv.weight", "attn.wo_a.weight",
             "attn.wo_b.weight", "indexer.wq_b.weight", "e_proj.weight", "h_proj.weight")
F32_LEAVES = ("ape", "attn_sink", "bias")
E2M1 = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6], np.float32)


def stored_dtype(name: str) -> str:
    """How the Hub release stores a tensor: 'fp8', 'fp4', 'f32', 'i64' or 'bf16'."""
    if name.endswith("tid2eid"):
        return "i64"
    if ".ffn.experts." in name:
        return "fp4"
    if "shared_experts." in name or name.endswith(FP8_ROLES) and ".compressor." not in name:
        return "fp8"
    leaf = name.rsplit(".", 1)[-1]
    if ".hc_" in "." + name or name.startswith("hc_") or leaf in F32_LEAVES:
        return "f32"
    return "bf16"


def quantize_fp4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MXFP4: per row and 32 inputs a power-of-two scale (E8M0) putting amax at most at 6,
    each value rounded to the nearest e2m1 code; two codes per byte, the even one low."""
    import ml_dtypes

    rows, cols = w.shape
    blocks = w.reshape(rows, cols // 32, 32).astype(np.float32)
    amax = np.abs(blocks).max(axis=-1)
    scale = np.exp2(np.ceil(np.log2(np.maximum(amax, 2.0 ** -100) / 6.0))).astype(np.float32)
    scaled = (blocks / scale[..., None]).reshape(rows, cols)
    codes = np.abs(scaled[..., None] - E2M1).argmin(axis=-1).astype(np.uint8)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).view(np.int8)
    return packed, scale.astype(ml_dtypes.float8_e8m0fnu)


def quantized_tensors(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same model stored as DeepSeek releases it (weights plus `.scale` companions)."""
    import ml_dtypes

    from ckpt_tools.fp8 import quantize

    out = {}
    for name, value in tensors.items():
        kind = stored_dtype(name)
        if kind == "fp8":
            q, s = quantize(value, scale_fmt="ue8m0")
            out[name] = q
            out[name[:-len(".weight")] + ".scale"] = s.astype(ml_dtypes.float8_e8m0fnu)
        elif kind == "fp4":
            out[name], out[name[:-len(".weight")] + ".scale"] = quantize_fp4(value)
        elif kind == "f32":
            out[name] = value.astype(np.float32)
        elif kind == "i64":
            out[name] = value.astype(np.int64)
        else:
            out[name] = value.astype(ml_dtypes.bfloat16)
    return out


def write_checkpoint(path: Path, config: dict, tensors: dict[str, np.ndarray],
                     shards: int = 2) -> Path:
    """config.json, `shards` safetensors files and an index, any dtypes."""
    from ckpt_tools.index import ShardIndex, shard_file_name, write_index
    from ckpt_tools.safetensors_io import write_safetensors

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    names = sorted(tensors)
    weight_map = {}
    for i in range(shards):
        part = names[i::shards]
        file = shard_file_name(i + 1, shards)
        write_safetensors(path / file, {n: np.ascontiguousarray(tensors[n]) for n in part})
        weight_map.update({n: file for n in part})
    write_index(path / "model.safetensors.index.json",
                ShardIndex(weight_map, sum(t.nbytes for t in tensors.values())))
    return path


def hf_tensors(config: dict, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The float tensors under transformers' names, routed experts stacked per layer
    (gate_up_proj [E, 2I, D]: w1 rows then w3 rows; down_proj [E, D, I]); no MTP."""
    from ckpt_tools.reference.v4_checkpoint import hf_name

    E = config["n_routed_experts"]
    out = {}
    for layer in range(config["num_hidden_layers"]):
        p = f"layers.{layer}.ffn.experts."
        stacked = hf_name(p)
        out[stacked + "gate_up_proj"] = np.stack(
            [np.concatenate([tensors[f"{p}{e}.w1.weight"], tensors[f"{p}{e}.w3.weight"]])
             for e in range(E)])
        out[stacked + "down_proj"] = np.stack([tensors[f"{p}{e}.w2.weight"] for e in range(E)])
    for name, value in tensors.items():
        if ".ffn.experts." not in name and not name.startswith("mtp."):
            out[hf_name(name)] = value
    return out
