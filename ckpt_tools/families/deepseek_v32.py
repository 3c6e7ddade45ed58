"""DeepSeek-V3.2 (and V3.2-Exp): V3's rows plus the lightning indexer of DeepSeek Sparse
Attention in every layer (docs/deepseek_v32.md).

Its release stores `k_norm` (a LayerNorm, weight and bias) in F32 and `weights_proj` in
BF16 without a scale; transformers keeps `weights_proj` in F32 (`alt_dtypes`).
"""

from __future__ import annotations

from ..configs.models import DeepseekV32Config
from . import deepseek_v3
from .base import Family, Row, derive

_R = Row

INDEXER: tuple[Row, ...] = (
    # V3.2's lightning indexer: queries from MLA's compressed q, one shared key per token;
    # DeepSeek's convert.py replicates it whole on every rank. Its release stores k_norm
    # (a LayerNorm) in F32 and weights_proj in BF16; transformers keeps weights_proj in F32.
    _R("indexer.wq_b", "attention", "self_attn.indexer.wq_b.weight",
       lambda c, b: (c.index_n_heads * c.index_head_dim, c.q_lora_rank), "indexer",
       "attn.indexer.wq_b.weight", fmt="fp8"),
    _R("indexer.wk", "attention", "self_attn.indexer.wk.weight",
       lambda c, b: (c.index_head_dim, c.hidden_size), "indexer", "attn.indexer.wk.weight",
       fmt="fp8"),
    _R("indexer.k_norm", "attention", "self_attn.indexer.k_norm.weight",
       lambda c, b: (c.index_head_dim,), "indexer", "attn.indexer.k_norm.weight", keep="F32",
       alt_dtypes=("BF16",)),
    _R("indexer.k_norm_bias", "attention", "self_attn.indexer.k_norm.bias",
       lambda c, b: (c.index_head_dim,), "indexer", "attn.indexer.k_norm.bias", keep="F32",
       alt_dtypes=("BF16",)),
    _R("indexer.weights_proj", "attention", "self_attn.indexer.weights_proj.weight",
       lambda c, b: (c.index_n_heads, c.hidden_size), "indexer", "attn.indexer.weights_proj.weight",
       alt_dtypes=("F32",)),
)

ROWS = derive(deepseek_v3.ROWS, add_after={"wo": INDEXER})

DEEPSEEK_V32 = Family(
    name="deepseek_v32", title="DeepSeek-V3.2", parent="deepseek_v3",
    model_types=("deepseek_v32",), architectures=("DeepseekV32ForCausalLM", "DeepseekV32Model"),
    rows=ROWS, scopes=deepseek_v3.DEEPSEEK_V3.scopes, layouts=("bf16", "fp8"),
    formats=("bf16", "fp8-block-ue8m0"), router=deepseek_v3.DEEPSEEK_V3.router,
    attention="mla+dsa", presets=("v3.2", "v3.2-exp"), config_model=DeepseekV32Config)
