"""Mistral Large 4 (`mistral_large4`, text model `mistral_large4_text`): GLM-5's rows without
q compression, with per-layer attention shapes, learned softmax scaling and fused experts.

transformers' `modular_mistral_large4.py` builds `MistralLarge4TextConfig(GlmMoeDsaConfig)`
and a Mistral-3-style wrapper (`MistralLarge4Config`: Pixtral vision tower, projector) that
keeps the language model under `model.language_model.` and `lm_head` at the top. What
differs from GLM-5, per layer:
- `q_proj` (no `q_lora_rank`); `softmax_scaling.{scale,bias}` [heads] multiply each query by
  `scale * log(pos + 1) + bias` (attention and indexer alike);
- NoPE layers (`no_rope_layers[L] == 0`, every 4th by default) fold the rotary width into
  the non-rotary part: `kv_a_proj_with_mqa` [r_kv, H], `kv_b_proj` [n(dn+dr+dv), r_kv];
- KV-sharing layers (`kv_source_layers[L] < L`) have no `kv_a_proj_with_mqa` /
  `kv_a_layernorm` and attend to their source layer's latent KV;
- the indexer's query reads the hidden state (`q_input_norm` LayerNorm, `wq_b` [J X, H]);
- one learned `rotary_emb.alpha` [dr/2] (LeRoPE: inverse frequencies x exp(alpha));
- Mistral 4's router with float32 logits and weights (kept F32), renormalised always, no
  bias; routed experts fused per layer; logits soft-capped (`final_logit_softcapping`).
The forward is `reference/mistral_large4.py` (docs/derived_families.md).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from . import glm_moe_dsa
from .mistral4 import SoftmaxTop2Router
from .base import Block, Family, Row, Wrapper, derive, stacked_expert_rows

LOADER = "transformers MistralLarge4TextConfig"
WRAPPER_PREFIX = "model.language_model."  # transformers 5's multimodal wrappers (Mistral 3)
# transformers' MistralLarge4TextConfig (models/mistral_large4/configuration_mistral_large4.py,
# docstring checkpoint mistralai/Mistral-Large-4-1T-A52B): GLM-5's keys with these values;
# absent rope parameters are YaRN 2048 over 512 with attention_factor 1 (no magnitude scaling)
CLASS_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in glm_moe_dsa.CLASS_DEFAULTS.items()
       if k not in ("q_lora_rank", "norm_topk_prob")},  # deleted from its class (IMPLIED)
    "vocab_size": 204800, "hidden_size": 6144, "intermediate_size": 24576,
    "moe_intermediate_size": 6144, "num_hidden_layers": 72, "num_attention_heads": 64,
    "num_key_value_heads": 64, "n_shared_experts": 1, "n_routed_experts": 128,
    "num_experts_per_tok": 4, "routed_scaling_factor": 1.0, "kv_lora_rank": 512,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "qk_nope_head_dim": 64, "n_group": 1,
    "topk_group": 1, "max_position_embeddings": 1048576, "rms_norm_eps": 1e-5,
    "bos_token_id": 1, "eos_token_id": 2, "index_topk": 2048, "index_head_dim": 128,
    "index_n_heads": 32, "first_k_dense_replace": 1, "final_logit_softcapping": 30.0,
    "rope_theta": 10000.0,
    "rope_scaling": {"type": "yarn", "factor": 2048.0, "original_max_position_embeddings": 512,
                     "beta_fast": 32.0, "beta_slow": 1.0, "attention_factor": 1.0},
}
# the model fixes these whatever a file says: no q compression (q_lora_rank is deleted from
# the class), Mistral 4's softmax router renormalising always, no MTP module in transformers
IMPLIED: dict[str, Any] = {"q_lora_rank": None, "topk_method": "group_limited_greedy",
                           "scoring_func": "softmax", "norm_topk_prob": True,
                           "moe_layer_freq": 1, "num_nextn_predict_layers": 0}
NO_ROPE_LAYER_INTERVAL = 4  # transformers' default: every 4th layer is a NoPE layer


class MistralLarge4TextConfig(SoftmaxTop2Router, glm_moe_dsa.GlmMoeDsaConfig):
    """Mistral Large 4's language model (`model_type: mistral_large4_text`, or the
    `text_config` of a `mistral_large4` wrapper): GLM-5's DSA attention without q
    compression, with NoPE and KV-sharing layers, learned softmax scaling and LeRoPE, Mistral
    4's router in float32, fused experts and soft-capped logits (docs/derived_families.md)."""

    model_type: Literal["mistral_large4_text"]  # type: ignore[assignment]
    default_loader: ClassVar[str] = LOADER
    indexer_query_from_hidden: ClassVar[bool] = True
    layer_index_lists: ClassVar[tuple[str, ...]] = ("kv_source_layers",)
    no_rope_layers: list[Literal[0, 1]] | None = None
    no_rope_layer_interval: int = Field(NO_ROPE_LAYER_INTERVAL, ge=1)
    kv_source_layers: list[int] | None = None
    final_logit_softcapping: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _fixed_by_the_model(cls, data: Any) -> Any:
        # MistralLarge4TextConfig deletes q_lora_rank and norm_topk_prob, its router reads no
        # topk_method / scoring_func, and its checkpoint's MTP head (mtp_dspark.*) is not
        # built: a file's value would describe another model
        if isinstance(data, dict):
            data = {**data, **{k: IMPLIED[k] for k in (
                "q_lora_rank", "topk_method", "scoring_func", "norm_topk_prob",
                "num_nextn_predict_layers")}}
        return data

    def uses_rope(self, layer: int) -> bool:
        """transformers' `no_rope_layers[L]` (1: RoPE; 0: a NoPE layer)."""
        return bool(self.no_rope_layers[layer])

    def rope_width(self, layer: int) -> int:
        """The rotary width of `layer`'s queries and keys (0 on NoPE layers)."""
        return self.qk_rope_head_dim if self.uses_rope(layer) else 0

    def kv_source(self, layer: int) -> int:
        """The layer whose latent KV `layer` attends to (itself unless shared)."""
        return layer if self.kv_source_layers is None else self.kv_source_layers[layer]

    def owns_kv(self, layer: int) -> bool:
        return self.kv_source(layer) == layer

    @property
    def routing_method(self) -> str:
        return "MistralLarge4TextTopkRouter (reads no topk_method)"

    @property
    def router_kind(self) -> str:
        return ("softmax top-k of float32 logits, groups ranked by top-2 sum, renormalised, "
                "no bias (MistralLarge4TextTopkRouter)")

    @model_validator(mode="after")
    def _per_layer_lists(self):
        n = self.num_hidden_layers
        if self.no_rope_layers is None:
            # spelled out as transformers' __post_init__ does (every `no_rope_layer_interval`-th
            # layer, counting from 1, is NoPE), so a shrunk copy keeps a NoPE layer
            self.no_rope_layers = [int((layer + 1) % self.no_rope_layer_interval != 0)
                                   for layer in range(n)]
        if len(self.no_rope_layers) < n:
            raise ValueError(f"no_rope_layers: needs an entry (1 RoPE, 0 NoPE) for each of the "
                             f"{n} layers, found {len(self.no_rope_layers)}")
        sources = self.kv_source_layers
        if sources is None:
            return self
        if len(sources) != n:
            raise ValueError(f"kv_source_layers: needs one entry per layer ({n}), found "
                             f"{len(sources)}")
        for layer, source in enumerate(sources):
            if not 0 <= source <= layer or sources[source] != source:
                raise ValueError(f"kv_source_layers: layer {layer} must share the KV of an "
                                 f"earlier layer that owns its own, found {source}")
            if self.uses_rope(layer) != self.uses_rope(source):
                # the shared latent's rotary part exists only on RoPE layers
                raise ValueError(f"kv_source_layers: layer {layer} and its source {source} "
                                 f"differ in no_rope_layers, so their latent KV differ in width")
        return self


