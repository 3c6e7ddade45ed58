"""GLM-4.7-Flash (`glm4_moe_lite`): DeepSeek-V3's tensors under GLM's defaults.

transformers' `modular_glm4_moe_lite.py` takes `DeepseekV3Attention` unchanged and GLM-4-MoE's
router, experts and shared expert, which are V3's `noaux_tc` MoE tensor for tensor (sigmoid
scores, the `e_score_correction_bias` buffer, group top-2 ranking). So its rows are V3's; the
differences are config defaults and the dense pattern (`mlp_layer_types`), read by
`Glm4MoeLiteConfig` below. Its MTP layer is stored as layer 47 with V3's MTP tensors
(docs/derived_families.md). The forward is V3's (the default decoder hook).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import model_validator

from ..configs.defaults import HF_COMMON
from ..configs.models import DeepseekV3Config
from . import deepseek_v3
from .base import Family

LOADER = "transformers Glm4MoeLiteConfig"

# transformers' Glm4MoeLiteConfig (models/glm4_moe_lite/configuration_glm4_moe_lite.py): the
# GLM-4.7-Flash shape. It has no first_k_dense_replace, moe_layer_freq, topk_method or
# scoring_func: the dense/MoE pattern is `mlp_layer_types` (layer 0 dense by default) and its
# router (Glm4MoeTopkRouter) is V3's noaux_tc; no num_nextn_predict_layers either (a file's
# value is kept as an attribute; transformers ignores the MTP layer on load).
CLASS_DEFAULTS: dict[str, Any] = {
    **HF_COMMON,
    "vocab_size": 154880, "hidden_size": 2048, "intermediate_size": 10240,
    "moe_intermediate_size": 1536, "num_hidden_layers": 47, "num_attention_heads": 20,
    "num_key_value_heads": 20, "n_shared_experts": 1, "n_routed_experts": 64,
    "num_experts_per_tok": 4, "routed_scaling_factor": 1.8, "n_group": 1, "topk_group": 1,
    "norm_topk_prob": True, "q_lora_rank": 768, "qk_nope_head_dim": 192, "v_head_dim": 256,
    "rms_norm_eps": 1e-5, "max_position_embeddings": 202752, "bos_token_id": 0,
    "eos_token_id": 1,
}
IMPLIED: dict[str, Any] = {"topk_method": "noaux_tc", "scoring_func": "sigmoid",
                           "moe_layer_freq": 1, "num_nextn_predict_layers": 0}


class Glm4MoeLiteConfig(DeepseekV3Config):
    """GLM-4.7-Flash (`model_type: glm4_moe_lite`): DeepSeek-V3's MLA and noaux_tc MoE read by
    transformers' Glm4MoeLiteConfig, whose dense/MoE pattern is `mlp_layer_types` (default:
    layer 0 dense, then MoE), not `first_k_dense_replace` (docs/derived_families.md)."""

    model_type: Literal["glm4_moe_lite"]  # type: ignore[assignment]
    default_loader: ClassVar[str] = LOADER
    mlp_layer_types: list[Literal["dense", "sparse"]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _dense_layers_from_pattern(cls, data: Any) -> Any:
        # transformers ignores first_k_dense_replace here; the pattern (or its default)
        # decides, so the plan's dense prefix is read off it
        if isinstance(data, dict):
            types = data.get("mlp_layer_types")
            dense = 1 if types is None else next(
                (i for i, t in enumerate(types) if t != "dense"), len(types))
            data = {**data, "first_k_dense_replace": dense}
        return data

    @model_validator(mode="after")
    def _pattern_is_a_dense_prefix(self):
        types = self.mlp_layer_types
        if types is not None:
            want = ["dense"] * self.first_k_dense_replace + ["sparse"] * (
                self.num_hidden_layers - self.first_k_dense_replace)
            if list(types) != want:
                raise ValueError(f"mlp_layer_types: {len(types)} entries; ckpt_tools reads "
                                 f"{self.num_hidden_layers} layers of dense ones then sparse ones")
        return self



ROWS = deepseek_v3.ROWS

GLM4_MOE_LITE = Family(
    name="glm4_moe_lite", title="GLM-4.7-Flash", parent="deepseek_v3",
    model_types=("glm4_moe_lite",), architectures=("Glm4MoeLiteForCausalLM", "Glm4MoeLiteModel"),
    rows=ROWS, scopes=deepseek_v3.DEEPSEEK_V3.scopes, layouts=("bf16", "fp8"),
    # zai-org releases it in BF16; DeepSeek-style block FP8 is what ckpt writes and reads
    formats=("bf16", "fp8-block-f32"), router=deepseek_v3.DEEPSEEK_V3.router, attention="mla",
    presets=("glm-4.7-flash",),
    no_mp_layout=("DeepSeek's inference code builds the router bias only at dim 7168 and fixes "
                  "RMSNorm eps at 1e-6 (GLM-4.7-Flash: hidden 2048, eps 1e-5), so its rank files "
                  "would load into another model"),
    config_model=Glm4MoeLiteConfig, loader=LOADER, class_defaults=CLASS_DEFAULTS,
    implied_defaults=IMPLIED)
