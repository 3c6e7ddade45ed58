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

import json
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..configs.parse import parse_config
from ..configs.layouts import FOREIGN_QUANT_KEYS, ConfigReading
from ..io.dtypes import DTYPES
from ..errors import ARGUMENT_PLACEHOLDER, ArgumentError
from ..families import Family, family_of
from ..formats import FP8_BLOCK, FP8_QUANTIZATION_CONFIG
from ..formats.fp8_block import BF16, quantize
from ..execution.progress import Progress, or_null
from ..configs.sources import resolve_config
from ..inventory.tensor_plan import TensorPlan, TensorSpec
from .tiny_writer import TinyCheckpoint, write_tiny  # noqa: F401  (TinyCheckpoint: API)

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
# FP8: the dimensions DeepSeek's model-parallel layout splits hold whole 128-blocks on
# each of 2 ranks (4 heads x 64; 256-wide MLPs), so `reshard --to deepseek-mp
# --model-parallel 2` takes the default FP8 tiny model; the unsplit ones (hidden 96, the
# LoRA ranks) still end in partial blocks.
TINY_FP8_SPLIT_WIDTHS = {
    "qk_nope_head_dim": 64,
    "qk_rope_head_dim": 64,
    "v_head_dim": 64,
    "intermediate_size": 256,
    "moe_intermediate_size": 256,
}
TINY_Q_LORA_RANK = 48
TINY_EXPERTS = 8
TINY_TOP_K = 3
TINY_MOE_LAYERS = 2
TINY_ZERO_EXPERTS = 4  # zero-computation router slots (LongCat-Flash), about half the experts
# V3.2's indexer: enough heads that an all-ReLU-zero score (a tie) is rare, a head width
# that leaves partial FP8 blocks, and a top-k below the test sequences' lengths.
TINY_INDEXER = {"index_n_heads": 16, "index_head_dim": 32, "index_topk": 8}
CHUNK_ELEMENTS = 1 << 23  # 64 MB of float64 draws per block of rows
CHUNK_ROWS_MULTIPLE = FP8_BLOCK[0]  # whole FP8 block rows: chunks quantise independently


@dataclass(frozen=True)
class Shrunk:
    field: str
    source: Any
    tiny: Any


def _source_config(source: str) -> tuple[dict[str, Any], ConfigReading, dict[str, str]]:
    """Every effective value of `source` as config.json keys (defaults spelled out, under the
    common field names), how it was read, and the family's own spelling of those names."""
    config = resolve_config(source, lenient=True).config
    if config.reading.inconsistencies:
        resolve_config(source)  # strict: an inconsistent config is refused, in its one line
    raw = config.model_dump(mode="json")  # common names; `_spelled` writes the family's
    for key in FOREIGN_QUANT_KEYS:  # another scheme's declaration: the tiny model is BF16/FP8
        raw.pop(key, None)
    r = config.reading
    if r.original_model_type and r.layout != "inference":
        raw["model_type"] = r.original_model_type
    raw.setdefault("architectures", None)
    if not raw["architectures"]:
        raw["architectures"] = [family_of(config).architectures[0]]
    return raw, r, type(config)


def tiny_config(preset: str = "v3", *, real_widths: bool = False,
                overrides: dict[str, Any] | None = None, fp8: bool = False,
                shrunk: list[Shrunk] | None = None) -> dict[str, Any]:
    """The config.json of a tiny model of `preset` (any preset, config.json or checkpoint
    directory), as a dict; what was shrunk is appended to `shrunk`."""
    raw, reading, config_class = _source_config(preset)
    file_keys = config_class.file_keys()
    before = dict(raw)
    if not real_widths:
        raw.update(TINY_WIDTHS)
        if raw.get("q_lora_rank") is not None:
            raw["q_lora_rank"] = TINY_Q_LORA_RANK
        if "index_topk" in raw:
            raw.update(TINY_INDEXER)
        if fp8:
            raw.update(TINY_FP8_SPLIT_WIDTHS)
            if "index_head_dim" in raw:  # the indexer rotates qk_rope_head_dim of its dims
                raw["index_head_dim"] = max(raw["index_head_dim"], raw["qk_rope_head_dim"])
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
    if "head_dim" in raw:  # the rotary width a config spells out (LongCat-Flash's): the tiny one
        raw["head_dim"] = raw["qk_rope_head_dim"]
    if raw.get("zero_expert_num"):
        raw["zero_expert_num"] = TINY_ZERO_EXPERTS
    _per_layer_lists(raw, before, config_class.layer_index_lists)
    rope = raw.get("rope_scaling")
    if isinstance(rope, dict) and "partial_rotary_factor" in rope:  # Mistral 4: of the new widths
        raw["rope_scaling"] = {**rope, "partial_rotary_factor": raw["qk_rope_head_dim"] / (
            raw["qk_rope_head_dim"] + raw["qk_nope_head_dim"])}
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
    raw = {file_keys.get(k, k): v for k, v in raw.items()}  # as its loader reads them
    if reading.wrapper_key:  # keep the wrapper, so tensors keep its prefix
        raw = {"model_type": reading.wrapper_model_type,
               reading.wrapper_key: dict(sorted(raw.items()))}
    parse_config(raw, source=f"tiny {preset}")  # fail before writing anything
    return dict(sorted(raw.items()))


