"""Mistral Large 4's decoder in NumPy: the shared DeepSeek parts plus what it changes.

Shared with `reference.deepseek` (bit-identical functions): RMSNorm, LayerNorm, YaRN
frequencies, interleaved RoPE, the indexer's [rope | nope] rotation and top-k, the router
(softmax, groups by top-2 sum, renormalised, scaled), fused experts, the shared expert and
the dense MLP. New here, each as transformers 5.24's `modular_mistral_large4.py` computes it:
- LeRoPE: YaRN's inverse frequencies times exp(`rotary_emb.alpha`), cos/sin times the rope
  parameters' `attention_factor` (1: no magnitude scaling);
- learned softmax scaling: each query times `scale_h log(t + 1) + bias_h` (attention heads
  and indexer heads, each with its own pair);
- NoPE layers: no rotation, the rotary width joins the non-rotary part;
- KV sharing: a layer whose `kv_source_layers` entry is an earlier layer attends to that
  layer's normed latent and rotated key (its own `kv_b_proj` expands them);
- the indexer's query from the hidden state (LayerNorm, `wq_b`), no RoPE on NoPE layers;
- the latent KV norm uses `rms_norm_eps` (DeepSeek's uses 1e-6);
- logits soft-capped: cap tanh(logits / cap).
Letters as in `reference.deepseek`.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .deepseek import (
    F32,
    INDEXER_NORM_EPS,
    _rope_first,
    activation,
    apply_rope,
    layer_norm,
    mlp,
    moe,
    rms_norm,
    rope_frequencies,
    rope_magnitude,
    softmax,
    top_keys,
)
from .deepseek import Model as DeepseekModel
from .weights import Config, Weights

Rope = tuple[np.ndarray, np.ndarray]


def lerope_tables(config: Config, w: Weights, positions: np.ndarray) -> Rope:
    """cos and sin per position and rotation pair, YaRN frequencies times exp(alpha).  [t, i]"""
    inv_freq = (rope_frequencies(config).astype(F32)
                * np.exp(w.read(w.name("rope_alpha"))).astype(F32))  # [i]
    angles = positions.astype(F32)[:, None] * inv_freq[None, :]  # [t, i]
    factor = getattr(config.rope_scaling, "attention_factor", None)
    m = F32(rope_magnitude(config) if factor is None else factor)
    return np.cos(angles) * m, np.sin(angles) * m


def query_scaling(w: Weights, role: str, layer: int, T: int) -> np.ndarray:
    """scale_h log(t + 1) + bias_h, what each head's query is multiplied by.  -> [t, h]"""
    log_pos = np.log(np.arange(1, T + 1, dtype=F32))  # [t]
    scale, bias = (w.read(w.name(f"{role}.{part}", layer)) for part in ("scale", "bias"))
    return log_pos[:, None] * scale[None, :] + bias[None, :]


def indexer_selection(config: Config, w: Weights, layer: int, x: np.ndarray,
                      rope: Rope) -> np.ndarray:
    """The keys each query may attend to: its causal top-`index_topk` by indexer score, the
    indexer's query read from the hidden state.  x: [t, d] -> bool [t, s]"""
    T = x.shape[0]
    J, X = config.index_n_heads, config.index_head_dim
    normed = layer_norm(x, w.read(w.name("indexer.q_input_norm", layer)),
                        w.read(w.name("indexer.q_input_norm_bias", layer)), INDEXER_NORM_EPS)
    q = w.linear(normed, w.name("indexer.wq_b", layer)).reshape(T, J, X)  # [t, j, x]
    q = q * query_scaling(w, "indexer.scaling", layer, T)[..., None]
    k = layer_norm(w.linear(x, w.name("indexer.wk", layer)),  # [s, x]
                   w.read(w.name("indexer.k_norm", layer)),
                   w.read(w.name("indexer.k_norm_bias", layer)), INDEXER_NORM_EPS)
    if config.uses_rope(layer):
        r = config.qk_rope_head_dim
        q, k = _rope_first(q, r, rope, True), _rope_first(k, r, rope, True)
    head_weights = w.linear(x, w.name("indexer.weights_proj", layer)) * F32(J ** -0.5)  # [t, j]
    score = np.zeros((T, T), dtype=F32)  # [t, s]
    for j in range(J):
        score += np.maximum(q[:, j] @ k.T * F32(X ** -0.5), F32(0.0)) * head_weights[:, j, None]
    causal = ~np.triu(np.ones((T, T), dtype=bool), k=1)  # [t, s]
    return top_keys(np.where(causal, score, -np.inf).astype(F32), config.index_topk)


