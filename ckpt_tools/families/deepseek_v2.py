"""DeepSeek-V2 (V2, V2-Lite, V2.5): MLA attention and a DeepSeekMoE feed-forward, as rows.

Every row here is also V3's (and R1's, V3.1's, Kimi-K2's, Moonlight's): what differs between
them is config fields (`topk_method`, `scoring_func`, `q_lora_rank`, ...), read by `when`.
The names and the model-parallel rules are those of transformers' `modeling_deepseek_v2.py`
/ `modeling_deepseek_v3.py` and DeepSeek's `inference/convert.py` (docs/architecture.md).
"""

from __future__ import annotations

from ..configs.models import DeepseekV2Config
from .base import (
    COLUMN,
    EXPERT,
    HF_EXPERT_PREFIX,
    HF_LAYER_PREFIX,
    ROW,
    Block,
    Family,
    Row,
    Rule,
    Wrapper,
    always,
)

_R = Row

LAYER_PREFIX, EXPERT_PREFIX = HF_LAYER_PREFIX, HF_EXPERT_PREFIX
MP_LAYER_PREFIX = "layers.{L}."
# each section's scope: layout -> name prefix
SCOPES = {
    "global_first": {"hf": "", "mp": ""}, "global_last": {"hf": "", "mp": ""},
    "routed_expert": {"hf": LAYER_PREFIX + EXPERT_PREFIX,
                      "mp": MP_LAYER_PREFIX + "ffn.experts.{E}."},
    **{s: {"hf": LAYER_PREFIX, "mp": MP_LAYER_PREFIX}
       for s in ("attention", "dense_mlp", "router", "shared_expert", "mtp_input", "mtp_output")},
}


def _qh(c) -> int:
    return c.num_attention_heads * c.qk_head_dim


def _has_q_lora(c, b: Block) -> bool:
    return c.q_lora_rank is not None


def _no_q_lora(c, b: Block) -> bool:
    return c.q_lora_rank is None


def _shared_width(c) -> int:
    return c.n_shared_experts * c.moe_intermediate_size


def _has_shared(c, b: Block) -> bool:
    return c.n_shared_experts > 0


def _has_score_bias(c, b: Block) -> bool:
    return c.has_score_bias


def _swiglu(role: str, section: str, hf: str, mp: str, width, up: Rule, down: Rule,
            when=always) -> tuple[Row, ...]:
    """A SwiGLU MLP of `width(config)`: w1 = gate_proj and w3 = up_proj [width, H], split on
    `up`; w2 = down_proj [H, width], split on `down`; all block FP8 in the FP8 layout."""
    return (
        Row(role + "w1", section, hf + "gate_proj.weight",
            lambda c, b: (width(c), c.hidden_size), section, mp + "w1.weight", up, fmt="fp8",
            when=when),
        Row(role + "w3", section, hf + "up_proj.weight",
            lambda c, b: (width(c), c.hidden_size), section, mp + "w3.weight", up, fmt="fp8",
            when=when),
        Row(role + "w2", section, hf + "down_proj.weight",
            lambda c, b: (c.hidden_size, width(c)), section, mp + "w2.weight", down, fmt="fp8",
            when=when),
    )


