"""The DeepSeek V2 / V2.5 / V3 / V3.2 decoder in NumPy: float32, causal, one sequence.

Reads top to bottom in forward order: RMSNorm, YaRN RoPE, V3.2's lightning indexer, MLA
attention (restricted to the indexer's keys under V3.2), the router
(greedy, group_limited_greedy, noaux_tc), experts, MoE, dense MLP, decoder block, model,
MTP module. Every rule follows DeepSeek's code (docs/architecture.md §5-§7); the
differences between generations are branches on config fields (`topk_method`,
`scoring_func`, `norm_topk_prob`, `q_lora_rank`, `rope_scaling`, `first_k_dense_replace`,
`moe_layer_freq`), never on a dimension.

Weights come from a `Weights` (reference/weights.py): read when needed, dropped after use,
so memory stays at one layer's non-expert tensors plus one expert (less when the source
streams row slices).

Einsum letters, used in the code and in the shape comments:
    t  query position           s  key position (both index the same T tokens)
    h  attention head           d  model width (hidden_size)
    n  qk_nope_head_dim         r  qk_rope_head_dim (rotary part of q and k)
    v  v_head_dim               c  kv_lora_rank (compressed KV latent)
    q  q_lora_rank              i  rotation pair (r / 2)
    e  routed expert            k  routed-expert slot of a token (num_experts_per_tok)
    g  expert group (g' kept)   f  MLP width
    o  vocabulary               j  indexer head (index_n_heads)
    x  indexer head width (index_head_dim)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from ..configs.parse import yarn_mscale
from ..errors import ArgumentError, ConfigError
from ..families import family_of
from .weights import Config, TensorSource, Weights

# q_a_layernorm / kv_a_layernorm are built without an eps argument in DeepSeek's modeling
# code and in transformers, so they use the RMSNorm default, not config.rms_norm_eps.
LATENT_NORM_EPS = 1e-6
# The indexer's k_norm is a LayerNorm built with eps=1e-6 in DeepSeek's and transformers' code.
INDEXER_NORM_EPS = 1e-6
# The renormalisation of top-k weights adds this in HF's modeling code (DeepSeek's own
# inference code adds nothing; the difference is below float32 resolution).
TOPK_NORM_EPS = 1e-20

F32 = np.float32


# -- norms and activations -------------------------------------------------------------
def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """weight * x / sqrt(mean(x^2) + eps), in float32."""
    x = x.astype(F32, copy=False)
    variance = np.mean(x * x, axis=-1, keepdims=True)  # [t, 1]
    return weight * (x * (F32(1.0) / np.sqrt(variance + F32(eps))))


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """weight * (x - mean) / sqrt(var + eps) + bias over the last axis, in float32."""
    x = x.astype(F32, copy=False)
    centred = x - np.mean(x, axis=-1, keepdims=True)
    variance = np.mean(centred * centred, axis=-1, keepdims=True)
    return weight * (centred * (F32(1.0) / np.sqrt(variance + F32(eps)))) + bias


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return z / np.sum(z, axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-x) -> inf gives exactly 0, as in torch
        return F32(1.0) / (F32(1.0) + np.exp(-x))


def silu(x: np.ndarray) -> np.ndarray:
    return x * sigmoid(x)


def _gelu_erf(x: np.ndarray) -> np.ndarray:
    erf = np.frompyfunc(math.erf, 1, 1)  # NumPy has no erf; exact GELU needs it
    return (x * F32(0.5) * (F32(1.0) + erf(x / math.sqrt(2.0)).astype(F32))).astype(F32)


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    inner = F32(math.sqrt(2.0 / math.pi)) * (x + F32(0.044715) * x * x * x)
    return F32(0.5) * x * (F32(1.0) + np.tanh(inner))


# transformers' ACT2FN names (activations.py) the forward computes: "gelu" is the exact
# (erf) GELU, "gelu_new" and "gelu_pytorch_tanh" its tanh approximation.
ACTIVATIONS = {"silu": silu, "swish": silu, "gelu": _gelu_erf, "gelu_new": _gelu_tanh,
               "gelu_pytorch_tanh": _gelu_tanh, "relu": lambda x: np.maximum(x, F32(0.0))}


def activation(config: Config):
    """The experts' and MLPs' activation named by `hidden_act` (ConfigError for another)."""
    name = config.hidden_act
    if name not in ACTIVATIONS:
        raise ConfigError(f"hidden_act: the NumPy forward computes {', '.join(ACTIVATIONS)}; "
                          f"found {name!r}")
    return ACTIVATIONS[name]


# -- rotary embedding --------------------------------------------------------------------
def rope_frequencies(config: Config) -> np.ndarray:
    """Inverse frequencies of the r/2 rotation pairs, YaRN-blended when configured.  # [i]

    YaRN keeps the high-frequency pairs (more than beta_fast rotations over the original
    length), divides the low-frequency ones (fewer than beta_slow) by `factor`, and ramps
    linearly between the two boundary pair indices (floored / ceiled, as DeepSeek does).
    """
    dim, base = config.qk_rope_head_dim, config.rope_theta
    inv_freq = 1.0 / base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)  # [i]
    rs = config.rope_scaling
    if rs is None:
        return inv_freq

    def pair_for(rotations: float) -> float:  # pair index that turns `rotations` times
        return dim * math.log(rs.original_max_position_embeddings / (rotations * 2 * math.pi)) / (
            2 * math.log(base))

    low = max(math.floor(pair_for(rs.beta_fast)), 0)
    high = min(math.ceil(pair_for(rs.beta_slow)), dim - 1)
    if low == high:
        high += 0.001  # DeepSeek's guard against a zero-width ramp
    ramp = np.clip((np.arange(dim // 2) - low) / (high - low), 0.0, 1.0)  # [i]
    keep = 1.0 - ramp  # 1 = original frequency (extrapolate), 0 = divided by factor
    return inv_freq / rs.factor * (1.0 - keep) + inv_freq * keep


def rope_magnitude(config: Config) -> float:
    """cos/sin scale mscale(factor, mscale) / mscale(factor, mscale_all_dim) (HF remote code);
    1.0 for every shipped config, where the two are equal."""
    rs = config.rope_scaling
    if rs is None:
        return 1.0
    return yarn_mscale(rs.factor, rs.mscale) / yarn_mscale(rs.factor, rs.mscale_all_dim)


def rope_tables(config: Config, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin per position and rotation pair.  # [t, i], [t, i]"""
    angles = np.outer(positions.astype(np.float64), rope_frequencies(config))  # [t, i]
    m = rope_magnitude(config)
    return (np.cos(angles) * m).astype(F32), (np.sin(angles) * m).astype(F32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate adjacent pairs (x[2i], x[2i+1]) by angle i: the checkpoint's interleaved layout.

    HF's code de-interleaves to the half-split layout and rotates there; q and k get the
    same permutation, so every q.k product (all attention uses) is identical.
    x: [t, ..., r]; cos, sin: [t, i].
    """
    extra = (1,) * (x.ndim - 2)
    cos = cos.reshape(cos.shape[0], *extra, -1)  # [t, (1,) i]
    sin = sin.reshape(sin.shape[0], *extra, -1)
    even, odd = x[..., 0::2], x[..., 1::2]  # [t, ..., i]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = odd * cos + even * sin
    return out


def apply_rope_half_split(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate (x[i], x[i + r/2]) by angle i: the half-split (`rotate_half`) layout that V3.2's
    indexer uses, unlike MLA (DeepSeek's November 2025 fix of its demo code; docs/deepseek_v32.md).
    x: [t, ..., r]; cos, sin: [t, i]."""
    extra = (1,) * (x.ndim - 2)
    cos = cos.reshape(cos.shape[0], *extra, -1)  # [t, (1,) i]
    sin = sin.reshape(sin.shape[0], *extra, -1)
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]  # [t, ..., i]
    return np.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