def _per_layer_lists(raw: dict[str, Any], source: dict[str, Any],
                     layer_index_lists: tuple[str, ...] = ()) -> None:
    """Every list with one entry per source layer (transformers 5's `mlp_layer_types` and
    `layer_types`, GLM-5's `indexer_types`, ...) spelled again for the tiny layer count: the
    dense prefix keeps its first entries, the MoE layers take each kind the source's MoE
    layers have, in their order of first appearance (so "full" then "shared" stays both).
    A list of layer indices (`layer_index_lists`) is mapped after the others."""
    n, dense = raw["num_hidden_layers"], raw["first_k_dense_replace"]
    src_layers, src_dense = source["num_hidden_layers"], source.get("first_k_dense_replace", 0)
    for key, values in list(raw.items()):
        if not isinstance(values, list) or len(values) != src_layers or key == "architectures":
            continue
        if key in layer_index_lists:
            continue
        if key == "mlp_layer_types":  # follows first_k_dense_replace, which shrank itself
            raw[key] = ["dense"] * dense + ["sparse"] * (n - dense)
            continue
        kinds = list(dict.fromkeys(values[src_dense:])) or values[:1]
        raw[key] = values[:dense] + [kinds[i % len(kinds)] for i in range(n - dense)]
    for key in layer_index_lists:
        if isinstance(raw.get(key), list) and len(raw[key]) == src_layers:
            raw[key] = _shared_layers(raw, key, n, shares=any(
                source_layer != layer for layer, source_layer in enumerate(raw[key])))


def _shared_layers(raw: dict[str, Any], key: str, n: int, shares: bool) -> list[int]:
    """A tiny list of source layers: each layer owns its entry, unless the source shares at
    all; then a layer after an owner that agrees with it in every other per-layer list (its
    rotary kind, its indexer, ...) takes that owner's, so the tiny copy still shares."""
    others = [v for k, v in raw.items()
              if k != key and isinstance(v, list) and len(v) == n and k != "architectures"]
    out: list[int] = []
    for layer in range(n):
        owners = [j for j in range(layer) if out[j] == j and out.count(j) == 1
                  and all(v[j] == v[layer] for v in others)]
        out.append(owners[-1] if shares and owners else layer)
    return out


def value_chunks(spec: TensorSpec, seed: int,
                 rows_multiple: int = CHUNK_ROWS_MULTIPLE) -> Iterator[np.ndarray]:
    """A tensor's deterministic float32 values (they depend on seed and name only), as
    row blocks of about `CHUNK_ELEMENTS`; the row count is a multiple of FP8's block rows
    so that each block can be quantised as it comes.

    Memory is a chunk's whatever the width (a V3 embedding at real width is 0.9 G elements:
    7 GB as one float64 draw). Each chunk is drawn as float64 and cast at once, because
    the generator's float64 stream drawn chunk by chunk equals the whole-tensor draw: every
    checkpoint (and the golden logits computed from them) stays byte-identical."""
    rng = np.random.default_rng([seed, zlib.crc32(spec.name.encode())])
    shape = spec.shape
    if len(shape) == 1 and spec.name.endswith((".bias", "e_score_correction_bias")):
        offset, std = 0.0, 0.1  # the router's score bias, V3.2's indexer k_norm bias
    elif len(shape) == 1:  # norms
        offset, std = 1.0, 0.1
    elif spec.family.endswith("embed_tokens.weight"):
        offset, std = 0.0, 1.0
    else:
        offset, std = 0.0, shape[1] ** -0.5
    row_elements = math.prod(shape[1:])
    rows = CHUNK_ELEMENTS // max(row_elements, 1) // rows_multiple * rows_multiple
    rows = max(rows_multiple, rows)
    for start in range(0, shape[0], rows):
        draw = rng.normal(offset, std, (min(rows, shape[0] - start), *shape[1:]))
        yield draw.astype(np.float32)


