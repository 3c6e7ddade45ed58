"""The DeepSeek-V4 decoder in NumPy: float32, causal, one sequence (prefill).

Reads top to bottom in forward order: norms and activations, interleaved RoPE (plain for
sliding-window layers, YaRN for compressed ones), hyper-connections (mHC) with Sinkhorn,
the KV compressor, the CSA indexer, shared-KV attention with sinks and the grouped output
projection, the router (learned or hashed), clipped SwiGLU experts, MoE, decoder block,
model, MTP module. The facts and their public sources are in docs/deepseek_v4_forward.md;
transformers' `DeepseekV4ForCausalLM` and DeepSeek's `inference/model.py` compute the same
function up to the indexer's top-k tie order (see `select_compressed`).

The config is any object with the Hub `config.json` keys as attributes (`hc_mult`,
`compress_ratios`, `index_topk`, ...). Weights come by Hub tensor name from a `V4Weights`
(reference/v4_weights.py), read when needed and dropped after use; each read states the
shape the maths expects, so a wrong tensor fails with its name before any arithmetic.

Einsum letters, used in the code and in the shape comments:
    t  query position          s  key position (window keys; both index the T tokens)
    c  compressed entry         w  slot in a compression window (ratio, or 2 x ratio)
    h  attention head           a  head_dim (512: key = value = one shared head)
    d  hidden_size              m  hyper-connection stream (hc_mult); j, k two of them
    q  q_lora_rank              i  rotation pair (qk_rope_head_dim / 2)
    x  indexer head             y  index_head_dim
    g  output group (o_groups)  r  o_lora_rank
    e  routed expert            k  routed-expert slot of a token (num_experts_per_tok)
    f  moe_intermediate_size    o  vocabulary
    z  one output group's inputs (h*a / g)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from ..errors import ConfigError
from ..families.deepseek_v4 import LAYER_PREFIX, MTP_PREFIX
from ..families.deepseek_v4 import native_name as N  # every tensor name: the family's rows
from .deepseek import sigmoid, silu, softmax, token_ids, top_keys  # shared with V3 / V3.2
from .v4_weights import V4Weights

F32 = np.float32
NEG_INF = F32(-np.inf)
# compress_ratios entries: 0 = sliding window only; 4 = CSA (overlapping windows, with an
# indexer); 128 = HCA (disjoint windows, every visible entry). transformers accepts only
# these three and DeepSeek's code ties the overlap and the indexer to ratio 4.
SLIDING, CSA, HCA = 0, 4, 128
# Scores of one block of queries (attention [h, t, keys], indexer [t, x, c]) stay within this
# many float32 bytes: long prompts are processed query block by query block.
SCORE_BYTES = 64 << 20
# The top-k weights are renormalised with this added (transformers; DeepSeek adds nothing,
# the difference is below float32 resolution).
TOPK_NORM_EPS = 1e-20


# -- norms and activations ---------------------------------------------------------------
def rms_norm(x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
    """weight * x / sqrt(mean(x^2) + eps) over the last axis; no weight = unweighted."""
    x = x.astype(F32, copy=False)
    y = x * (F32(1.0) / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + F32(eps)))
    return y if weight is None else weight * y


def score_function(name: str, logits: np.ndarray) -> np.ndarray:
    """Router scores: V4 ships sqrt(softplus); sigmoid and softmax are the older choices."""
    if name == "sqrtsoftplus":
        return np.sqrt(np.logaddexp(F32(0.0), logits)).astype(F32)
    if name == "sigmoid":
        return sigmoid(logits)
    if name == "softmax":
        return softmax(logits)
    raise ConfigError(f"config: scoring_func must be sqrtsoftplus, sigmoid or softmax, "
                      f"found {name!r}")


# -- rotary embedding ----------------------------------------------------------------------
def _param(obj, key: str, default=None):
    """A rope_scaling field whether the config holds a dict or a model."""
    value = obj.get(key, default) if isinstance(obj, dict) else getattr(obj, key, default)
    return default if value is None else value


def rope_frequencies(config, compressed: bool) -> np.ndarray:
    """Inverse frequencies of the rotation pairs.  # [i]

    Sliding-window layers rotate with `rope_theta`, unscaled. Layers with a compressor (and
    their compressor and indexer) rotate with `compress_rope_theta` and YaRN's frequency
    blend when `rope_scaling` is set: pairs turning more than beta_fast times over the
    original length keep their frequency, fewer than beta_slow are divided by `factor`,
    with a linear ramp between the floored / ceiled boundary pairs. cos/sin stay unscaled.
    """
    dim = config.qk_rope_head_dim
    base = config.compress_rope_theta if compressed else config.rope_theta
    inv_freq = 1.0 / base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)  # [i]
    rs = getattr(config, "rope_scaling", None)
    if not compressed or not rs:
        return inv_freq
    factor = _param(rs, "factor")
    original = _param(rs, "original_max_position_embeddings")

    def pair_for(rotations: float) -> float:  # the pair that turns `rotations` times
        return dim * np.log(original / (rotations * 2 * np.pi)) / (2 * np.log(base))

    low = max(int(np.floor(pair_for(_param(rs, "beta_fast", 32)))), 0)
    high = min(int(np.ceil(pair_for(_param(rs, "beta_slow", 1)))), dim - 1)
    ramp = np.clip((np.arange(dim // 2) - low) / ((high - low) or 0.001), 0.0, 1.0)  # [i]
    keep = 1.0 - ramp  # 1 = original frequency, 0 = divided by factor
    return inv_freq / factor * (1.0 - keep) + inv_freq * keep


def rope_tables(config, positions: np.ndarray, compressed: bool) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin per position and rotation pair.  # [t, i], [t, i]"""
    angles = np.outer(positions.astype(np.float64), rope_frequencies(config, compressed))
    return np.cos(angles).astype(F32), np.sin(angles).astype(F32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, inverse: bool = False
               ) -> np.ndarray:
    """Rotate the adjacent pairs (x[2i], x[2i+1]) of the LAST 2 x i dims by angle i (the
    conjugate angle with `inverse`); the leading dims pass through.
    x: [t, ..., a]; cos, sin: [t, i]."""
    rd = 2 * cos.shape[-1]
    extra = (1,) * (x.ndim - 2)
    cos = cos.reshape(cos.shape[0], *extra, -1)  # [t, (1,) i]
    sin = sin.reshape(sin.shape[0], *extra, -1)
    if inverse:
        sin = -sin
    out = x.astype(F32, copy=True)
    even, odd = x[..., -rd::2], x[..., -rd + 1::2]  # [t, ..., i]
    out[..., -rd::2] = even * cos - odd * sin
    out[..., -rd + 1::2] = odd * cos + even * sin
    return out