# -- lightning indexer (V3.2, DeepSeek Sparse Attention) ----------------------------------
def _rope_first(x: np.ndarray, r: int, rope: tuple[np.ndarray, np.ndarray],
                interleaved: bool = False) -> np.ndarray:
    """Half-split (V3.2) or interleaved (GLM-5) RoPE on the FIRST r dims of x, the rest
    passed through ([rope | nope], the opposite order to MLA's [nope | rope])."""
    rotate = apply_rope if interleaved else apply_rope_half_split
    return np.concatenate([rotate(x[..., :r], *rope), x[..., r:]], axis=-1)


def indexer_scores(config: Config, w: Weights, layer: int, x: np.ndarray,
                   q_latent: np.ndarray, rope: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The lightning indexer's score of every key for every query, -inf for future keys.
    x: [t, d], q_latent: [t, q] (MLA's normed compressed query) -> [t, s]

    score[t, s] = sum_j relu(q[t, j] . k[s]) * weights_proj(x)[t, j] * H_I^-1/2 * d_I^-1/2,
    one LayerNorm'd key per token shared by all indexer heads. DeepSeek's kernel also
    Hadamard-rotates and FP8-rounds q and k; the rotation keeps every dot product and the
    rounding is a precision choice, so both are left out here, as transformers does.
    """
    T = x.shape[0]
    J, X, r = config.index_n_heads, config.index_head_dim, config.qk_rope_head_dim
    q = w.linear(q_latent, w.name("indexer.wq_b", layer)).reshape(T, J, X)  # [t, j, x]
    k = layer_norm(w.linear(x, w.name("indexer.wk", layer)),  # [s, x]
                   w.read(w.name("indexer.k_norm", layer)),
                   w.read(w.name("indexer.k_norm_bias", layer)), INDEXER_NORM_EPS)
    pairs = config.indexer_rope_interleaved
    q, k = _rope_first(q, r, rope, pairs), _rope_first(k, r, rope, pairs)
    head_weights = w.linear(x, w.name("indexer.weights_proj", layer)) * F32(J ** -0.5)  # [t, j]
    score = np.zeros((T, T), dtype=F32)  # [t, s]; summed head by head: memory [t, s], not [t, j, s]
    for j in range(J):
        logits = q[:, j] @ k.T * F32(X ** -0.5)  # [t, s]
        score += np.maximum(logits, F32(0.0)) * head_weights[:, j, None]
    causal = ~np.triu(np.ones((T, T), dtype=bool), k=1)  # [t, s]
    return np.where(causal, score, -np.inf).astype(F32)


def top_keys(scores: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """The k best allowed keys of each query (all of them when fewer); `allowed` defaults to
    the finite (causal) scores. V4's indexer uses it too.  [t, s] -> bool [t, s]

    Ties: keys with exactly equal scores are taken earliest position first (a stable sort);
    torch's topk leaves the order among ties unspecified.
    """
    if allowed is None:
        allowed = np.isfinite(scores)
    masked = np.where(allowed, scores, -np.inf)  # [t, s]
    chosen = np.argsort(-masked, axis=-1, kind="stable")[:, :k]  # [t, k]
    selected = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(selected, chosen, True, axis=-1)
    return selected & allowed  # a row with fewer allowed keys than k took others


def indexer_selection(config: Config, w: Weights, layer: int, x: np.ndarray,
                      q_latent: np.ndarray, rope: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Which keys each query may attend to: its causal top-`index_topk` by indexer score.
    -> bool [t, s]"""
    return top_keys(indexer_scores(config, w, layer, x, q_latent, rope), config.index_topk)


# -- attention (MLA) ---------------------------------------------------------------------
def position_query_scale(config: Config, T: int) -> np.ndarray | None:
    """Llama-4's query scaling by position (Mistral 4: `llama_4_scaling_beta` among the rope
    parameters): 1 + beta log(1 + floor(t / original length)); None when not configured.  # [t]"""
    rs = config.rope_scaling
    beta = getattr(rs, "llama_4_scaling_beta", None) if rs is not None else None
    if beta is None:
        return None
    t = np.arange(T, dtype=np.float32)
    return (1 + F32(beta) * np.log1p(np.floor(t / F32(rs.original_max_position_embeddings))))


def attention(config: Config, w: Weights, layer: int, x: np.ndarray,
              rope: tuple[np.ndarray, np.ndarray], selections: dict | None = None) -> np.ndarray:
    """Multi-head latent attention, the naive (non-absorbed) form; under V3.2 each query
    attends only to the keys its indexer selected.  x: [t, d] -> [t, d]"""
    T, H = x.shape[0], config.num_attention_heads
    n, r, v, c = (config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim,
                  config.kv_lora_rank)
    if config.q_lora_rank is None:
        q = w.linear(x, w.name("wq", layer))  # [t, h*(n+r)]
    else:
        q_latent = w.linear(x, w.name("wq_a", layer))  # [t, q]
        q_latent = rms_norm(q_latent, w.read(w.name("q_norm", layer)), LATENT_NORM_EPS)
        q = w.linear(q_latent, w.name("wq_b", layer))  # [t, h*(n+r)]
    latent_scales = config.latent_scales  # LongCat-Flash scales q and the kv latent
    if latent_scales is not None:
        q = q * F32(latent_scales[0])
    q = q.reshape(T, H, n + r)  # [t, h, n+r]
    q_nope, q_pe = q[..., :n], apply_rope(q[..., n:], *rope)  # [t, h, n], [t, h, r]

    kv = w.linear(x, w.name("wkv_a", layer))  # [t, c+r]
    latent, k_pe = kv[:, :c], apply_rope(kv[:, c:], *rope)  # [s, c], [s, r] shared by heads
    latent = rms_norm(latent, w.read(w.name("kv_norm", layer)), LATENT_NORM_EPS)
    if latent_scales is not None:
        latent = latent * F32(latent_scales[1])
    kv = w.linear(latent, w.name("wkv_b", layer)).reshape(T, H, n + v)  # [s, h, n+v]
    k_nope, value = kv[..., :n], kv[..., n:]  # [s, h, n], [s, h, v]

    scores = (np.einsum("thn,shn->hts", q_nope, k_nope)
              + np.einsum("thr,sr->hts", q_pe, k_pe)) * F32(config.softmax_scale())  # [h, t, s]
    query_scale = position_query_scale(config, T)
    if query_scale is not None:
        scores = scores * query_scale[None, :, None]  # = scaling query t
    if config.has_indexer:
        if config.indexer_full(layer):
            allowed = indexer_selection(config, w, layer, x, q_latent, rope)  # [t, s]
            if selections is not None:
                selections["last"] = allowed
        else:  # GLM-5's "shared" layer: the previous full layer's choice
            if selections is None or "last" not in selections:
                raise ConfigError(f"layer {layer}: a shared-indexer layer needs the layers "
                                  f"before it run in the same pass")
            allowed = selections["last"]
    else:
        allowed = ~np.triu(np.ones((T, T), dtype=bool), k=1)  # [t, s] causal
    scores = np.where(allowed, scores, -np.inf).astype(F32)
    probs = softmax(scores)  # [h, t, s]
    out = np.einsum("hts,shv->thv", probs, value).reshape(T, H * v)  # [t, h*v]
    return w.linear(out, w.name("wo", layer))  # [t, d]


# -- router ------------------------------------------------------------------------------
def route(config: Config, x: np.ndarray, gate: np.ndarray,
          bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Experts and their weights per token.  x: [t, d] -> experts [t, k], weights [t, k]

    - scores: softmax (V2) or sigmoid (V3) of the fp32 router logits;
    - `bias` (V3 `e_score_correction_bias`) is added for the choice only;
    - group-limited methods keep `topk_group` groups, ranked by the group's best score
      (group_limited_greedy) or the sum of its best two (noaux_tc); experts of the other
      groups are excluded (-inf, as DeepSeek's inference code);
    - weights are the unbiased scores of the chosen experts. noaux_tc (transformers' V3):
      renormalised when norm_topk_prob, then always x routed_scaling_factor. The softmax
      methods (HF-V2 remote code): renormalised when norm_topk_prob and k > 1, otherwise
      x routed_scaling_factor (transformers' native V2 ignores norm_topk_prob; no shipped
      V2 config sets it). `Config.renormalises_top_k` says which.
    """
    T, E, K = x.shape[0], config.router_slots, config.num_experts_per_tok
    logits = x.astype(F32) @ gate.T  # [t, e]
    scores = softmax(logits) if config.scoring_func == "softmax" else sigmoid(logits)  # [t, e]
    choice = scores if bias is None else scores + bias  # [t, e]
    if config.topk_method != "greedy":
        G = config.n_group
        grouped = choice.reshape(T, G, E // G)  # [t, g, e/g]
        if config.groups_ranked_by_top2:
            group_score = -np.sort(-grouped, axis=-1)[..., :2].sum(-1)  # [t, g]
        else:
            group_score = grouped.max(-1)  # [t, g]
        kept = np.argsort(-group_score, axis=-1, kind="stable")[:, :config.topk_group]  # [t, g']
        group_mask = np.zeros((T, G), dtype=bool)
        np.put_along_axis(group_mask, kept, True, axis=-1)
        choice = np.where(np.repeat(group_mask, E // G, axis=-1), choice, -np.inf)  # [t, e]
    experts = np.argsort(-choice, axis=-1, kind="stable")[:, :K]  # [t, k]
    weights = np.take_along_axis(scores, experts, axis=-1)  # [t, k]
    renormalise = config.renormalises_top_k
    if renormalise:
        weights = weights / (weights.sum(-1, keepdims=True) + F32(TOPK_NORM_EPS))
    if config.scales_renormalised_weights or not renormalise:
        weights = weights * F32(config.routed_scaling_factor)
    return experts, weights.astype(F32)


# -- feed-forward ------------------------------------------------------------------------
def mlp(w: Weights, x: np.ndarray, w1: str, w3: str, w2: str, act=silu) -> np.ndarray:
    """Gated MLP: w2(act(w1 x) * w3 x), SwiGLU for silu.  x: [t, d] -> [t, d]"""
    hidden = act(w.linear(x, w1))  # [t, f]
    hidden *= w.linear(x, w3)
    return w.linear(hidden, w2)  # [t, d]


def fused_expert(w: Weights, layer: int, e: int, x: np.ndarray, act) -> np.ndarray:
    """Expert `e` of fused tensors: gate_up [E, 2I, H] (gate rows, then up rows) and down
    [E, H, I], only expert e's slice read.  x: [t, d] -> [t, d]"""
    gate_up = w.rows(w.name("experts.gate_up", layer), [e])[0]  # [2I, H]
    gate, up = np.split(x @ gate_up.T, 2, axis=-1)  # [t, I], [t, I]
    return (act(gate) * up) @ w.rows(w.name("experts.down", layer), [e])[0].T  # [t, d]


def moe(config: Config, w: Weights, layer: int, x: np.ndarray) -> np.ndarray:
    """Routed experts (each read only if a token chose it, then dropped) plus shared ones."""
    bias = w.read(w.name("gate_bias", layer)) if config.has_score_bias else None
    experts, weights = route(config, x, w.read(w.name("gate", layer)), bias)  # [t, k], [t, k]
    act = activation(config)
    y = np.zeros_like(x)  # [t, d]
    fused = w.has("experts.gate_up")  # all experts in one tensor per layer (Mistral 4)
    for e in np.unique(experts):
        tokens, slots = np.nonzero(experts == e)  # a token picks an expert at most once
        if e >= config.n_routed_experts:  # a zero-computation slot: the token itself
            out = x[tokens]
        elif fused:
            out = fused_expert(w, layer, int(e), x[tokens], act)
        else:
            names = (w.name(role, layer, int(e)) for role in ("expert.w1", "expert.w3",
                                                               "expert.w2"))
            out = mlp(w, x[tokens], *names, act=act)
        y[tokens] += out * weights[tokens, slots, None]
    if config.n_shared_experts:
        y += mlp(w, x, *(w.name(role, layer) for role in ("shared.w1", "shared.w3", "shared.w2")),
                 act=act)
    return y


# -- decoder block and model -------------------------------------------------------------
def block(config: Config, w: Weights, layer: int, x: np.ndarray,
          rope: tuple[np.ndarray, np.ndarray], selections: dict | None = None) -> np.ndarray:
    """Pre-norm residual block: x + attn(norm(x)), then + ffn(norm(x)).  [t, d] -> [t, d]"""
    eps = config.rms_norm_eps
    normed = rms_norm(x, w.read(w.name("attn_norm", layer)), eps)
    x = x + attention(config, w, layer, normed, rope, selections)
    h = rms_norm(x, w.read(w.name("ffn_norm", layer)), eps)
    if config.is_moe_layer(layer):
        return x + moe(config, w, layer, h)
    return x + mlp(w, h, *(w.name(role, layer) for role in ("mlp.w1", "mlp.w3", "mlp.w2")),
                   act=activation(config))


def token_ids(tokens: Sequence[int], config) -> np.ndarray:
    """Token ids as int64 [t]; ConfigError for none, or one outside [0, vocab_size);
    ArgumentError for more tokens than this machine's memory holds the pass of."""
    tokens = [int(t) for t in np.asarray(tokens, dtype=object).reshape(-1)]
    if not tokens:
        raise ConfigError("tokens: need at least one token id")
    vocab_size = config.vocab_size
    bad = next((t for t in tokens if not 0 <= t < vocab_size), None)  # Python ints: no overflow
    if bad is not None:
        raise ConfigError(f"tokens: id {bad} is outside the vocabulary [0, {vocab_size})")
    need, have = forward_bytes(config, len(tokens)), available_memory()
    if have is not None and need > have:
        raise ArgumentError(f"tokens: {len(tokens):,} tokens need about {need / 2**30:,.1f} GiB "
                            f"for the forward pass ({config.num_attention_heads} heads of "
                            f"{len(tokens):,}^2 attention scores, {vocab_size:,}-wide logits), "
                            f"more than the {have / 2**30:,.1f} GiB available; pass fewer tokens")
    return np.asarray(tokens, dtype=np.int64)  # [t]


def forward_bytes(config, t: int) -> int:
    """What a t-token pass holds at its peak, estimated from above: one layer's float32
    attention scores and probabilities for every head, and per token the logits and a few
    hidden-width activations (weights are read a tensor at a time)."""
    heads = getattr(config, "num_attention_heads", 1)
    return 8 * heads * t * t + 4 * t * (config.vocab_size + 32 * config.hidden_size)


def available_memory() -> int | None:
    """Bytes this machine can still give (MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Model:
    """The decoder over one `TensorSource`; nothing is held between calls.

    Args:
        source: a `TensorSource` or an existing `Weights` over one.
    """

    def __init__(self, source: TensorSource | Weights):
        self.weights = source if isinstance(source, Weights) else Weights(source)
        self.config: Config = self.weights.config
        activation(self.config)  # refuse an activation it cannot compute before any work

    def check_tokens(self, tokens: Sequence[int]) -> np.ndarray:
        return token_ids(tokens, self.config)

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        w = self.weights
        return w.rows(w.name("embed"), tokens)  # [t, d]

    def hidden_states(self, tokens: Sequence[int], layers: int | None = None
                      ) -> Iterator[tuple[int, np.ndarray]]:
        """(layer, hidden states after it) for the first `layers` layers (all by default)."""
        ids = self.check_tokens(tokens)
        n = self.config.num_hidden_layers if layers is None else layers
        if not 0 <= n <= self.config.num_hidden_layers:
            raise ConfigError(f"layers: must be in [0, {self.config.num_hidden_layers}], "
                              f"found {n}")
        rope = self.rope(np.arange(len(ids)))
        x = self.embed(ids)  # [t, d]
        state: dict = {}  # what later layers reuse (GLM-5's shared-indexer layers: the selection)
        for layer in range(n):
            x = self.block(layer, x, rope, state)
            yield layer, x

    # a derived family's decoder overrides these two (reference/mistral_large4.py)
    def rope(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return rope_tables(self.config, positions)

    def block(self, layer: int, x: np.ndarray, rope: tuple[np.ndarray, np.ndarray],
              state: dict) -> np.ndarray:
        return block(self.config, self.weights, layer, x, rope, state)

    def final_norm(self, hidden: np.ndarray) -> np.ndarray:
        w = self.weights
        return rms_norm(hidden, w.read(w.name("norm")), self.config.rms_norm_eps)  # [t, d]

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        """Final norm and lm_head.  [t, d] -> [t, o]"""
        return self.weights.linear(self.final_norm(hidden), self.weights.name("head"))

    def forward(self, tokens: Sequence[int], layers: int | None = None) -> np.ndarray:
        """Logits [t, o]; with `layers`, the hidden states [t, d] after that many layers."""
        x = None
        for _, x in self.hidden_states(tokens, layers):
            pass
        if x is None:  # layers == 0: the embeddings
            return self.embed(self.check_tokens(tokens))
        return x if layers is not None else self.logits(x)

    def mtp_logits(self, tokens: Sequence[int], normed: np.ndarray, depth: int = 0) -> np.ndarray:
        """Logits of MTP module `depth` (V3): the row for position t predicts token t+2.

        As vLLM's DeepSeek MTP: at position t the module reads the embedding of token t+1
        (zeroed at position 0) and the main model's final-norm output at t,
        x = eh_proj([enorm(embedding); hnorm(normed)]), runs one full MoE decoder layer and
        its own shared_head (norm + head).  normed: [t, d] -> [t-1, o]
        """
        c, w = self.config, self.weights
        if not 0 <= depth < c.num_mtp_layers:
            raise ConfigError(f"mtp: the config has {c.num_mtp_layers} MTP module(s), "
                              f"no depth {depth}")
        ids = self.check_tokens(tokens)
        if len(ids) < 2:
            raise ConfigError("tokens: the MTP module needs at least two tokens")
        layer = c.num_hidden_layers + depth
        nxt = w.rows(w.name("mtp.embed", layer), ids[1:])  # [t-1, d]
        nxt[0] = 0.0
        e = rms_norm(nxt, w.read(w.name("mtp.enorm", layer)), c.rms_norm_eps)
        h = rms_norm(normed[:-1], w.read(w.name("mtp.hnorm", layer)), c.rms_norm_eps)
        x = w.linear(np.concatenate([e, h], axis=-1), w.name("mtp.eh_proj", layer))  # [t-1, d]
        x = block(c, w, layer, x, rope_tables(c, np.arange(len(ids) - 1)))
        x = rms_norm(x, w.read(w.name("mtp.norm", layer)), c.rms_norm_eps)
        return w.linear(x, w.name("mtp.head", layer))  # [t-1, o]


def forward(source: TensorSource, tokens: Sequence[int], layers: int | None = None) -> np.ndarray:
    """Logits [T, vocab] of `tokens` (positions 0..T-1); with `layers`, hidden [T, hidden]:
    the decoder of the source's family (its `decoder` hook; this module's by default)."""
    return family_of(source.config).hook("decoder")(source).forward(tokens, layers)
