"""GLM-4.7-Flash (`glm4_moe_lite`): DeepSeek-V3's tensors under GLM's defaults.

transformers' `modular_glm4_moe_lite.py` takes `DeepseekV3Attention` unchanged and GLM-4-MoE's
router, experts and shared expert, which are V3's `noaux_tc` MoE tensor for tensor (sigmoid
scores, the `e_score_correction_bias` buffer, group top-2 ranking). So its rows are V3's; the
differences are config defaults and the dense pattern (`mlp_layer_types`), read by
`config.Glm4MoeLiteConfig`. Its MTP layer is stored as layer 47 with V3's MTP tensors
(docs/derived_families.md). The forward is V3's (the default decoder hook).
"""

from __future__ import annotations

from . import deepseek_v3
from .base import Family

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
                  "would load into another model"))
