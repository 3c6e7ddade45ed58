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


def _plan(c: dict, layout: str):
    from ckpt_tools.configs.parse import parse_config
    from ckpt_tools.families.deepseek_v4.tensor_plan import V4TensorPlan

    return V4TensorPlan(parse_config(c, source="tiny V4 config"), layout)


def hub_shapes(c: dict) -> dict[str, tuple]:
    """Every Hub tensor name of the config and its shape (MTP included): the V4 tensor plan."""
    return {s.name: tuple(s.shape) for s in _plan(c, "bf16").specs}


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
KINDS = {"F8_E4M3": "fp8", "I8": "fp4", "F32": "f32", "I64": "i64", "BF16": "bf16"}


def stored_dtypes(c: dict) -> dict[str, str]:
    """How the Hub release stores each tensor: 'fp8', 'fp4', 'f32', 'i64' or 'bf16' (the
    V4 tensor plan's "fp8" layout)."""
    return {s.name: KINDS[s.dtype] for s in _plan(c, "fp8").specs if not s.scale_of}


def quantize_fp4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MXFP4 (I8 codes, E8M0 scale per 32 inputs), as ckpt_tools writes it."""
    from ckpt_tools.formats.mxfp4 import quantize_fp4 as quantize

    return quantize(w)


def quantized_tensors(c: dict, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same model stored as DeepSeek releases it (weights plus `.scale` companions)."""
    from ckpt_tools.families.deepseek_v4.tiny import stored_value

    out = {}
    for spec in _plan(c, "fp8").specs:
        if not spec.scale_of:
            out[spec.name], scale = stored_value(spec, tensors[spec.name])
            if scale is not None:
                out[spec.scale_name] = scale
    return out


def write_checkpoint(path: Path, config: dict, tensors: dict[str, np.ndarray],
                     shards: int = 2) -> Path:
    """config.json, `shards` safetensors files and an index, any dtypes."""
    from ckpt_tools.io.index import ShardIndex, shard_file_name, write_index
    from ckpt_tools.io.safetensors_io import write_safetensors

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
    from ckpt_tools.families.deepseek_v4 import hf_name, stacked_names

    E = config["n_routed_experts"]
    out = {}
    for layer in range(config["num_hidden_layers"]):
        p = f"layers.{layer}.ffn.experts."
        gate_up, down = stacked_names(layer)
        out[gate_up] = np.stack(
            [np.concatenate([tensors[f"{p}{e}.w1.weight"], tensors[f"{p}{e}.w3.weight"]])
             for e in range(E)])
        out[down] = np.stack([tensors[f"{p}{e}.w2.weight"] for e in range(E)])
    for name, value in tensors.items():
        if ".ffn.experts." not in name and not name.startswith("mtp."):
            out[hf_name(name)] = value
    return out
