"""Small, real, random checkpoints with any config's architecture (`ckpt make-tiny`).

The source is anything `ckpt` reads (a preset, a config.json in any recognised layout, a
checkpoint directory). Widths and counts shrink; every structural feature stays: dense-first
layers, expert groups, shared experts, null q_lora (v2-lite, Moonlight),
e_score_correction_bias, the MTP layer (V3), a wrapper and so its tensor prefix. The tiny
config.json spells every value out (no loader defaults left to chance) and keeps the
source's model_type. With `fp8=True` weights are block-quantised, widths are chosen so that
some blocks are partial, and one weight's scale is placed in the next shard. Values depend
only on the seed and the tensor's name, so the output is byte-identical for a seed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import parse_config
from .config_layouts import ConfigReading
from .dtypes import DTYPES
from .errors import ConfigError
from .fp8 import BF16, FP8_QUANTIZATION_CONFIG, quantize
from .index import INDEX_FILE, ShardIndex, shard_file_name, write_index, write_json_atomic
from .output import OutputDir
from .safetensors_io import SafetensorsWriter
from .sources import CONFIG_FILE, resolve_config
from .tensor_plan import TensorPlan, TensorSpec

# Widths that keep the tiny model fast while leaving some FP8 blocks partial (96, 160).
TINY_WIDTHS = {
    "vocab_size": 320,
    "hidden_size": 96,
    "intermediate_size": 160,
    "moe_intermediate_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "kv_lora_rank": 32,
    "qk_nope_head_dim": 16,
    "qk_rope_head_dim": 8,
    "v_head_dim": 16,
}
TINY_Q_LORA_RANK = 48
TINY_EXPERTS = 8
TINY_TOP_K = 3
TINY_MOE_LAYERS = 2


@dataclass(frozen=True)
class Shrunk:
    field: str
    source: Any
    tiny: Any


def _source_config(source: str) -> tuple[dict[str, Any], ConfigReading]:
    """Every effective value of `source` as config.json keys (defaults spelled out), and how
    it was read."""
    config = resolve_config(source).config  # strict: an inconsistent config is refused
    raw = config.model_dump(mode="json", by_alias=True)
    r = config.reading
    if r.original_model_type and r.layout != "inference":
        raw["model_type"] = r.original_model_type
    raw.setdefault("architectures", None)
    if not raw["architectures"]:
        raw["architectures"] = [("DeepseekV3" if config.model_type == "deepseek_v3"
                                 else "DeepseekV2") + "ForCausalLM"]
    return raw, r


def tiny_config(preset: str = "v3", *, real_widths: bool = False,
                overrides: dict[str, Any] | None = None, fp8: bool = False,
                shrunk: list[Shrunk] | None = None) -> dict[str, Any]:
    """The config.json of a tiny model of `preset` (any preset, config.json or checkpoint
    directory), as a dict; what was shrunk is appended to `shrunk`."""
    raw, reading = _source_config(preset)
    before = dict(raw)
    if not real_widths:
        raw.update(TINY_WIDTHS)
        if raw.get("q_lora_rank") is not None:
            raw["q_lora_rank"] = TINY_Q_LORA_RANK
    dense = min(raw.get("first_k_dense_replace", 0), 2)
    groups = raw.get("n_group", 1)
    raw.update(
        first_k_dense_replace=dense,
        num_hidden_layers=dense + TINY_MOE_LAYERS,
        n_routed_experts=TINY_EXPERTS,
        n_group=1 if groups == 1 else 4,
        topk_group=1 if groups == 1 else 2,
        num_experts_per_tok=TINY_TOP_K,
        n_shared_experts=min(raw["n_shared_experts"], 2),
        num_nextn_predict_layers=min(raw.get("num_nextn_predict_layers") or 0, 1),
    )
    if raw["model_type"] == "deepseek_v2" or before.get("num_nextn_predict_layers") is None:
        raw.pop("num_nextn_predict_layers")
    if fp8:
        raw["quantization_config"] = raw.get("quantization_config") or dict(FP8_QUANTIZATION_CONFIG)
    else:
        raw.pop("quantization_config", None)
    raw["torch_dtype"] = "bfloat16"
    raw.update(overrides or {})
    if shrunk is not None:
        shrunk.extend(Shrunk(k, before[k], raw[k]) for k in sorted(raw)
                      if k in before and before[k] != raw[k] and k not in ("torch_dtype",)
                      and not isinstance(raw[k], (dict, list)))
    if reading.wrapper_key:  # keep the wrapper, so tensors keep its prefix
        raw = {"model_type": reading.wrapper_model_type,
               reading.wrapper_key: dict(sorted(raw.items()))}
    parse_config(raw, source=f"tiny {preset}")  # fail before writing anything
    return dict(sorted(raw.items()))


def tensor_value(spec: TensorSpec, seed: int) -> np.ndarray:
    """A deterministic float32 value for one tensor (depends on seed and name only)."""
    rng = np.random.default_rng([seed, zlib.crc32(spec.name.encode())])
    shape = spec.shape
    if spec.component == "router" and len(shape) == 1:  # e_score_correction_bias
        return rng.normal(0.0, 0.1, shape).astype(np.float32)
    if len(shape) == 1:  # norms
        return (1.0 + 0.1 * rng.normal(size=shape)).astype(np.float32)
    if spec.family.endswith(("embed_tokens.weight",)):
        return rng.normal(0.0, 1.0, shape).astype(np.float32)
    return rng.normal(0.0, shape[1] ** -0.5, shape).astype(np.float32)


def _split(specs: list[TensorSpec], shards: int) -> list[list[TensorSpec]]:
    """Contiguous groups of about equal bytes; with FP8, the first boundary falls between a
    weight and its scale so that one scale lives in another shard (as in V3's release)."""
    shards = max(1, min(shards, len(specs)))
    total = sum(s.nbytes for s in specs)
    cuts, acc = [], 0
    for i, s in enumerate(specs):
        acc += s.nbytes
        if len(cuts) < shards - 1 and acc >= total * (len(cuts) + 1) / shards and i + 1 < len(specs):
            cuts.append(i + 1)
    if cuts:
        limit = cuts[1] if len(cuts) > 1 else len(specs)
        scale_at = next((j for j in range(cuts[0], limit) if specs[j].scale_of), None)
        if scale_at is not None:
            cuts[0] = scale_at  # the scale opens the next shard; its weight closes this one
    bounds = [0, *cuts, len(specs)]
    return [specs[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


@dataclass(frozen=True)
class TinyCheckpoint:
    path: Path
    preset: str  # the source: a preset, config.json or checkpoint directory
    layout: str
    shards: int
    tensors: int
    total_bytes: int
    shrunk: tuple[Shrunk, ...] = ()


def write_tiny(dst: str | Path, plan, shards: int, stored, raw: dict[str, Any], *,
               overwrite: bool, side_files: dict[str, dict[str, Any]]) -> int:
    """Write `plan`'s tensors into `shards` shards (a scale opens the next shard at a cut),
    with index, config.json `raw` and `side_files`; `stored(spec)` gives (stored value, its
    scale or None) of a non-scale tensor. Returns the number of shards."""
    groups = _split(list(plan.specs), shards)
    with OutputDir(dst, overwrite=overwrite) as out:
        weight_map: dict[str, str] = {}
        pending_scales: dict[str, np.ndarray] = {}
        for i, group in enumerate(groups, start=1):
            fname = shard_file_name(i, len(groups))
            with SafetensorsWriter(out.path / fname, [(s.name, s.dtype, s.shape) for s in group]) as w:
                for s in group:
                    if s.scale_of:
                        w.write(s.name, pending_scales.pop(s.name))
                    else:
                        value, scale = stored(s)
                        if scale is not None:
                            pending_scales[s.scale_name] = scale
                        w.write(s.name, value)
                    weight_map[s.name] = fname
        write_index(out.path / INDEX_FILE, ShardIndex(weight_map, plan.total_bytes))
        write_json_atomic(out.path / CONFIG_FILE, raw)
        for name, content in side_files.items():
            write_json_atomic(out.path / name, content)
    return len(groups)


def make_tiny(dst: str | Path, preset: str = "v3", *, fp8: bool = False, shards: int = 2,
              seed: int = 0, real_widths: bool = False, overrides: dict[str, Any] | None = None,
              overwrite: bool = False, expert_dtype: str | None = None) -> TinyCheckpoint:
    """Write a tiny checkpoint of `preset` (a preset, config.json or checkpoint directory)
    into `dst` (HF layout; DeepSeek-V4: Hub names, `tiny_v4`)."""
    if resolve_config(preset, lenient=True).config.model_type == "deepseek_v4":
        from .tiny_v4 import make_tiny_v4

        if real_widths:
            raise ConfigError(f"{preset}: --real-widths is not available for DeepSeek-V4")
        return make_tiny_v4(dst, preset, fp8=fp8, shards=shards, seed=seed, overrides=overrides,
                            overwrite=overwrite, expert_dtype=expert_dtype)
    if expert_dtype is not None:
        raise ConfigError(f"{preset}: --expert-dtype applies to DeepSeek-V4 only")
    shrunk: list[Shrunk] = []
    raw = tiny_config(preset, real_widths=real_widths, overrides=overrides, fp8=fp8, shrunk=shrunk)
    config = parse_config(raw)
    plan = TensorPlan(config)

    def stored(s: TensorSpec) -> tuple[np.ndarray, np.ndarray | None]:
        if s.scale_name:
            return quantize(tensor_value(s, seed), plan.block)
        return tensor_value(s, seed).astype(DTYPES[s.dtype].numpy), None

    groups = write_tiny(dst, plan, shards, stored, raw, overwrite=overwrite, side_files={
        "generation_config.json": {"bos_token_id": config.bos_token_id,
                                   "eos_token_id": config.eos_token_id, "do_sample": True,
                                   "temperature": 0.6},
        "tokenizer_config.json": {"model_max_length": config.max_position_embeddings,
                                  "tokenizer_class": "LlamaTokenizerFast"}})
    return TinyCheckpoint(Path(dst), preset, plan.layout, groups, len(plan), plan.total_bytes,
                          tuple(shrunk))


__all__ = ["make_tiny", "tiny_config", "tensor_value", "TinyCheckpoint", "Shrunk", "BF16"]
