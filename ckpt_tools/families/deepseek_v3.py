"""DeepSeek-V3 (V3, R1, V3.1, and the derivatives on its code: Kimi-K2, Moonlight).

V3's tensors are V2's: the aux-loss-free router's `e_score_correction_bias` row, already in
V2's table, exists when `topk_method` is `noaux_tc` (a config field, not a family test).
"""

from __future__ import annotations

from ..configs.models import DeepseekV3Config
from . import deepseek_v2
from .base import Family, Wrapper

ROWS = deepseek_v2.ROWS

DEEPSEEK_V3 = Family(
    name="deepseek_v3", title="DeepSeek-V3", parent="deepseek_v2", model_types=("deepseek_v3",),
    architectures=("DeepseekV3ForCausalLM", "DeepseekV3Model"), rows=ROWS,
    scopes=deepseek_v2.SCOPES, layouts=("bf16", "fp8"),
    formats=("bf16", "fp8-block-f32", "fp8-block-ue8m0"),
    router="sigmoid, group-limited, aux-loss-free bias", attention="mla",
    presets=("v3", "r1", "r1-0528", "v3.1", "kimi-k2", "moonlight"), config_model=DeepseekV3Config,
    # Kimi-VL's configuration_kimi_vl.py (https://huggingface.co/moonshotai/Kimi-VL-A3B-Instruct)
    wrappers={"kimi_vl": Wrapper(
        "transformers DeepseekV3Config", "its KimiVLConfig builds DeepseekV3Config(**text_config)",
        ("KimiVLForConditionalGeneration", "KimiVLConfig"))})