def attention(config: Config, w: Weights, layer: int, x: np.ndarray, rope: Rope,
              state: dict) -> np.ndarray:
    """MLA without q compression, per-layer rotary width, shared latents, learned query
    scaling, DSA selection.  x: [t, d] -> [t, d]; `state` carries the latents and the last
    indexer selection between the layers of one pass."""
    T, H = x.shape[0], config.num_attention_heads
    c, v = config.kv_lora_rank, config.v_head_dim
    r = config.rope_width(layer)  # 0 on NoPE layers
    n = config.qk_head_dim - r
    q = w.linear(x, w.name("wq", layer)).reshape(T, H, n + r)  # [t, h, n+r]
    q_nope, q_rot = q[..., :n], q[..., n:]
    if r:
        q_rot = apply_rope(q_rot, *rope)
    if config.owns_kv(layer):
        kv = w.linear(x, w.name("wkv_a", layer))  # [s, c+r]
        latent = rms_norm(kv[:, :c], w.read(w.name("kv_norm", layer)), config.rms_norm_eps)
        k_rot = apply_rope(kv[:, c:], *rope) if r else kv[:, c:]  # [s, r]
        state[("kv", layer)] = latent, k_rot
    else:
        latent, k_rot = state[("kv", config.kv_source(layer))]
    kv = w.linear(latent, w.name("wkv_b", layer)).reshape(T, H, n + v)  # [s, h, n+v]
    k_nope, value = kv[..., :n], kv[..., n:]
    scores = (np.einsum("thn,shn->hts", q_nope, k_nope)
              + np.einsum("thr,sr->hts", q_rot, k_rot))  # [h, t, s]
    scaling = query_scaling(w, "attn_scaling", layer, T)  # [t, h]
    scores = scores * scaling.T[:, :, None] * F32(config.softmax_scale())
    if config.indexer_full(layer):
        state["selection"] = indexer_selection(config, w, layer, x, rope)
    elif "selection" not in state:
        raise ConfigError(f"layer {layer}: a shared-indexer layer needs the layers before it "
                          f"run in the same pass")
    probs = softmax(np.where(state["selection"], scores, -np.inf).astype(F32))  # [h, t, s]
    out = np.einsum("hts,shv->thv", probs, value).reshape(T, H * v)  # [t, h*v]
    return w.linear(out, w.name("wo", layer))  # [t, d]


def block(config: Config, w: Weights, layer: int, x: np.ndarray, rope: Rope,
          state: dict) -> np.ndarray:
    """Pre-norm residual block.  [t, d] -> [t, d]"""
    eps = config.rms_norm_eps
    x = x + attention(config, w, layer, rms_norm(x, w.read(w.name("attn_norm", layer)), eps),
                      rope, state)
    h = rms_norm(x, w.read(w.name("ffn_norm", layer)), eps)
    if config.is_moe_layer(layer):
        return x + moe(config, w, layer, h)
    return x + mlp(w, h, *(w.name(role, layer) for role in ("mlp.w1", "mlp.w3", "mlp.w2")),
                   act=activation(config))


class Model(DeepseekModel):
    """Mistral Large 4's language model over one `TensorSource` (the family's decoder hook)."""

    def rope(self, positions: np.ndarray) -> Rope:
        return lerope_tables(self.config, self.weights, positions)

    def block(self, layer: int, x: np.ndarray, rope: Rope, state: dict) -> np.ndarray:
        return block(self.config, self.weights, layer, x, rope, state)

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        """Final norm, lm_head, soft-capping.  [t, d] -> [t, o]"""
        logits = super().logits(hidden)
        cap = self.config.final_logit_softcapping
        return logits if not cap else (F32(cap) * np.tanh(logits / F32(cap))).astype(F32)