def tensor_value(spec: TensorSpec, seed: int) -> np.ndarray:
    """A tensor's whole float32 value (for tests and small tensors; writing streams)."""
    return np.concatenate(list(value_chunks(spec, seed)))


def check_options(preset: str, *, fp8: bool = False, real_widths: bool = False,
                  expert_dtype: str | None = None) -> Family:
    """Refuse, before anything is written, an option `preset`'s model cannot honour;
    the preset's family."""
    family = family_of(resolve_config(preset, lenient=True).config)
    own = family.has_hook("tiny_config")  # shrinks its own way: fixed widths, own expert format
    if fp8:
        family.refuse_block_fp8(preset)  # a family whose releases use another scheme
    if own and real_widths:
        raise ArgumentError(f"{preset}: {ARGUMENT_PLACEHOLDER} is not available for "
                            f"{family.title} (its tiny widths are fixed)", argument="real_widths",
                            value=True)
    if not own and expert_dtype is not None:
        raise ArgumentError(f"{preset}: {ARGUMENT_PLACEHOLDER} applies to families whose routed "
                            f"experts have a format of their own (MXFP4); {family.title} has "
                            f"none", argument="expert_dtype", value=expert_dtype)
    if own and expert_dtype is not None and not fp8:
        raise ArgumentError(f"{preset}: {ARGUMENT_PLACEHOLDER} chooses how an FP8 checkpoint "
                            f"stores its experts, and this one is BF16",
                            argument="expert_dtype", value=expert_dtype)
    return family


def _check_overrides(raw: dict[str, Any], overrides: dict[str, Any] | None, preset: str) -> None:
    """An override must name a key the config reads: a near miss is refused with its
    'did you mean' (in a config file it is only a warning: the file may be someone else's)."""
    if not overrides:
        return
    reading = parse_config(raw, source=f"tiny {preset}", lenient=True).reading
    for warning in reading.warnings:
        key = warning.partition(":")[0]
        if key in overrides:
            why = warning.partition(": ")[2].replace("kept but not read; ", "").replace(
                "; kept, not read", "")
            raise ArgumentError(f"{key}={json.dumps(overrides[key])}: {why}",
                                argument="overrides", value=overrides)


def tiny_plan(preset: str, *, fp8: bool = False, real_widths: bool = False,
              overrides: dict[str, Any] | None = None, shrunk: list[Shrunk] | None = None,
              expert_dtype: str | None = None,
              shards: int | None = None) -> tuple[dict[str, Any], TensorPlan]:
    """The config.json and tensor plan `make_tiny` would write (its size is
    `plan.total_bytes`); writes nothing, and refuses every option that cannot be honoured
    (`shards`: more shards than tensors). What was shrunk is appended to `shrunk`."""
    family = check_options(preset, fp8=fp8, real_widths=real_widths, expert_dtype=expert_dtype)
    if family.has_hook("tiny_config"):  # a family that shrinks its own way
        raw = family.hook("tiny_config")(preset, fp8=fp8, expert_dtype=expert_dtype,
                                         overrides=overrides, shrunk=shrunk)
        plan = family.plan(parse_config(raw), expert_dtype=expert_dtype)
    else:
        raw = tiny_config(preset, real_widths=real_widths, overrides=overrides, fp8=fp8,
                          shrunk=shrunk)
        plan = TensorPlan(parse_config(raw))
    _check_overrides(raw, overrides, preset)
    if shards is not None and shards > len(plan):
        raise ArgumentError(f"{preset}: {ARGUMENT_PLACEHOLDER}: the tiny model has "
                            f"{len(plan)} tensors, so at most {len(plan)} shards",
                            argument="shards", value=shards)
    return raw, plan