# -- hyper-connections (mHC) ---------------------------------------------------------------
def hc_mixes(config, streams: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Per-token mixing logits from the RMS-normalised, flattened streams.
    streams: [t, m, d], fn: [n, m*d] -> [t, n]"""
    flat = streams.reshape(streams.shape[0], -1)  # [t, m*d]
    return rms_norm(flat, None, config.rms_norm_eps) @ fn.T


def sinkhorn(comb: np.ndarray, iters: int, eps: float) -> np.ndarray:
    """Near doubly-stochastic mixing matrices, as DeepSeek's kernel: columns normalised
    once, then (iters - 1) x (rows, columns), eps in each denominator.  [t, j, k]"""
    comb = comb / (comb.sum(axis=-2, keepdims=True) + F32(eps))
    for _ in range(iters - 1):
        comb = comb / (comb.sum(axis=-1, keepdims=True) + F32(eps))
        comb = comb / (comb.sum(axis=-2, keepdims=True) + F32(eps))
    return comb


def hc_pre(config, w: V4Weights, block: str, where: str, streams: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Collapse the streams into the sublayer input; also the weights for `hc_post`.

    `where` is "attn" or "ffn" of the block `block` ('layers.3.'): its hc_fn
    [(2+m)*m, m*d], hc_base [(2+m)*m], hc_scale [3].
    Returns collapsed [t, d], post [t, m], comb [t, j, k].
    """
    m, d, eps = config.hc_mult, config.hidden_size, config.hc_eps
    n = (2 + m) * m
    mixes = hc_mixes(config, streams, w.read(N(f"hc_{where}_fn", block), (n, m * d)))  # [t, n]
    base = w.read(N(f"hc_{where}_base", block), (n,))
    scale = w.read(N(f"hc_{where}_scale", block), (3,))
    pre = sigmoid(mixes[:, :m] * scale[0] + base[:m]) + F32(eps)  # [t, m]
    post = F32(2.0) * sigmoid(mixes[:, m:2 * m] * scale[1] + base[m:2 * m])  # [t, m]
    logits = (mixes[:, 2 * m:] * scale[2] + base[2 * m:]).reshape(-1, m, m)  # [t, j, k]
    comb = sinkhorn(softmax(logits) + F32(eps), config.hc_sinkhorn_iters, eps)
    collapsed = np.einsum("tm,tmd->td", pre, streams)  # [t, d]
    return collapsed, post, comb


def hc_post(out: np.ndarray, streams: np.ndarray, post: np.ndarray, comb: np.ndarray
            ) -> np.ndarray:
    """Expand the sublayer output into the streams: stream k gets post[k] x out plus
    sum_j comb[j, k] x stream j (comb is applied transposed).  -> [t, m, d]"""
    return post[:, :, None] * out[:, None, :] + np.einsum("tjk,tjd->tkd", comb, streams)


def _head_role(role: str, mtp: str) -> str:
    """The model's own final rows, or those of the MTP block `mtp` ('mtp.0.')."""
    return "mtp." + role if mtp else role


def hc_head(config, w: V4Weights, mtp: str, streams: np.ndarray) -> np.ndarray:
    """Fold the streams into one before the final norm: weights sigmoid(...) + eps, no
    Sinkhorn.  mtp '' (model) or 'mtp.0.'.  [t, m, d] -> [t, d]"""
    m, d = config.hc_mult, config.hidden_size
    fn, base, scale = (N(_head_role(f"hc_head_{x}", mtp), mtp) for x in ("fn", "base", "scale"))
    mixes = hc_mixes(config, streams, w.read(fn, (m, m * d)))  # [t, m]
    base, scale = w.read(base, (m,)), w.read(scale, (1,))
    pre = sigmoid(mixes * scale[0] + base) + F32(config.hc_eps)  # [t, m]
    return np.einsum("tm,tmd->td", pre, streams)


# -- compressor and indexer ----------------------------------------------------------------
def compress(config, w: V4Weights, block: str, kind: str, x: np.ndarray, ratio: int,
             head: int) -> np.ndarray:
    """Pool each full window of `ratio` tokens into one entry.  x: [t, d] -> [c, head]

    `kind` is the compressor's rows: "compressor." (the attention's) or
    "indexer.compressor." (the indexer's).

    Per channel, a softmax over the window's slots of (gate + ape) weighs the projected
    values. With the CSA ratio the windows overlap: each token projects two series
    (2 x head channels); entry c pools window c's second series with window c-1's first
    (absent for c = 0). Then RMSNorm and RoPE at the window's first position c x ratio.
    Tokens after the last full window do not contribute yet.
    """
    T, d = x.shape
    overlap = ratio == CSA
    width = (2 if overlap else 1) * head
    n = T // ratio
    if n == 0:
        return np.zeros((0, head), F32)
    xs = x[:n * ratio]
    kv = w.linear(xs, N(kind + "wkv", block), width).reshape(n, ratio, width)  # [c, w, 2y]
    gate = w.linear(xs, N(kind + "wgate", block), width).reshape(n, ratio, width)
    gate = gate + w.read(N(kind + "ape", block), (ratio, width))  # [c, w, 2y]
    if overlap:
        kv_slots = np.zeros((n, 2 * ratio, head), F32)  # [c, 2w, y]
        gate_slots = np.full((n, 2 * ratio, head), NEG_INF, F32)
        kv_slots[:, ratio:], gate_slots[:, ratio:] = kv[..., head:], gate[..., head:]
        kv_slots[1:, :ratio], gate_slots[1:, :ratio] = kv[:-1, :, :head], gate[:-1, :, :head]
        kv, gate = kv_slots, gate_slots
    pooled = np.sum(softmax(gate, axis=1) * kv, axis=1)  # [c, y]
    pooled = rms_norm(pooled, w.read(N(kind + "norm", block), (head,)), config.rms_norm_eps)
    cos, sin = rope_tables(config, np.arange(n) * ratio, compressed=True)
    return apply_rope(pooled, cos, sin)  # [c, y]


def visible_entries(T: int, n: int, ratio: int) -> np.ndarray:
    """Entry c is visible to query t once its whole window is: c < (t + 1) // ratio."""
    return np.arange(n)[None, :] < ((np.arange(T) + 1) // ratio)[:, None]  # [t, c]


def select_compressed(scores: np.ndarray, visible: np.ndarray, topk: int) -> np.ndarray:
    """The indexer's choice: per query, the `topk` highest-scoring visible entries.

    Tie rule: among equal scores the earlier entry wins (a stable sort on -score). The
    indexer's scores are sums of ReLUs, so exact ties (often at 0) do occur; transformers
    and DeepSeek leave their order to torch.topk. Returns a mask [t, c].
    """
    return top_keys(scores, topk, visible)  # V3.2's selection, same tie rule


def query_blocks(T: int, per_query_bytes: int, most: int | None = None
                 ) -> Iterator[tuple[int, int]]:
    """[t0, t1) ranges of at most `most` queries whose scores fit SCORE_BYTES."""
    step = max(1, min(SCORE_BYTES // max(per_query_bytes, 1), most or T))
    for t0 in range(0, T, step):
        yield t0, min(T, t0 + step)


def indexer_scores(config, w: V4Weights, block: str, x: np.ndarray, q_latent: np.ndarray,
                   rope: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The lightning indexer's score of every (query, compressed entry).  -> [t, c]

    score[t, c] = sum_x relu(q[t, x] . k[c]) / sqrt(y) * weights_proj(x_t)[x] / sqrt(n_x),
    where k are the entries of the indexer's own (y-wide, overlapping) compressor.
    """
    T = x.shape[0]
    X, Y = config.index_n_heads, config.index_head_dim
    keys = compress(config, w, block, "indexer.compressor.", x, CSA, Y)  # [c, y]
    q = w.linear(q_latent, N("indexer.wq_b", block), X * Y).reshape(T, X, Y)  # [t, x, y]
    q = apply_rope(q, *rope)
    weights = w.linear(x, N("indexer.weights_proj", block), X) * F32(X ** -0.5)  # [t, x]
    scores = np.empty((T, keys.shape[0]), F32)  # [t, c]
    for t0, t1 in query_blocks(T, 4 * X * keys.shape[0]):
        dots = np.maximum(np.einsum("txy,cy->txc", q[t0:t1], keys), F32(0.0)) * F32(Y ** -0.5)
        scores[t0:t1] = np.einsum("txc,tx->tc", dots, weights[t0:t1])
    return scores


# -- attention -----------------------------------------------------------------------------
def layer_ratio(config, layer: int) -> int:
    """compress_ratios[layer]; the entry after the last layer belongs to the MTP module."""
    ratio = int(config.compress_ratios[layer])
    if ratio not in (SLIDING, CSA, HCA):
        raise ConfigError(f"config: compress_ratios[{layer}] must be 0, 4 or 128, "
                          f"found {ratio}")
    return ratio


def attention(config, w: V4Weights, block: str, ratio: int, x: np.ndarray) -> np.ndarray:
    """Shared-KV multi-query attention over the sliding window plus compressed entries.
    block 'layers.N.'.  x: [t, d] -> [t, d]"""
    T, d = x.shape
    H, A, eps = config.num_attention_heads, config.head_dim, config.rms_norm_eps
    G, R = config.o_groups, config.o_lora_rank
    rope = rope_tables(config, np.arange(T), compressed=ratio != SLIDING)

    q_latent = w.linear(x, N("wq_a", block), config.q_lora_rank)  # [t, q]
    q_latent = rms_norm(q_latent, w.read(N("q_norm", block), (config.q_lora_rank,)), eps)
    q = w.linear(q_latent, N("wq_b", block), H * A).reshape(T, H, A)  # [t, h, a]
    q = apply_rope(rms_norm(q, None, eps), *rope)  # unweighted RMSNorm per head
    kv = rms_norm(w.linear(x, N("wkv", block), A), w.read(N("kv_norm", block), (A,)), eps)
    kv = apply_rope(kv, *rope)  # [s, a]: the one head, both key and value

    entries, visible = np.zeros((0, A), F32), np.zeros((T, 0), bool)  # [c, a], [t, c]
    if ratio != SLIDING:
        entries = compress(config, w, block, "compressor.", x, ratio, A)
        visible = visible_entries(T, entries.shape[0], ratio)
        if ratio == CSA and entries.shape[0]:
            scores = indexer_scores(config, w, block, x, q_latent, rope)
            visible = select_compressed(scores, visible, config.index_topk)

    sink = w.read(N("attn_sink", block), (H,))[:, None, None]  # [h, 1, 1]
    W, pos = config.sliding_window, np.arange(T)
    out = np.empty((T, H, A), F32)  # [t, h, a]
    # a block of at most W queries sees at most 2W window keys plus the compressed entries
    for t0, t1 in query_blocks(T, 4 * H * (2 * W + entries.shape[0]), W):
        s0 = max(0, t0 - W + 1)  # the first key any query of the block sees
        keys = np.concatenate([kv[s0:t1], entries])  # [s+c, a]
        near = pos[s0:t1][None, :]
        window = (near <= pos[t0:t1, None]) & (near > pos[t0:t1, None] - W)  # [t, s]
        allowed = np.concatenate([window, visible[t0:t1]], axis=1)  # [t, s+c]
        logits = np.einsum("tha,sa->hts", q[t0:t1], keys) * F32(A ** -0.5)  # [h, t, s+c]
        logits = np.where(allowed[None], logits, NEG_INF)
        # the sink is one more logit per head that takes probability mass and gives no value
        top = np.maximum(logits.max(axis=-1, keepdims=True), sink)  # [h, t, 1]
        p = np.exp(logits - top)
        p /= p.sum(axis=-1, keepdims=True) + np.exp(sink - top)
        out[t0:t1] = np.einsum("hts,sa->tha", p, keys)
    out = apply_rope(out, *rope, inverse=True)  # back to each query's own frame

    # grouped low-rank output: each group of H/G heads projects to R dims (wo_a viewed as
    # [g, r, h*a/g], read one group at a time), then wo_b mixes the g*r values
    Z = H * A // G
    out = out.reshape(T, G, Z)  # [t, g, z]
    grouped = np.empty((T, G, R), F32)
    for g in range(G):
        wo_a = w.read_rows(N("wo_a", block), g * R, (g + 1) * R, (G * R, Z))  # [r, z]
        grouped[:, g] = out[:, g] @ wo_a.T  # einsum("tz,rz->tr")
    return w.linear(grouped.reshape(T, G * R), N("wo_b", block), d)  # [t, d]


# -- router, experts, MoE ------------------------------------------------------------------
def route(config, x: np.ndarray, gate: np.ndarray, bias: np.ndarray | None,
          hashed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Experts and their weights per token.  x: [t, d] -> experts [t, k], weights [t, k]

    Hash layers take the experts from tid2eid[token] (`hashed`); the others the top-k of
    scores + bias (the bias only chooses; ties go to the lower expert id). The weights are
    the chosen unbiased scores, renormalised, times routed_scaling_factor.
    """
    scores = score_function(config.scoring_func, x.astype(F32) @ gate.T)  # [t, e]
    if hashed is not None:
        experts = hashed
    else:
        choice = scores if bias is None else scores + bias
        experts = np.argsort(-choice, axis=-1, kind="stable")[:, :config.num_experts_per_tok]
    weights = np.take_along_axis(scores, experts, axis=-1)  # [t, k]
    weights = weights / (weights.sum(-1, keepdims=True) + F32(TOPK_NORM_EPS))
    return experts, (weights * F32(config.routed_scaling_factor)).astype(F32)


def swiglu(config, w: V4Weights, names: dict[str, str], x: np.ndarray) -> np.ndarray:
    """w2(silu(min(w1 x, L)) * clip(w3 x, -L, L)), L = swiglu_limit (no clip when 0).
    `names`: "w1", "w2", "w3" -> the expert's tensors.  x: [t, d] -> [t, d]"""
    f, limit = config.moe_intermediate_size, config.swiglu_limit
    gate = w.linear(x, names["w1"], f)  # [t, f]
    up = w.linear(x, names["w3"], f)
    if limit and limit > 0:
        gate = np.minimum(gate, F32(limit))
        up = np.clip(up, F32(-limit), F32(limit))
    return w.linear(silu(gate) * up, names["w2"], config.hidden_size)


def _expert(block: str, expert: int | None) -> dict[str, str]:
    """A routed expert's tensors, or (None) the shared expert's."""
    if expert is None:
        return {p: N(f"shared.{p}", block) for p in ("w1", "w2", "w3")}
    return {p: N(f"expert.{p}", block, expert) for p in ("w1", "w2", "w3")}


def moe(config, w: V4Weights, block: str, hashed_layer: bool, x: np.ndarray,
        ids: np.ndarray) -> np.ndarray:
    """Routed experts (each read only if a token chose it) plus the shared expert.
    block 'layers.N.'.  x: [t, d] -> [t, d]"""
    E, K, d = config.n_routed_experts, config.num_experts_per_tok, config.hidden_size
    gate = w.read(N("gate", block), (E, d))
    if hashed_layer:
        table = N("gate.tid2eid", block)
        hashed = w.int_rows(table, ids, (config.vocab_size, K))  # [t, k]
        if hashed.size and (hashed.min() < 0 or hashed.max() >= E):
            raise ConfigError(f"{w.label}: tensor '{table}': expert ids must be "
                              f"in [0, {E}), found {int(hashed.min())}..{int(hashed.max())}")
        experts, weights = route(config, x, gate, None, hashed)
    else:
        experts, weights = route(config, x, gate, w.read(N("gate.bias", block), (E,)), None)
    del gate
    y = np.zeros_like(x)  # [t, d]
    for e in np.unique(experts):
        tokens, slots = np.nonzero(experts == e)
        # a hash table may list an expert twice for a token: both slots count
        contrib = swiglu(config, w, _expert(block, int(e)), x[tokens])
        np.add.at(y, tokens, contrib * weights[tokens, slots, None])
    for _ in range(config.n_shared_experts):  # V4 ships one; its weights are not numbered
        y += swiglu(config, w, _expert(block, None), x)
    return y


# -- decoder block and model ---------------------------------------------------------------
def block(config, w: V4Weights, prefix: str, ratio: int, hashed_layer: bool,
          streams: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """mHC around attention, then around the MoE.  prefix 'layers.N.'.  [t, m, d] -> same"""
    d, eps = config.hidden_size, config.rms_norm_eps
    x, post, comb = hc_pre(config, w, prefix, "attn", streams)
    x = rms_norm(x, w.read(N("attn_norm", prefix), (d,)), eps)
    streams = hc_post(attention(config, w, prefix, ratio, x), streams, post, comb)
    x, post, comb = hc_pre(config, w, prefix, "ffn", streams)
    x = rms_norm(x, w.read(N("ffn_norm", prefix), (d,)), eps)
    return hc_post(moe(config, w, prefix, hashed_layer, x, ids), streams, post, comb)


class Model:
    """The V4 decoder over one `V4Weights`; nothing is held between calls."""

    def __init__(self, weights: V4Weights):
        self.weights = weights
        self.config = weights.config
        c = self.config
        if len(c.compress_ratios) < c.num_hidden_layers:
            raise ConfigError(f"config: compress_ratios has {len(c.compress_ratios)} entries "
                              f"for {c.num_hidden_layers} layers")

    def check_tokens(self, tokens: Sequence[int]) -> np.ndarray:
        return token_ids(tokens, self.config)

    def embed(self, ids: np.ndarray) -> np.ndarray:
        c = self.config
        return self.weights.rows(N("embed"), ids, (c.vocab_size, c.hidden_size))  # [t, d]

    def hidden_states(self, tokens: Sequence[int], layers: int | None = None
                      ) -> Iterator[tuple[int, np.ndarray]]:
        """(layer, the streams [t, m, d] after it) for the first `layers` layers."""
        c, ids = self.config, self.check_tokens(tokens)
        n = c.num_hidden_layers if layers is None else layers
        if not 0 <= n <= c.num_hidden_layers:
            raise ConfigError(f"layers: must be in [0, {c.num_hidden_layers}], found {n}")
        streams = np.repeat(self.embed(ids)[:, None, :], c.hc_mult, axis=1)  # [t, m, d]
        for layer in range(n):
            streams = block(c, self.weights, LAYER_PREFIX.format(L=layer), layer_ratio(c, layer),
                            layer < c.num_hash_layers, streams, ids)
            yield layer, streams

    def streams(self, tokens: Sequence[int], layers: int | None = None) -> np.ndarray:
        """The streams [t, m, d] after `layers` layers (all by default; 0 = embeddings)."""
        out = None
        for _, out in self.hidden_states(tokens, layers):
            pass
        if out is None:
            c = self.config
            out = np.repeat(self.embed(self.check_tokens(tokens))[:, None, :], c.hc_mult, axis=1)
        return out

    def final_norm(self, streams: np.ndarray, prefix: str = "") -> np.ndarray:
        """hc_head folding, then the final RMSNorm.  [t, m, d] -> [t, d]"""
        c, w = self.config, self.weights
        x = hc_head(c, w, prefix, streams)
        norm = N(_head_role("norm", prefix), prefix)
        return rms_norm(x, w.read(norm, (c.hidden_size,)), c.rms_norm_eps)

    def logits(self, streams: np.ndarray) -> np.ndarray:
        """hc_head, final norm and head.  [t, m, d] -> [t, o]"""
        return self.weights.linear(self.final_norm(streams), N("head"), self.config.vocab_size)

    def forward(self, tokens: Sequence[int], layers: int | None = None) -> np.ndarray:
        """Logits [t, o]; with `layers`, the streams after them, flattened to [t, m*d]."""
        out = self.streams(tokens, layers)
        return out.reshape(out.shape[0], -1) if layers is not None else self.logits(out)

    def mtp_logits(self, tokens: Sequence[int], streams: np.ndarray, depth: int = 0
                   ) -> np.ndarray:
        """Logits of MTP module `depth`: the row for position t predicts token t+2.

        As DeepSeek's MTPBlock: x = e_proj(enorm(embed(token t+1))) broadcast to the streams
        + h_proj(hnorm(main streams at t)), one full block (its own attention ratio from
        compress_ratios[num_hidden_layers + depth], learned routing), then the module's own
        hc_head and norm and the shared head.  streams: [t, m, d] -> [t-1, o]
        """
        c, w = self.config, self.weights
        mtp_layers = getattr(c, "num_nextn_predict_layers", 0) or 0
        if not 0 <= depth < mtp_layers:
            raise ConfigError(f"mtp: the config has {mtp_layers} MTP module(s), no depth {depth}")
        ids = self.check_tokens(tokens)
        if len(ids) < 2:
            raise ConfigError("tokens: the MTP module needs at least two tokens")
        p, d, eps = MTP_PREFIX.format(J=depth), c.hidden_size, c.rms_norm_eps
        e = rms_norm(self.embed(ids[1:]), w.read(N("mtp.enorm", p), (d,)), eps)  # [t-1, d]
        h = rms_norm(streams[:-1], w.read(N("mtp.hnorm", p), (d,)), eps)  # [t-1, m, d]
        x = (w.linear(e, N("mtp.e_proj", p), d)[:, None, :]
             + w.linear(h, N("mtp.h_proj", p), d))  # [t-1, m, d]
        x = block(c, w, p, layer_ratio(c, c.num_hidden_layers + depth), False, x, ids[1:])
        return w.linear(self.final_norm(x, p), N("head"), c.vocab_size)  # [t-1, o]


def decoder(source) -> Model:
    """The family's decoder hook (`families`): this model over a source's weights."""
    return Model(V4Weights(source))
