"""DeepSeek-V4 tensor names: the Hub's (DeepSeek's own) -> transformers' `DeepseekV4ForCausalLM`.

The same correspondence transformers applies when it loads Hub names (its
`conversion_mapping.py`, "deepseek_v4"), written here as a structure per module so that
`ckpt upcast --layout hf` can write the model's own state-dict names. Routed experts are
not renamed one by one: per layer, w1/w3 of every expert stack into
`mlp.experts.gate_up_proj` [E, 2I, D] (gate rows first) and w2 into `mlp.experts.down_proj`
[E, D, I]. MTP tensors have no transformers module (it does not instantiate MTP and ignores
`mtp.*` on load), so they keep DeepSeek's names.
"""

from __future__ import annotations

import re

GLOBAL = {
    "embed.weight": "model.embed_tokens.weight",
    "head.weight": "lm_head.weight",
    "norm.weight": "model.norm.weight",
    "hc_head_fn": "model.hc_head.hc_fn",
    "hc_head_base": "model.hc_head.hc_base",
    "hc_head_scale": "model.hc_head.hc_scale",
}
BLOCK = {  # directly under layers.N.
    "hc_attn_fn": "attn_hc.fn", "hc_attn_base": "attn_hc.base", "hc_attn_scale": "attn_hc.scale",
    "hc_ffn_fn": "ffn_hc.fn", "hc_ffn_base": "ffn_hc.base", "hc_ffn_scale": "ffn_hc.scale",
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
ATTENTION = {  # attn.<module> -> self_attn.<module>
    "attn_sink": "sinks", "wq_a": "q_a_proj", "q_norm": "q_a_norm", "wq_b": "q_b_proj",
    "wkv": "kv_proj", "kv_norm": "kv_norm", "wo_a": "o_a_proj", "wo_b": "o_b_proj",
}
COMPRESSOR = {"ape": "position_bias", "wkv": "kv_proj", "wgate": "gate_proj", "norm": "kv_norm"}
INDEXER = {"wq_b": "q_b_proj", "weights_proj": "scorer.weights_proj"}
FFN = {
    "gate.weight": "gate.weight", "gate.bias": "gate.e_score_correction_bias",
    "gate.tid2eid": "gate.tid2eid",
    "shared_experts.w1.weight": "shared_experts.gate_proj.weight",
    "shared_experts.w2.weight": "shared_experts.down_proj.weight",
    "shared_experts.w3.weight": "shared_experts.up_proj.weight",
}
GATE_UP = "mlp.experts.gate_up_proj"
DOWN = "mlp.experts.down_proj"

_LAYER = re.compile(r"layers\.(\d+)\.(.+)")
_EXPERT = re.compile(r"ffn\.experts\.(\d+)\.(w[123])\.weight")


def _attention(rest: str) -> str | None:
    """`rest` after "attn." -> the name after "self_attn." (None: unknown)."""
    module, _, leaf = rest.partition(".")
    if module == "compressor":
        part, _, leaf2 = leaf.partition(".")
        return f"compressor.{COMPRESSOR[part]}{'.' + leaf2 if leaf2 else ''}" if part in COMPRESSOR else None
    if module == "indexer":
        part, _, leaf2 = leaf.partition(".")
        if part == "compressor":
            sub, _, leaf3 = leaf2.partition(".")
            if sub not in COMPRESSOR:
                return None
            return f"compressor.indexer.{COMPRESSOR[sub]}{'.' + leaf3 if leaf3 else ''}"
        return f"compressor.indexer.{INDEXER[part]}.{leaf2}" if part in INDEXER else None
    if module not in ATTENTION:
        return None
    return ATTENTION[module] + (f".{leaf}" if leaf else "")


def hf_name(name: str) -> str | None:
    """transformers' name of a non-expert Hub tensor; None for MTP, routed experts and
    names V4 does not have."""
    if name in GLOBAL:
        return GLOBAL[name]
    m = _LAYER.fullmatch(name)
    if m is None:
        return None
    layer, rest = m.groups()
    prefix = f"model.layers.{layer}."
    if rest in BLOCK:
        return prefix + BLOCK[rest]
    if rest.startswith("attn."):
        mapped = _attention(rest[len("attn."):])
        return None if mapped is None else prefix + "self_attn." + mapped
    if rest.startswith("ffn.") and rest[len("ffn."):] in FFN:
        return prefix + "mlp." + FFN[rest[len("ffn."):]]
    return None


def expert_of(name: str) -> tuple[int, int, str] | None:
    """(layer, expert, "w1" | "w2" | "w3") of a main-model routed-expert weight."""
    m = _LAYER.fullmatch(name)
    if m is None:
        return None
    e = _EXPERT.fullmatch(m[2])
    return (int(m[1]), int(e[1]), e[2]) if e else None


def stacked_names(layer: int) -> tuple[str, str]:
    return f"model.layers.{layer}.{GATE_UP}", f"model.layers.{layer}.{DOWN}"