def _owns_kv(c, b: Block) -> bool:
    return c.owns_kv(b.layer)


def _full_indexer(c, b: Block) -> bool:
    return c.indexer_full(b.layer)


def _kv_b_width(c, layer: int) -> int:
    # a NoPE layer's non-rotary part takes the rotary width too
    return c.qk_nope_head_dim + c.qk_rope_head_dim - c.rope_width(layer) + c.v_head_dim


def _scaling(role: str, prefix: str, heads, component, when=None) -> tuple[Row, Row]:
    """MistralLarge4TextSoftmaxScaling: `scale` and `bias` per head of one query projection."""
    extra = {} if when is None else {"when": when}
    return tuple(Row(f"{role}.{part}", "attention", f"{prefix}softmax_scaling.{part}",
                     lambda c, b: (heads(c),), component, **extra)
                 for part in ("scale", "bias"))


INDEXER_QUERY = (
    Row("indexer.q_input_norm", "attention", "self_attn.indexer.q_input_norm.weight",
        lambda c, b: (c.hidden_size,), "indexer", when=_full_indexer),
    Row("indexer.q_input_norm_bias", "attention", "self_attn.indexer.q_input_norm.bias",
        lambda c, b: (c.hidden_size,), "indexer", when=_full_indexer),
)

ROWS = derive(
    glm_moe_dsa.ROWS,
    drop=("wq_a", "q_norm", "wq_b", "gate_bias", "expert.w1", "expert.w3", "expert.w2"),
    change={
        "wkv_a": {"shape": lambda c, b: (c.kv_lora_rank + c.rope_width(b.layer), c.hidden_size),
                  "when": _owns_kv},
        "kv_norm": {"when": _owns_kv},
        "wkv_b": {"shape": lambda c, b: (c.num_attention_heads * _kv_b_width(c, b.layer),
                                         c.kv_lora_rank)},
        "indexer.wq_b": {"shape": lambda c, b: (c.index_n_heads * c.index_head_dim,
                                                c.hidden_size)},
        # _keep_in_fp32_modules_strict: the router weight stays float32
        "gate": {"keep": "F32"},
    },
    add_after={
        "embed": (Row("rope_alpha", "global_first", "model.rotary_emb.alpha",
                      lambda c, b: (c.qk_rope_head_dim // 2,), "attention", keep="F32"),),
        "wq": _scaling("attn_scaling", "self_attn.", lambda c: c.num_attention_heads,
                       "attention"),
        "indexer.wk": INDEXER_QUERY + _scaling(
            "indexer.scaling", "self_attn.indexer.", lambda c: c.index_n_heads, "indexer",
            _full_indexer),
        "gate": stacked_expert_rows("router"),
    })

MISTRAL_LARGE4 = Family(
    name="mistral_large4_text", title="Mistral Large 4", parent="glm_moe_dsa",
    model_types=("mistral_large4_text",), architectures=("MistralLarge4TextModel",), rows=ROWS,
    scopes=glm_moe_dsa.GLM_MOE_DSA.scopes, layouts=("bf16",), formats=("bf16",),
    router=("softmax of float32 logits, groups ranked by their top-2 sum, renormalised, "
            "scaled; no bias"),
    attention="mla+dsa without q compression (NoPE / KV-sharing layers, learned softmax "
              "scaling, LeRoPE)",
    presets=("mistral-large-4",), hooks={"decoder": "ckpt_tools.reference.mistral_large4:Model"},
    no_mp_layout=("its routed experts are fused tensors [E, 2I, H] / [E, H, I], its layers "
                  "differ in shape (NoPE, KV sharing) and its attention has parts DeepSeek's "
                  "inference code lacks (learned softmax scaling, LeRoPE)"),
    no_block_fp8=("its routed experts are fused 3-D tensors in transformers' names (no 128x128 "
                  "weight_scale_inv for them); Mistral's own FP8 files are in its consolidated "
                  "format, which ckpt_tools does not read"),
    config_model=MistralLarge4TextConfig, loader=LOADER, class_defaults=CLASS_DEFAULTS,
    implied_defaults=IMPLIED,
    wrappers={"mistral_large4": Wrapper(
        LOADER, "its MistralLarge4Config builds MistralLarge4TextConfig(**text_config)",
        ("MistralLarge4ForConditionalGeneration", "MistralLarge4Model", "MistralLarge4Config"),
        tensor_prefix=WRAPPER_PREFIX)})
