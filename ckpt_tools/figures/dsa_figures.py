"""What DeepSeek Sparse Attention (V3.2's lightning indexer) adds and saves, from a config.

Derived like `arch_figures` (tensor-plan groups, no NumPy); docs/deepseek_v32.md has the
formulas and their sources. Conventions:

- Parameters and bytes: the `indexer` component of the tensor plan (wq_b, wk, k_norm,
  weights_proj; FP8 scales are bytes, not parameters).
- Extra KV cache: one `index_head_dim` key per token and layer (shared by all indexer
  heads). BF16 like the rest of `arch_figures`' cache, and as DeepSeek deploys it: FP8
  e4m3 plus one float32 scale per 128 elements (inference/model.py's k_cache/k_scale_cache).
- Attention FLOPs per token for one query over `context` earlier tokens, main-model layers:
  `attention_cost`'s, the one formula every command shows (docs/attention_cost.md): MLA
  absorbed as DeepSeek runs it, 2 x heads x (2 kv_lora_rank + qk_rope_head_dim) per
  attended entry; dense MLA attends every earlier token, DSA min(context, index_topk) of
  them plus the indexer's 2 x index_n_heads x (index_head_dim + 1) per earlier token.
  Projections are matmul FLOPs (`arch_figures`), the top-k selection is not counted.
"""

from __future__ import annotations

from pydantic import Field

from .attention_cost import (
    attention_flops,
    indexed_layers,
    indexer_flops_per_key,
    mla_flops_all_layers,
    mla_flops_per_entry,
)
from ..io.dtypes import itemsize
from ..results import Result
from ..inventory.tensor_plan import TensorPlan

REFERENCE_CONTEXTS = (4096, 32768, 131072)
KV_BF16 = 2
FP8_KEY_BLOCK = 128  # one float32 scale per 128 cached key elements


class ContextCost(Result):
    context: int
    dense_mla_flops: int = Field(description="Per token, all layers: MLA over every earlier token")
    dsa_mla_flops: int = Field(description="MLA over the min(context, index_topk) selected keys")
    indexer_flops: int = Field(description="Indexer scores over every earlier token")
    dsa_flops: int = Field(description="dsa_mla_flops + indexer_flops")
    dsa_over_dense: float


class SparseAttentionFigures(Result):
    """The lightning indexer's cost and what it saves (`ckpt info`, `ckpt diff`)."""

    index_n_heads: int
    index_head_dim: int
    index_topk: int
    indexer_per_layer: int = Field(description="Parameters of one layer's indexer")
    indexer_main: int = Field(description="Parameters, all main-model layers")
    indexer_mtp: int = Field(description="Parameters of the MTP layers' indexers")
    indexer_bytes_per_layer: int = Field(description="Stored bytes of one layer's indexer "
                                         "(scales included), in the plan's layout")
    indexer_bytes: int = Field(description="Stored bytes, every layer including MTP")
    layout: str
    kv_extra_per_token_per_layer_bf16: int
    kv_extra_per_token_bf16: int = Field(description="All main-model layers, BF16 keys")
    kv_extra_per_token_fp8: int = Field(description="All main-model layers, FP8 keys + F32 "
                                        "scales as DeepSeek deploys them")
    kv_extra_over_mla: float = Field(description="Extra BF16 cache / MLA's BF16 cache")
    flops: list[ContextCost]
    crossover_context: int | None = Field(description="Shortest context at which DSA attention "
                                          "costs fewer FLOPs than dense MLA; None: never (the "
                                          "indexer costs more per key than MLA)")
    convention: str


def context_cost(config, context: int) -> ContextCost:
    mla, idx = mla_flops_all_layers(config), indexer_flops_per_key(config)
    dense = mla * context
    sparse_mla = mla * min(context, config.index_topk)
    indexer = indexed_layers(config) * idx * context
    dsa = attention_flops(config, context)  # = sparse_mla + indexer (tested)
    return ContextCost(context=context, dense_mla_flops=dense, dsa_mla_flops=sparse_mla,
                       indexer_flops=indexer, dsa_flops=dsa, dsa_over_dense=dsa / dense)


def crossover_context(config) -> int | None:
    """Smallest L with L*idx + min(L, k)*mla < L*mla: beyond k, L > k*mla / (mla - idx).
    None when the indexer costs at least as much per key as MLA (tiny test models)."""
    mla, idx, k = mla_flops_per_entry(config), indexer_flops_per_key(config), config.index_topk
    if idx >= mla:
        return None
    return k * mla // (mla - idx) + 1


