"""Mistral 4 (`mistral4`): DeepSeek-V3's rows with the routed experts fused per layer and no
router bias.

transformers' `modular_mistral4.py` takes `DeepseekV3Attention` (MLA), `DeepseekV3Experts`
and `DeepseekV3MoE`; the experts are stored as two tensors per layer holding every expert,
`mlp.experts.gate_up_proj` [E, 2I, H] (gate rows then up rows of each expert) and
`mlp.experts.down_proj` [E, H, I] (5.24 has no conversion entry from per-expert names). Its
router (`Mistral4TopkRouter`) has no `e_score_correction_bias`. What differs in the forward
(softmax router with V3's group ranking and scaling, Llama-4 query scaling) is read off the
config (`Mistral4Config` below) by the shared NumPy decoder (docs/derived_families.md).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import model_serializer, model_validator

from ..configs.defaults import HF_COMMON
from ..configs.models import DeepseekConfigBase
from . import deepseek_v3
from .base import Family, derive, stacked_expert_rows

LOADER = "transformers Mistral4Config"
# transformers' Mistral4Config (models/mistral4/configuration_mistral4.py, docstring checkpoint
# mistralai/Mistral-Small-4-119B-2603). Absent rope parameters are YaRN 128 over 8192 with
# Llama-4 query scaling (beta 0.1); its router (Mistral4TopkRouter) is softmax, groups ranked
# by their two best scores, renormalised, then scaled, and has no score-correction bias.
CLASS_DEFAULTS: dict[str, Any] = {
    **HF_COMMON,
    "vocab_size": 131072, "hidden_size": 4096, "intermediate_size": 12288,
    "moe_intermediate_size": 2048, "num_hidden_layers": 36, "num_attention_heads": 32,
    "num_key_value_heads": 32, "n_shared_experts": 1, "n_routed_experts": 128,
    "num_experts_per_tok": 4, "routed_scaling_factor": 1.0, "n_group": 1, "topk_group": 1,
    "norm_topk_prob": True, "first_k_dense_replace": 0, "q_lora_rank": 1024,
    "kv_lora_rank": 256, "qk_nope_head_dim": 64, "max_position_embeddings": 1048576,
    "bos_token_id": 1, "eos_token_id": 2,
    "rope_scaling": {"type": "yarn", "factor": 128.0, "original_max_position_embeddings": 8192,
                     "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "llama_4_scaling_beta": 0.1},
}
# no topk_method / scoring_func in Mistral4Config: its router is softmax with V3's group
# ranking (Mistral4Config says how); no MTP module
IMPLIED: dict[str, Any] = {"topk_method": "group_limited_greedy", "scoring_func": "softmax",
                           "moe_layer_freq": 1}


class SoftmaxTop2Router:
    """Mistral4TopkRouter's rules for the shared NumPy router: groups ranked by the sum of
    their two best scores, routed_scaling_factor applied after renormalising (a mixin of
    the config models of the families that route so)."""

    @property
    def groups_ranked_by_top2(self) -> bool:
        return True

    @property
    def scales_renormalised_weights(self) -> bool:
        return True


class Mistral4Config(SoftmaxTop2Router, DeepseekConfigBase):
    """Mistral 4 (`model_type: mistral4`): DeepSeek-V3's MLA and experts (fused per layer in
    transformers' names), a softmax router with V3's group ranking and scaling and no bias,
    and Llama-4 query scaling by position (docs/derived_families.md)."""

    model_type: Literal["mistral4"]
    default_loader: ClassVar[str] = LOADER

    @model_validator(mode="before")
    @classmethod
    def _router_is_fixed_by_the_model(cls, data: Any) -> Any:
        # Mistral4TopkRouter reads neither key; a file's value would describe another router
        if not isinstance(data, dict):
            return data
        data = {**data, "topk_method": "group_limited_greedy", "scoring_func": "softmax"}
        rs = data.get("rope_scaling")
        if isinstance(rs, dict) and "partial_rotary_factor" in rs:
            # transformers' default is qk_rope / (qk_nope + qk_rope); another value rotates a
            # width that is not qk_rope_head_dim (its forward fails), so it is derived here
            rs = dict(rs)
            factor = rs.pop("partial_rotary_factor")
            rope, nope = data.get("qk_rope_head_dim"), data.get("qk_nope_head_dim")
            if isinstance(rope, int) and isinstance(nope, int) and rope + nope and (
                    abs(factor * (rope + nope) - rope) > 1e-6):
                raise ValueError(f"rope_parameters: partial_rotary_factor {factor} rotates "
                                 f"{factor * (rope + nope):g} dims of each head, but "
                                 f"qk_rope_head_dim is {rope}")
            data["rope_scaling"] = rs
        return data

    @model_serializer(mode="wrap")
    def _spell_partial_rotary_factor(self, handler):
        # written out as transformers does: its config drops the default when rope
        # parameters come from a file, and then rotates the whole head
        data = handler(self)
        if isinstance(data.get("rope_scaling"), dict):
            data["rope_scaling"]["partial_rotary_factor"] = (
                self.qk_rope_head_dim / self.qk_head_dim)
        return data

    @property
    def routing_method(self) -> str:
        return "Mistral4TopkRouter (reads no topk_method)"

    @property
    def router_kind(self) -> str:
        # Mistral4TopkRouter reads neither topk_method nor scoring_func (the forced values
        # above only place it in the V2/V3 vocabulary): softmax over experts, groups by the
        # sum of their two best scores (V3's rule, not group_limited_greedy's best one),
        # no score-correction bias, then norm_topk_prob and routed_scaling_factor
        norm = "renormalised, " if self.norm_topk_prob else ""
        return f"softmax top-k, groups ranked by top-2 sum, {norm}no bias (Mistral4TopkRouter)"


# one tensor per layer for all routed experts, in the per-layer ("router") scope
FUSED_EXPERTS = stacked_expert_rows("router")

ROWS = derive(deepseek_v3.ROWS, drop=("gate_bias", "expert.w1", "expert.w3", "expert.w2"),
              add_after={"gate": FUSED_EXPERTS})

MISTRAL4 = Family(
    name="mistral4", title="Mistral 4", parent="deepseek_v3", model_types=("mistral4",),
    architectures=("Mistral4ForCausalLM", "Mistral4Model"), rows=ROWS,
    scopes=deepseek_v3.DEEPSEEK_V3.scopes, layouts=("bf16",), formats=("bf16",),
    router=("softmax, groups ranked by their top-2 sum, renormalised (norm_topk_prob), scaled; "
            "no bias"),
    attention="mla", presets=("mistral-4",),
    no_mp_layout=("its routed experts are fused tensors [E, 2I, H] / [E, H, I] and its router "
                  "is not DeepSeek's Gate; DeepSeek's convert.py and model.py have neither"),
    no_block_fp8=("transformers' Mistral 4 has no block-FP8 names for its fused expert tensors "
                  "(3-D, no 128x128 weight_scale_inv); Mistral's FP8 weights are in its own "
                  "consolidated format, which ckpt_tools does not read"),
    config_model=Mistral4Config, loader=LOADER, class_defaults=CLASS_DEFAULTS,
    implied_defaults=IMPLIED)
