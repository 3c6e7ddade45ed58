"""One attention cost and one KV cache per architecture, for one new token attending to
`context` earlier ones: the figures `info`, `diff` (any pair) and the charts all show.

Formulas and their sources: docs/attention_cost.md. In short (2 FLOPs per multiply-add,
main-model layers, MTP excluded, projections counted as matmul FLOPs elsewhere):
- MLA (V2, V3) as DeepSeek runs it for inference, the up-projections absorbed ("MQA mode"):
  every cached entry is kv_lora_rank + qk_rope_head_dim wide and shared by all heads, so
  one head costs (kv_lora + rope) for its score and kv_lora for its value:
  2 H (2 kv_lora + rope) per attended entry, every earlier token attended.
- V3.2 (DeepSeek Sparse Attention): the same MLA over the indexer's top `index_topk`
  entries only, plus the lightning indexer over every earlier token: H_I dot products of
  index_head_dim and the weighted sum over its heads, 2 H_I (index_head_dim + 1).
- V4: shared-KV MQA, head_dim-wide entries used as keys and values, 4 H head_dim per
  attended entry; each layer attends its sliding window, plus (CSA, ratio 4) the indexer's
  top-k of the context/4 compressed entries with the indexer over all of them, or (HCA,
  ratio 128) every one of the context/128 compressed entries.
- KV cache: elements kept per sequence at BF16 (2 bytes): MLA latent + rope key per token
  and layer, V3.2 adds its indexer key; V4 keeps its window, the compressed entries and
  CSA's indexer keys.
- Layers differ where the config says so: a NoPE layer's entries have no rope part, a layer
  that reuses an earlier layer's latent caches none (Mistral Large 4), and a layer that
  reuses an earlier indexer selection runs no indexer and caches no index key (GLM-5).
"""

from __future__ import annotations

BYTES_PER_ELEMENT = 2  # BF16 cache entries
CSA_RATIO = 4  # V4: compressed sparse attention (with an indexer); other ratios are HCA


def _compressed(c) -> bool:
    """DeepSeek-V4's per-layer schedule of sliding-window / compressed attention."""
    return getattr(c, "compress_ratios", None) is not None


def _has_indexer(c) -> bool:
    return getattr(c, "index_topk", None) is not None


def mla_flops_per_entry(c) -> int:
    """Scores and values of one query against one cached MLA entry, all heads, one layer."""
    return 2 * c.num_attention_heads * (2 * c.kv_lora_rank + c.qk_rope_head_dim)


def indexer_flops_per_key(c) -> int:
    """The lightning indexer's score of one key: a dot product per indexer head, then the
    weighted sum over the heads."""
    return 2 * c.index_n_heads * (c.index_head_dim + 1)


def mqa_flops_per_entry(c) -> int:
    """V4: one query against one shared head_dim-wide entry (key and value), all heads."""
    return 4 * c.num_attention_heads * c.head_dim


def mla_flops_all_layers(c) -> int:
    """`mla_flops_per_entry` summed over the main layers, each with its own rotary width."""
    return sum(2 * c.num_attention_heads * (2 * c.kv_lora_rank + c.rope_width(layer))
               for layer in range(c.num_hidden_layers))


def blocks_per_layer(c) -> int:
    """Attention blocks in each decoder layer, each with its own cache (LongCat-Flash: 2)."""
    return c.attention_blocks // c.num_hidden_layers


def indexed_layers(c) -> int:
    """Main layers that run their own indexer (score every key, cache an index key)."""
    if not _has_indexer(c):
        return 0
    return sum(c.indexer_full(layer) for layer in range(c.num_hidden_layers))


def attention_flops(c, context: int) -> int:
    """FLOPs of one new token attending to `context` earlier tokens, all main layers."""
    if not _compressed(c):
        attended = min(context, c.index_topk) if _has_indexer(c) else context
        total = mla_flops_all_layers(c) * attended
        if _has_indexer(c):
            total += indexer_flops_per_key(c) * context * indexed_layers(c)
        return total * blocks_per_layer(c)
    entry, window = mqa_flops_per_entry(c), min(context, c.sliding_window)
    total = 0
    for ratio in c.compress_ratios[: c.num_hidden_layers]:
        total += entry * window
        if ratio == CSA_RATIO:
            compressed = context // ratio
            total += entry * min(compressed, c.index_topk)
            total += indexer_flops_per_key(c) * compressed
        elif ratio:
            total += entry * (context // ratio)
    return total


def kv_cache_elements(c, context: int) -> int:
    """Cache elements held for `context` tokens, all main layers."""
    if not _compressed(c):
        per_token = sum(c.kv_lora_rank + c.rope_width(layer)
                        for layer in range(c.num_hidden_layers) if c.owns_kv(layer))
        per_token += indexed_layers(c) * c.index_head_dim if _has_indexer(c) else 0
        return per_token * context * blocks_per_layer(c)
    total = 0
    for ratio in c.compress_ratios[: c.num_hidden_layers]:
        total += min(context, c.sliding_window) * c.head_dim
        if ratio:
            total += context // ratio * c.head_dim
        if ratio == CSA_RATIO:
            total += context // ratio * c.index_head_dim
    return total


def kv_cache_bytes(c, context: int) -> int:
    return kv_cache_elements(c, context) * BYTES_PER_ELEMENT
