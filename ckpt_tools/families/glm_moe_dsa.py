"""GLM-5 (`glm_moe_dsa`): DeepSeek-V3.2's rows, the indexer's only on "full" layers.

transformers' `modular_glm_moe_dsa.py` subclasses `DeepseekV32Config` and V3.2's indexer and
decoder layer; a layer whose `indexer_types` entry is "shared" has no indexer tensors and
reuses the previous full layer's selection. The indexer rotates adjacent pairs (V3.2:
halves). Both are read off the config (`config.GlmMoeDsaConfig`) by the shared NumPy decoder.
The MTP layer (stored as layer 78, V3's MTP tensors) runs its own indexer
(docs/derived_families.md).
"""

from __future__ import annotations

from . import deepseek_v32
from .base import Block, Family, derive


def _full_indexer(c, b: Block) -> bool:
    return c.indexer_full(b.layer)


ROWS = derive(deepseek_v32.ROWS, change={
    r.role: {"when": _full_indexer} for r in deepseek_v32.INDEXER})

GLM_MOE_DSA = Family(
    name="glm_moe_dsa", title="GLM-5", parent="deepseek_v32", model_types=("glm_moe_dsa",),
    architectures=("GlmMoeDsaForCausalLM", "GlmMoeDsaModel"), rows=ROWS,
    scopes=deepseek_v32.DEEPSEEK_V32.scopes, layouts=("bf16", "fp8"),
    # zai-org/GLM-5-FP8 is block FP8 (its quantization_config not read: docs, "Uncertain")
    formats=("bf16", "fp8-block-f32"), router=deepseek_v32.DEEPSEEK_V32.router,
    attention="mla+dsa (indexer on full layers)", presets=("glm-5",),
    no_mp_layout=("DeepSeek's inference code runs an indexer in every layer with half-split "
                  "RoPE and fixes RMSNorm eps at 1e-6 (GLM-5: shared-indexer layers, "
                  "interleaved indexer RoPE, eps 1e-5)"))
