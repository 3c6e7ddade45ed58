"""GLM-5 (`glm_moe_dsa`): DeepSeek-V3.2's rows, the indexer's only on "full" layers.

transformers' `modular_glm_moe_dsa.py` subclasses `DeepseekV32Config` and V3.2's indexer and
decoder layer; a layer whose `indexer_types` entry is "shared" has no indexer tensors and
reuses the previous full layer's selection. The indexer rotates adjacent pairs (V3.2:
halves). Both are read off the config (`GlmMoeDsaConfig` below) by the shared NumPy decoder.
The MTP layer (stored as layer 78, V3's MTP tensors) runs its own indexer
(docs/derived_families.md).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ..configs.defaults import CLASS_DEFAULTS as DEEPSEEK_CLASS_DEFAULTS
from ..configs.defaults import IMPLIED as DEEPSEEK_IMPLIED
from ..configs.models import DeepseekV32Config
from . import deepseek_v32
from .base import Block, Family, derive

LOADER = "transformers GlmMoeDsaConfig"
# transformers' GlmMoeDsaConfig(DeepseekV32Config) (models/glm_moe_dsa/, the GLM-5 shape):
# V3.2's keys with GLM's values; which layers run their own indexer is `indexer_types`
# (else `index_topk_pattern`, else `index_topk_freq` / `index_skip_topk_offset`: all "full")
CLASS_DEFAULTS: dict[str, Any] = {
    **DEEPSEEK_CLASS_DEFAULTS["transformers DeepseekV32Config"],
    "vocab_size": 154880, "hidden_size": 6144, "intermediate_size": 12288,
    "num_hidden_layers": 78, "num_attention_heads": 64, "num_key_value_heads": 64,
    "q_lora_rank": 2048, "v_head_dim": 256, "qk_nope_head_dim": 192, "n_group": 1,
    "topk_group": 1, "max_position_embeddings": 202752, "rms_norm_eps": 1e-5,
    "index_n_heads": 32,
}
IMPLIED = DEEPSEEK_IMPLIED["transformers DeepseekV32Config"]


class GlmMoeDsaConfig(DeepseekV32Config):
    """GLM-5 (`model_type: glm_moe_dsa`): DeepSeek-V3.2 whose indexer runs only on "full"
    layers (`indexer_types`; "shared" layers reuse the previous full layer's selection) and
    rotates adjacent pairs (docs/derived_families.md)."""

    model_type: Literal["glm_moe_dsa"]  # type: ignore[assignment]
    default_loader: ClassVar[str] = LOADER
    indexer_types: list[Literal["full", "shared"]] | None = None
    index_topk_pattern: str | list[str] | None = None
    index_topk_freq: int = Field(1, ge=1)
    index_skip_topk_offset: int = 2

    @property
    def indexer_rope_interleaved(self) -> bool:
        return True

    @property
    def layer_indexers(self) -> list[str]:
        """transformers' GlmMoeDsaConfig.__post_init__: the list, else the pattern, else the
        freq/offset schedule (every layer "full" by default)."""
        if self.indexer_types is not None:
            return list(self.indexer_types)
        if self.index_topk_pattern is not None:
            pattern = self.index_topk_pattern
            return ([{"F": "full", "S": "shared"}[c] for c in pattern]
                    if isinstance(pattern, str) else list(pattern))
        freq, offset = self.index_topk_freq, self.index_skip_topk_offset
        return ["full" if max(i - offset + 1, 0) % freq == 0 else "shared"
                for i in range(self.num_hidden_layers)]

    def indexer_full(self, layer: int) -> bool:
        return layer >= self.num_hidden_layers or self.layer_indexers[layer] == "full"

    @model_validator(mode="after")
    def _indexer_pattern(self):
        kinds = self.layer_indexers
        if len(kinds) != self.num_hidden_layers or set(kinds) - {"full", "shared"}:
            raise ValueError(f"indexer_types: needs 'full' or 'shared' for each of the "
                             f"{self.num_hidden_layers} layers")
        if kinds and kinds[0] != "full":
            raise ValueError("indexer_types: layer 0 is 'shared', but no earlier layer runs "
                             "an indexer whose selection it could reuse")
        return self



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
                  "interleaved indexer RoPE, eps 1e-5)"),
    config_model=GlmMoeDsaConfig, loader=LOADER, class_defaults=CLASS_DEFAULTS,
    implied_defaults=IMPLIED)