# DeepSeek-V2 (and V3, R1, V3.1: the same tensors). Order within a section is the plan's.
ROWS: tuple[Row, ...] = (
    _R("embed", "global_first", "model.embed_tokens.weight",  # ParallelEmbedding: vocab rows
       lambda c, b: (c.vocab_size, c.hidden_size), "embedding", "embed.weight", COLUMN),
    # attention, every layer
    _R("attn_norm", "attention", "input_layernorm.weight", lambda c, b: (c.hidden_size,), "norm",
       "attn_norm.weight"),
    _R("wq", "attention", "self_attn.q_proj.weight", lambda c, b: (_qh(c), c.hidden_size),
       "attention", "attn.wq.weight", COLUMN, fmt="fp8", when=_no_q_lora),
    _R("wq_a", "attention", "self_attn.q_a_proj.weight",
       lambda c, b: (c.q_lora_rank, c.hidden_size),
       "attention", "attn.wq_a.weight", fmt="fp8", when=_has_q_lora),
    _R("q_norm", "attention", "self_attn.q_a_layernorm.weight", lambda c, b: (c.q_lora_rank,),
       "attention", "attn.q_norm.weight", when=_has_q_lora),
    _R("wq_b", "attention", "self_attn.q_b_proj.weight", lambda c, b: (_qh(c), c.q_lora_rank),
       "attention", "attn.wq_b.weight", COLUMN, fmt="fp8", when=_has_q_lora),
    _R("wkv_a", "attention", "self_attn.kv_a_proj_with_mqa.weight",
       lambda c, b: (c.kv_lora_rank + c.qk_rope_head_dim, c.hidden_size), "attention",
       "attn.wkv_a.weight", fmt="fp8"),
    _R("kv_norm", "attention", "self_attn.kv_a_layernorm.weight", lambda c, b: (c.kv_lora_rank,),
       "attention", "attn.kv_norm.weight"),
    _R("wkv_b", "attention", "self_attn.kv_b_proj.weight",
       lambda c, b: (c.num_attention_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank),
       "attention", "attn.wkv_b.weight", COLUMN, fmt="fp8"),
    _R("wo", "attention", "self_attn.o_proj.weight",
       lambda c, b: (c.hidden_size, c.num_attention_heads * c.v_head_dim), "attention",
       "attn.wo.weight", ROW, fmt="fp8"),
    _R("ffn_norm", "attention", "post_attention_layernorm.weight", lambda c, b: (c.hidden_size,),
       "norm", "ffn_norm.weight"),
    # dense MLP (w1 = gate_proj, w3 = up_proj, w2 = down_proj)
    *_swiglu("mlp.", "dense_mlp", "mlp.", "ffn.", lambda c: c.intermediate_size, COLUMN, ROW),
    # MoE router; the aux-loss-free bias is F32 in every layout (DeepSeek's Gate.bias)
    _R("gate", "router", "mlp.gate.weight", lambda c, b: (c.n_routed_experts, c.hidden_size),
       "router", "ffn.gate.weight"),
    _R("gate_bias", "router", "mlp.gate.e_score_correction_bias",
       lambda c, b: (c.n_routed_experts,), "router", "ffn.gate.bias", keep="F32",
       when=_has_score_bias),
    # one routed expert (whole on one rank), then the shared experts as one wider MLP
    *_swiglu("expert.", "routed_expert", "", "", lambda c: c.moe_intermediate_size, EXPERT,
             EXPERT),
    *_swiglu("shared.", "shared_expert", "mlp.shared_experts.", "ffn.shared_experts.",
             _shared_width, COLUMN, ROW, _has_shared),
    _R("norm", "global_last", "model.norm.weight", lambda c, b: (c.hidden_size,), "norm",
       "norm.weight"),
    _R("head", "global_last", "lm_head.weight", lambda c, b: (c.vocab_size, c.hidden_size),
       "lm_head", "head.weight", COLUMN),  # ColumnParallelLinear(dim, vocab)
    # The MTP module's own tensors, around a full MoE decoder layer. DeepSeek's demo model
    # has no MTP module: these model-parallel names are ours (kept only on request).
    _R("mtp.embed", "mtp_input", "embed_tokens.weight", lambda c, b: (c.vocab_size, c.hidden_size),
       "mtp", "embed.weight", COLUMN),
    _R("mtp.enorm", "mtp_input", "enorm.weight", lambda c, b: (c.hidden_size,), "mtp",
       "enorm.weight"),
    _R("mtp.hnorm", "mtp_input", "hnorm.weight", lambda c, b: (c.hidden_size,), "mtp",
       "hnorm.weight"),
    _R("mtp.eh_proj", "mtp_input", "eh_proj.weight",
       lambda c, b: (c.hidden_size, 2 * c.hidden_size),
       "mtp", "eh_proj.weight"),  # BF16 in V3's FP8 release
    _R("mtp.norm", "mtp_output", "shared_head.norm.weight", lambda c, b: (c.hidden_size,), "mtp",
       "shared_head.norm.weight"),
    _R("mtp.head", "mtp_output", "shared_head.head.weight",
       lambda c, b: (c.vocab_size, c.hidden_size),
       "mtp", "shared_head.head.weight", COLUMN),
)

# What the table-driven plan walks, in order: sections of a decoder layer
LAYER_SECTIONS = ("attention", "dense_mlp", "router", "routed_expert", "shared_expert")

DEEPSEEK_V2 = Family(
    name="deepseek_v2", title="DeepSeek-V2", model_types=("deepseek_v2",),
    architectures=("DeepseekV2ForCausalLM", "DeepseekV2Model"), rows=ROWS, scopes=SCOPES,
    layouts=("bf16", "fp8"), formats=("bf16", "fp8-block-f32", "fp8-block-ue8m0"),
    router="softmax top-k (greedy or group-limited)", attention="mla",
    presets=("v2", "v2-lite", "v2.5"), config_model=DeepseekV2Config,
    # DeepSeek-VL2's deepseek_vl2/models/modeling_deepseek_vl_v2.py
    # (https://github.com/deepseek-ai/DeepSeek-VL2), whose config class DeepSeek-OCR reuses
    # (docs/config-layouts.md)
    wrappers={"deepseek_vl_v2": Wrapper(
        "remote-code DeepSeek-VL2 DeepseekV2Config",
        "its DeepseekVLV2Config builds its own DeepseekV2Config(**language_config)",
        ("DeepseekVLV2ForCausalLM", "DeepseekVLV2Config", "DeepseekOCRForCausalLM"))})