def _encoded(spec: TensorSpec, seed: int, block: tuple[int, int], scale_fmt: str | None,
             pending_scales: dict[str, np.ndarray], progress: Progress) -> Iterator[bytes]:
    """The stored bytes of one tensor, chunk by chunk: memory stays at a chunk's worth
    whatever the width. An FP8 weight's scale rows are kept for when the scale is written;
    `scale_fmt` "ue8m0" (V3.1, V3.2) makes them powers of two."""
    scales = []
    for chunk in value_chunks(spec, seed, block[0]):
        if spec.scale_name:
            chunk, scale = quantize(chunk, block, scale_fmt=scale_fmt)
            scales.append(scale)
        else:
            chunk = chunk.astype(DTYPES[spec.dtype].numpy)
        data = np.ascontiguousarray(chunk).reshape(-1).view(np.uint8)
        progress.advance(data.size)
        yield memoryview(data)
    if spec.scale_name:
        pending_scales[spec.scale_name] = np.concatenate(scales)


def make_tiny(dst: str | Path, preset: str = "v3", *, fp8: bool = False, shards: int = 2,
              seed: int = 0, real_widths: bool = False, overrides: dict[str, Any] | None = None,
              overwrite: bool = False, progress: Progress | None = None,
              expert_dtype: str | None = None) -> TinyCheckpoint:
    """Write a small, real, deterministic checkpoint of `preset` into `dst` (HF layout;
    DeepSeek-V4: its Hub names, `families/deepseek_v4/tiny`).

    Args:
        dst: output directory (must be empty unless `overwrite`).
        preset: what to shrink: a preset (`ckpt_tools.presets.all_presets()`), a
            config.json (any recognised layout) or a checkpoint directory.
        fp8: block-FP8 weights with `weight_scale_inv`, as V3's release (V4: FP8 with E8M0
            block scales).
        shards: number of shard files.
        seed: values depend only on the seed and each tensor's name.
        real_widths: keep the source's widths (hidden, heads, ranks, vocab); only layer and
            expert counts shrink. Generated in float32 chunks: memory stays bounded
            (`tiny_plan(...)[1].total_bytes` says how much is written). Not for V4.
        overrides: config fields to set, e.g. `{"n_routed_experts": 32}`.
        overwrite: replace the contents of a non-empty `dst`.
        progress: bytes written.
        expert_dtype: V4 only: how routed experts are stored (see `families/deepseek_v4/tiny`).

    Raises:
        ConfigError: not a preset, config or checkpoint, or overrides that make an invalid
            config.
        ArgumentError: V4 options on another model and the reverse, `expert_dtype` without
            `fp8`, an override key that is a near miss of a known one, more shards than
            tensors.
        OutputError: `dst` cannot be used.
    """
    tiny_plan(preset, fp8=fp8, real_widths=real_widths, overrides=overrides,
              expert_dtype=expert_dtype, shards=shards)  # every option, before any write
    family = family_of(resolve_config(preset, lenient=True).config)
    if family.has_hook("make_tiny"):  # a family with a writer of its own formats
        return family.hook("make_tiny")(dst, preset, fp8=fp8, shards=shards, seed=seed,
                                        overrides=overrides, overwrite=overwrite,
                                        expert_dtype=expert_dtype, progress=progress)
    shrunk: list[Shrunk] = []
    raw, plan = tiny_plan(preset, fp8=fp8, real_widths=real_widths, overrides=overrides,
                          shrunk=shrunk)
    config = plan.config
    qc = config.quantization_config
    scale_fmt = qc.scale_fmt if qc else None  # ue8m0 releases: power-of-two scales
    progress = or_null(progress)
    progress.start(plan.total_bytes, f"make-tiny {preset}")
    groups = write_tiny(
        dst, plan, shards,
        lambda s, pending: _encoded(s, seed, plan.block, scale_fmt, pending, progress), raw,
        overwrite=overwrite, progress=progress, side_files={
            "generation_config.json": {"bos_token_id": config.bos_token_id,
                                       "eos_token_id": config.eos_token_id, "do_sample": True,
                                       "temperature": 0.6},
            "tokenizer_config.json": {"model_max_length": config.max_position_embeddings,
                                      "tokenizer_class": "LlamaTokenizerFast"}})
    progress.finish()
    return TinyCheckpoint(path=Path(dst), preset=preset, layout=plan.layout, shards=groups,
                          tensors=len(plan), total_bytes=plan.total_bytes,
                          shrunk={x.field: (x.source, x.tiny) for x in shrunk})


__all__ = ["make_tiny", "tiny_plan", "tiny_config", "tensor_value", "value_chunks",
           "TinyCheckpoint", "Shrunk", "BF16"]
