"""Config fields of two architectures side by side: what changed, grouped by concern
(attention, MoE, RoPE, ...), each change with what it means for the model. Used by `diff`
(V2/V3) and `families/deepseek_v4/diff`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..results import Result

Concern = Literal["model", "attention", "moe", "rope", "vocabulary", "quantization", "other"]
CONCERN_TITLES: dict[str, str] = {
    "model": "Model class, width and depth",
    "attention": "Attention / MLA",
    "moe": "MoE and routing",
    "rope": "RoPE / YaRN",
    "vocabulary": "Vocabulary",
    "quantization": "Quantization",
    "other": "Other",
}
_SHORT = {"model": "model", "attention": "MLA", "moe": "MoE", "rope": "RoPE",
          "vocabulary": "vocabulary", "quantization": "quantization", "other": "other"}
# Field -> concern, in display order; dotted keys are members of nested configs.
_CONCERN_OF: dict[str, Concern] = {
    **dict.fromkeys(["model_type", "architectures", "hidden_size", "intermediate_size",
                     "num_hidden_layers", "num_nextn_predict_layers", "hidden_act",
                     "rms_norm_eps"], "model"),
    **dict.fromkeys(["num_attention_heads", "num_key_value_heads", "q_lora_rank",
                     "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                     "attention_bias", "attention_dropout", "index_n_heads", "index_head_dim",
                     "index_topk"], "attention"),
    **dict.fromkeys(["n_routed_experts", "n_shared_experts", "num_experts_per_tok",
                     "moe_intermediate_size", "first_k_dense_replace", "moe_layer_freq",
                     "scoring_func", "topk_method", "n_group", "topk_group", "norm_topk_prob",
                     "routed_scaling_factor", "aux_loss_alpha", "seq_aux", "ep_size"], "moe"),
    **dict.fromkeys(["max_position_embeddings", "rope_theta", "rope_scaling"], "rope"),
    **dict.fromkeys(["vocab_size", "bos_token_id", "eos_token_id", "pad_token_id",
                     "tie_word_embeddings"], "vocabulary"),
    **dict.fromkeys(["quantization_config", "torch_dtype", "expert_dtype"], "quantization"),
}
# Fields that change neither the tensors nor the forward pass: training-only knobs,
# tooling metadata, storage format, token ids.
_NOT_ARCHITECTURE = frozenset({
    "aux_loss_alpha", "seq_aux", "pretraining_tp", "transformers_version", "_name_or_path",
    "use_cache", "initializer_range", "attention_dropout", "torch_dtype", "ep_size", "auto_map",
    "quantization_config", "bos_token_id", "eos_token_id", "pad_token_id", "expert_dtype",
})
_TOPK_METHOD = {
    "greedy": "plain top-k over all experts",
    "group_limited_greedy": "group-limited routing: groups ranked by their best expert, "
                            "only topk_group groups eligible",
    "noaux_tc": "aux-loss-free balancing: bias used for expert selection only; groups "
                "ranked by their top-2 sum",
}
_SCORING = {"softmax": "softmax over all experts", "sigmoid": "independent sigmoid per expert"}
_TRAINING_ONLY = "training-only auxiliary balance loss; no effect on inference"
_MEANINGS: dict[str, str] = {
    "model_type": "model class (transformers deepseek_v2 / deepseek_v3 / deepseek_v32 code)",
    "architectures": "model class (transformers deepseek_v2 / deepseek_v3 / deepseek_v32 code)",
    "index_n_heads": "DSA lightning-indexer heads; their ReLU scores, weighted per token, "
                     "are summed into one score per key",
    "index_head_dim": "DSA indexer query/key width; one such key per token and layer is "
                      "cached besides MLA's latent",
    "index_topk": "DSA: each query attends to at most this many earlier tokens (the "
                  "indexer's top-k); shorter sequences compute exactly dense MLA",
    "hidden_size": "model width",
    "intermediate_size": "width of the dense (first-k) MLPs",
    "num_hidden_layers": "decoder layers of the main model (MTP not counted)",
    "num_nextn_predict_layers": "multi-token-prediction modules stored after the main layers",
    "num_attention_heads": "attention heads (MLA: as many KV heads)",
    "kv_lora_rank": "compressed KV latent: what MLA caches per token",
    "qk_rope_head_dim": "decoupled RoPE key, cached per token and shared by all heads",
    "qk_nope_head_dim": "per-head query/key width without RoPE",
    "v_head_dim": "per-head value width",
    "n_routed_experts": "routed experts per MoE layer",
    "n_shared_experts": "always-on experts, one fused MLP of n_shared x moe_intermediate_size",
    "num_experts_per_tok": "routed experts per token (top-k)",
    "moe_intermediate_size": "width of one routed expert",
    "first_k_dense_replace": "leading layers with a dense MLP instead of MoE",
    "moe_layer_freq": "every k-th layer after the dense ones is MoE",
    "n_group": "expert groups; a token may only use experts of topk_group of them",
    "topk_group": "groups a token may route to (limits devices per token)",
    "routed_scaling_factor": "multiplier on the routed experts' weights (shared experts unscaled)",
    "aux_loss_alpha": _TRAINING_ONLY,
    "seq_aux": _TRAINING_ONLY,
    "ep_size": "expert-parallel size of the training run; no effect on the weights",
    "max_position_embeddings": "longest supported context",
    "rope_theta": "RoPE base",
    "rope_scaling.factor": "YaRN context extension factor",
    "rope_scaling.original_max_position_embeddings": "context length before YaRN extension",
    "rope_scaling.mscale_all_dim": "enters the softmax scale: "
                                   "x (1 + 0.1 mscale_all_dim ln factor)^2",
    "rope_scaling.mscale": "YaRN cos/sin magnitude; cancels while equal to mscale_all_dim",
    "vocab_size": "rows of embed_tokens and lm_head",
    "bos_token_id": "special token ids (another tokenizer)",
    "eos_token_id": "special token ids (another tokenizer)",
    "quantization_config.scale_fmt": "ue8m0: every block scale is a power of two",
    "quantization_config.weight_block_size": "rows x columns covered by one scale",
    "torch_dtype": "dtype of the unquantised tensors",
    "expert_dtype": "storage of the routed experts (fp4: MXFP4 codes + E8M0 scales, fp8: "
                    "128x128 blocks)",
    "pretraining_tp": "training-only tensor-parallel degree; no effect on inference",
    "transformers_version": "tooling metadata; no effect on the weights",
    "auto_map": "remote-code classes",
    "rms_norm_eps": "RMSNorm epsilon",
}


class FieldChange(Result):
    field: str = Field(description="config.json key; nested keys dotted (rope_scaling.factor)")
    concern: Concern
    status: Literal["changed", "added", "removed"]
    a: Any = None
    b: Any = None
    architectural: bool = Field(description="False for training-only, metadata and storage fields")
    meaning: str | None = None


# -- config fields ---------------------------------------------------------------------------
def _flat(config) -> dict[str, Any]:
    """Effective values (defaults filled, unknown keys kept), nested configs dotted; under
    the common field names, so a family that spells them its own way (LongCat-Flash's
    num_layers, moe_topk) compares field for field."""
    out: dict[str, Any] = {}
    for key, value in config.model_dump(mode="json").items():
        if isinstance(value, dict) and key in ("rope_scaling", "quantization_config", "auto_map"):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _meaning(field: str, a: Any, b: Any) -> str | None:
    if field == "topk_method":
        return _TOPK_METHOD.get(b if b is not None else a)
    if field == "scoring_func" and a in _SCORING and b in _SCORING:
        return f"expert scores: {_SCORING[a]} -> {_SCORING[b]}"
    if field == "norm_topk_prob":
        return ("top-k weights renormalised to sum 1" if b else
                "top-k weights used as scored (no renormalisation)")
    if field == "q_lora_rank":
        if a is None or b is None:
            return (f"queries through a rank-{b} latent (q_a_proj, q_a_layernorm, q_b_proj) "
                    f"instead of one q_proj" if b is not None else
                    "one q_proj instead of a compressed query latent")
        return "query compression rank"
    if field == "quantization_config" or field.startswith("quantization_config."):
        if field == "quantization_config" or a is None or b is None:
            return (_MEANINGS.get(field) or
                    "weight storage: FP8 e4m3 + one F32 weight_scale_inv per block vs BF16 "
                    "(storage, not architecture)")
    if field.startswith("auto_map."):
        return _MEANINGS["auto_map"]
    return _MEANINGS.get(field)


def _concern(field: str) -> Concern:
    return _CONCERN_OF.get(field.split(".")[0], "other")


def config_changes(config_a, config_b) -> list[FieldChange]:
    """Changed, added and removed config fields, grouped by concern (display order)."""
    fa, fb = _flat(config_a), _flat(config_b)
    # a whole nested config present on one side only is one change, not one per member
    for key in ("quantization_config", "rope_scaling"):
        in_a = any(k.startswith(key + ".") for k in fa)
        in_b = any(k.startswith(key + ".") for k in fb)
        if in_a != in_b:
            for flat, raw in ((fa, config_a), (fb, config_b)):
                for k in [k for k in flat if k.startswith(key + ".")]:
                    del flat[k]
                value = getattr(raw, key, None)
                flat[key] = value.model_dump(mode="json", exclude_none=True) if value else None
    order = {f: i for i, f in enumerate(_CONCERN_OF)}
    concern_order = {c: i for i, c in enumerate(CONCERN_TITLES)}
    changes = []
    for key in set(fa) | set(fb):
        a, b = fa.get(key), fb.get(key)
        if a == b:
            continue
        status = "added" if a is None else "removed" if b is None else "changed"
        changes.append(FieldChange(
            field=key, concern=_concern(key), status=status, a=a, b=b,
            architectural=key.split(".")[0] not in _NOT_ARCHITECTURE, meaning=_meaning(key, a, b)))
    changes.sort(key=lambda c: (concern_order[c.concern], order.get(c.field.split(".")[0], 999),
                                c.field))
    return changes