def sparse_attention_figures(config, plan: TensorPlan | None = None,
                             contexts: tuple[int, ...] = REFERENCE_CONTEXTS
                             ) -> SparseAttentionFigures | None:
    """The DSA figures of a V3.2 config; None for a config without an indexer."""
    c = config
    if not c.has_indexer:
        return None
    plan = plan if plan is not None else TensorPlan(c)
    params = {"main": 0, "mtp": 0}
    nbytes = layer_bytes = 0
    first = next(g.layer for g in plan.groups if g.component == "indexer")
    for g in plan.groups:
        if g.component != "indexer":
            continue
        size = g.numel * itemsize(g.dtype)
        nbytes += size
        layer_bytes += size if g.layer == first else 0
        if g.scale_of_family is None:
            params["mtp" if g.mtp else "main"] += g.numel
    indexed = indexed_layers(c)  # layers with an indexer of their own
    kv_bf16 = c.index_head_dim * KV_BF16
    kv_fp8 = c.index_head_dim + 4 * -(-c.index_head_dim // FP8_KEY_BLOCK)
    mla_kv = (c.kv_lora_rank + c.qk_rope_head_dim) * KV_BF16
    return SparseAttentionFigures(
        index_n_heads=c.index_n_heads, index_head_dim=c.index_head_dim, index_topk=c.index_topk,
        indexer_per_layer=params["main"] // indexed, indexer_main=params["main"],
        indexer_mtp=params["mtp"], indexer_bytes_per_layer=layer_bytes, indexer_bytes=nbytes,
        layout=plan.layout, kv_extra_per_token_per_layer_bf16=kv_bf16,
        kv_extra_per_token_bf16=kv_bf16 * indexed, kv_extra_per_token_fp8=kv_fp8 * indexed,
        kv_extra_over_mla=kv_bf16 / mla_kv,
        flops=[context_cost(c, L) for L in contexts],
        crossover_context=crossover_context(c),
        convention=("per token, main-model layers; dense MLA (absorbed, as DeepSeek runs it): "
                    "2 x heads x (2 kv_lora_rank + qk_rope_head_dim) per earlier token; DSA: "
                    "that for min(context, index_topk) entries + 2 x index_n_heads x "
                    "(index_head_dim + 1) per earlier token for the indexer; projections and "
                    "top-k selection not counted"),
    )


# -- ckpt diff --------------------------------------------------------------------------------
def diff_rows(known: SparseAttentionFigures) -> list:
    """`ckpt diff`'s DSA rows, as (section, key, label, unit, getter, headline) with getters
    over one side's `ArchFigures`: the indexer's cost, and per context length the attention
    FLOPs each side really spends (dense MLA without an indexer, DSA with one). `known`:
    the DSA figures of either side (the contexts)."""
    def dsa(get):
        return lambda f: get(f.sparse_attention) if f.sparse_attention else 0

    def attention_at(i: int, context: int):
        def get(f):
            if f.sparse_attention:
                return f.sparse_attention.flops[i].dsa_flops
            # no indexer: arch_figures' attention FLOPs are dense, linear in the context
            return f.flops.attention_flops_per_token // f.flops.context * context
        return get

    rows = [
        ("sparse_attention", "dsa.indexer_per_layer", "indexer parameters per layer", "params",
         dsa(lambda d: d.indexer_per_layer), True),
        ("sparse_attention", "dsa.indexer_main", "indexer parameters, all layers", "params",
         dsa(lambda d: d.indexer_main), False),
        ("sparse_attention", "dsa.indexer_bytes", "indexer bytes as stored (MTP included)",
         "bytes", dsa(lambda d: d.indexer_bytes), False),
        ("sparse_attention", "dsa.kv_extra_bf16", "extra KV cache per token: index keys (BF16)",
         "bytes", dsa(lambda d: d.kv_extra_per_token_bf16), True),
        ("sparse_attention", "dsa.kv_extra_fp8", "  as DeepSeek deploys it (FP8 + F32 scale)",
         "bytes", dsa(lambda d: d.kv_extra_per_token_fp8), False),
    ]
    longest = len(known.flops) - 1
    for i, cost in enumerate(known.flops):
        rows.append(("sparse_attention", f"dsa.attention_flops.{cost.context}",
                     f"attention FLOPs per token at {cost.context // 1024}K context "
                     f"(dense MLA / DSA)", "flops", attention_at(i, cost.context), i == longest))
    rows.append(("sparse_attention", "dsa.crossover", "  DSA cheaper than dense from (tokens)",
                 "count", lambda f: f.sparse_attention.crossover_context
                 if f.sparse_attention else None, False))
    return rows
