"""Mistral 4 (`mistral4`): DeepSeek-V3's rows with the routed experts fused per layer and no
router bias.

transformers' `modular_mistral4.py` takes `DeepseekV3Attention` (MLA), `DeepseekV3Experts`
and `DeepseekV3MoE`; the experts are stored as two tensors per layer holding every expert,
`mlp.experts.gate_up_proj` [E, 2I, H] (gate rows then up rows of each expert) and
`mlp.experts.down_proj` [E, H, I] (5.24 has no conversion entry from per-expert names). Its
router (`Mistral4TopkRouter`) has no `e_score_correction_bias`. What differs in the forward
(softmax router with V3's group ranking and scaling, Llama-4 query scaling) is read off the
config (`config.Mistral4Config`) by the shared NumPy decoder (docs/derived_families.md).
"""

from __future__ import annotations

from . import deepseek_v3
from .base import Family, Row, derive

FUSED_EXPERTS: tuple[Row, ...] = (
    # one tensor per layer for all routed experts; per-layer scope, component routed_expert
    # (so totals and activated counts take k of E of it)
    Row("experts.gate_up", "router", "mlp.experts.gate_up_proj",
        lambda c, b: (c.n_routed_experts, 2 * c.moe_intermediate_size, c.hidden_size),
        "routed_expert"),
    Row("experts.down", "router", "mlp.experts.down_proj",
        lambda c, b: (c.n_routed_experts, c.hidden_size, c.moe_intermediate_size),
        "routed_expert"),
)

ROWS = derive(deepseek_v3.ROWS, drop=("gate_bias", "expert.w1", "expert.w3", "expert.w2"),
              add_after={"gate": FUSED_EXPERTS})

MISTRAL4 = Family(
    name="mistral4", title="Mistral 4", parent="deepseek_v3", model_types=("mistral4",),
    architectures=("Mistral4ForCausalLM", "Mistral4Model"), rows=ROWS,
    scopes=deepseek_v3.DEEPSEEK_V3.scopes, layouts=("bf16",), formats=("bf16",),
    router="softmax, groups ranked by their top-2 sum, renormalised (norm_topk_prob), scaled; no bias",
    attention="mla", presets=("mistral-4",),
    no_mp_layout=("its routed experts are fused tensors [E, 2I, H] / [E, H, I] and its router "
                  "is not DeepSeek's Gate; DeepSeek's convert.py and model.py have neither"),
    no_block_fp8=("transformers' Mistral 4 has no block-FP8 names for its fused expert tensors "
                  "(3-D, no 128x128 weight_scale_inv); Mistral's FP8 weights are in its own "
                  "consolidated format, which ckpt_tools does not read"))
