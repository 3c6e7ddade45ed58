"""Tiny DeepSeek-V4 checkpoints with the Hub's exact names and dtypes (`ckpt make-tiny
--preset v4-flash [--fp8]`).

The first five blocks of the preset's attention schedule are kept (for V4-Flash: sliding,
sliding, CSA, HCA, CSA, so all three layer types), with the first three hash-routed and
the rest learned, plus the MTP block. Every width is a multiple of 128 so that each FP8
tensor has whole 128x128 blocks, as in the release (transformers' loader needs that too).
With `fp8=True` dense linears are e4m3 with E8M0 block scales and routed experts MXFP4
(or FP8 with `expert_dtype="fp8"`); without, the "bf16" layout (no scales).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ...configs.parse import parse_config
from ...io.dtypes import DTYPES
from ...formats import FP8_QUANTIZATION_CONFIG
from ...presets import find_preset
from ...execution.progress import or_null
from ...configs.sources import resolve_config
from ...inventory.tensor_plan import TensorSpec
from ...commands.tiny import Shrunk
from ...commands.tiny_writer import TinyCheckpoint, write_tiny
from ...configs.v4 import ExpertDtype
from ...formats.mxfp4 import quantize_fp4, quantize_fp8
from .tensor_plan import V4TensorPlan

TINY_V4_WIDTHS = {
    "vocab_size": 256,
    "hidden_size": 128,
    "num_attention_heads": 2,
    "head_dim": 128,
    "qk_rope_head_dim": 32,
    "q_lora_rank": 128,
    "o_groups": 2,
    "o_lora_rank": 128,
    "moe_intermediate_size": 128,
    "n_routed_experts": 8,
    "num_experts_per_tok": 2,
    "index_n_heads": 4,  # x index_head_dim = 256: the indexer wq_b splits in two 128-blocks
    "index_head_dim": 64,
    "index_topk": 4,
    "sliding_window": 8,
}
TINY_V4_LAYERS = 5


def tiny_v4_config(preset: str, *, fp8: bool = False, expert_dtype: ExpertDtype | None = None,
                   overrides: dict[str, Any] | None = None,
                   shrunk: list[Shrunk] | None = None) -> dict[str, Any]:
    """The tiny config.json of `preset`; what was shrunk is appended to `shrunk` (lists,
    such as `compress_ratios`, as their lengths)."""
    p = find_preset(preset)
    if p is not None:
        raw = p.raw_config
    else:  # a config.json or checkpoint directory (already read as V4 by the caller)
        raw = resolve_config(preset).config.to_json_dict()
    before = dict(raw)
    mtp = raw.get("num_nextn_predict_layers", 0)
    ratios = raw["compress_ratios"]
    raw.update(TINY_V4_WIDTHS)
    raw.update(num_hidden_layers=TINY_V4_LAYERS,
               compress_ratios=ratios[:TINY_V4_LAYERS] + ratios[len(ratios) - mtp:],
               num_hash_layers=min(raw.get("num_hash_layers", 0), TINY_V4_LAYERS - 2))
    if fp8:
        qc = raw.setdefault("quantization_config", dict(FP8_QUANTIZATION_CONFIG))
        qc["scale_fmt"] = "ue8m0"
        if expert_dtype is not None:
            raw["expert_dtype"] = expert_dtype
    else:
        raw.pop("quantization_config", None)
        raw.pop("expert_dtype", None)
    raw["torch_dtype"] = "bfloat16"
    raw.update(overrides or {})
    parse_config(raw, source=f"tiny {preset}")  # fail before writing anything
    if shrunk is not None:
        def size(v):
            return len(v) if isinstance(v, list) else v
        shrunk.extend(Shrunk(k, size(before[k]), size(raw[k])) for k in sorted(raw)
                      if k in before and before[k] != raw[k] and k != "torch_dtype"
                      and not isinstance(raw[k], dict))
    return dict(sorted(raw.items()))


def logical_shape(spec: TensorSpec) -> tuple[int, ...]:
    """The unpacked [out, in] of a tensor (an I8 MXFP4 weight stores in/2 bytes a row)."""
    return (spec.shape[0], 2 * spec.shape[1]) if spec.dtype == "I8" else spec.shape


def tensor_value_v4(spec: TensorSpec, seed: int, config) -> np.ndarray:
    """Deterministic values of one tensor (seed and name only); float32 except tid2eid."""
    rng = np.random.default_rng([seed, zlib.crc32(spec.name.encode())])
    shape = logical_shape(spec)
    if spec.dtype == "I64":  # hash routing: k distinct experts per token
        keys = rng.random((shape[0], config.n_routed_experts))
        return np.argsort(keys, axis=1)[:, : shape[1]].astype(np.int64)
    if spec.name.endswith(("norm.weight",)):
        return (1.0 + 0.1 * rng.normal(size=shape)).astype(np.float32)
    if len(shape) == 1:  # router bias, hc base/scale, attention sinks
        return rng.normal(0.0, 0.1, shape).astype(np.float32)
    std = 1.0 if spec.component == "embedding" else shape[1] ** -0.5
    return rng.normal(0.0, std, shape).astype(np.float32)


def stored_value(spec: TensorSpec, value: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """A float value as the plan stores it: (MXFP4 I8 or FP8 e4m3, E8M0 scale) for a tensor
    with a scale, else (value in its dtype, None)."""
    if spec.scale_name:
        return quantize_fp4(value) if spec.dtype == "I8" else quantize_fp8(value)
    return value.astype(DTYPES[spec.dtype].numpy), None


def make_tiny_v4(dst, preset: str = "v4-flash", *, fp8: bool = False, shards: int = 2,
                 seed: int = 0, expert_dtype: ExpertDtype | None = None,
                 overrides: dict[str, Any] | None = None, overwrite: bool = False,
                 progress=None) -> TinyCheckpoint:
    """Write a tiny V4 checkpoint (Hub names) into `dst`."""
    shrunk: list[Shrunk] = []
    raw = tiny_v4_config(preset, fp8=fp8, expert_dtype=expert_dtype, overrides=overrides,
                         shrunk=shrunk)
    config = parse_config(raw)
    plan = V4TensorPlan(config, expert_dtype=expert_dtype)
    progress = or_null(progress)
    progress.start(plan.total_bytes, f"make-tiny {preset}")

    def encode(spec: TensorSpec, pending_scales: dict):
        # tiny widths: one tensor at a time is small, so no chunking here
        value, scale = stored_value(spec, tensor_value_v4(spec, seed, config))
        if scale is not None:
            pending_scales[spec.scale_name] = scale
        data = np.ascontiguousarray(value).reshape(-1).view(np.uint8)
        progress.advance(data.size)
        yield memoryview(data)

    groups = write_tiny(
        dst, plan, shards, encode, raw, overwrite=overwrite, progress=progress, side_files={
            "generation_config.json": {"bos_token_id": raw.get("bos_token_id"),
                                       "eos_token_id": raw.get("eos_token_id"), "do_sample": True},
            "tokenizer_config.json": {"model_max_length": raw["max_position_embeddings"]}})
    progress.finish()
    return TinyCheckpoint(path=Path(dst), preset=preset, layout=plan.layout, shards=groups,
                          tensors=len(plan), total_bytes=plan.total_bytes,
                          shrunk={x.field: (x.source, x.tiny) for x in shrunk})
