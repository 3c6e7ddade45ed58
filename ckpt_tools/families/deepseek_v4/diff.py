"""`ckpt diff A B` when one side is DeepSeek-V4: the new architecture explained against
V3 / V3.2 (or V4 against V4), with long-context figures computed from both configs.

The KV cache and attention FLOPs of either side are `attention_cost`'s (the figures
`info` and every other diff show; formulas and sources in docs/attention_cost.md). Total
FLOPs per token = 2 x activated parameters + attention FLOPs (the tensor plan's activated
count; DeepSeek's per-token comparison counts the same two parts).
"""

from __future__ import annotations

from ...commands.config_diff import FieldChange
from ...commands.diff import Comparison, Explanation, QuantityRow
from ...commands.info import attention_schedule
from ...configs.sources import ConfigSource
from ...figures.attention_cost import attention_flops, kv_cache_bytes
from ...inventory.tensor_plan import plan_for
from ...io.dtypes import itemsize
from . import DEEPSEEK_V4

CONTEXTS = (131_072, 1_048_576)


def _is_v4(c) -> bool:
    return c.model_type == DEEPSEEK_V4.name


def _sparse(c) -> bool:
    """V3.2-style DSA: a lightning indexer picking index_topk tokens for MLA."""
    return not _is_v4(c) and getattr(c, "index_topk", None) is not None


def _attention(c) -> str:
    """A side's attention kind and schedule, in words."""
    if _is_v4(c):
        return (f"shared-KV MQA ({c.num_attention_heads} heads x {c.head_dim}, 1 KV head), "
                f"{attention_schedule(c)}")
    if _sparse(c):
        return f"MLA + DSA lightning indexer (top-{c.index_topk} tokens)"
    return f"MLA (kv_lora_rank {c.kv_lora_rank}), dense"


def _row(section, key, label, unit, a, b) -> QuantityRow:
    return QuantityRow(key=key, section=section, label=label, unit=unit, a=a, b=b,
                       ratio=b / a if a else None, headline=True)


def _figures(ca, cb, pa, pb) -> list[QuantityRow]:
    rows = [
        _row("parameters", "params.main", "parameters (main model)", "params",
             pa.parameters.main, pb.parameters.main),
        _row("parameters", "params.activated", "activated per token", "params",
             pa.parameters.activated, pb.parameters.activated),
        _row("parameters", "params.mtp", "MTP parameters", "params", pa.parameters.mtp,
             pb.parameters.mtp),
        _row("weights", "bytes.checkpoint", "checkpoint bytes (native layout)", "bytes",
             pa.total_bytes, pb.total_bytes),
        _row("weights", "bytes.routed_experts", "routed-expert bytes", "bytes",
             _expert_bytes(pa), _expert_bytes(pb)),
    ]
    for t in CONTEXTS:
        k = f"{t // 1024}K" if t < 1 << 20 else f"{t >> 20}M"
        rows.append(_row("kv_cache", f"kv.{k}", f"KV cache at {k} context (BF16 bytes)", "bytes",
                         kv_cache_bytes(ca, t), kv_cache_bytes(cb, t)))
        fa, fb = attention_flops(ca, t), attention_flops(cb, t)
        rows.append(_row("compute", f"attention_flops.{k}", f"attention FLOPs per token at {k}",
                         "flops", fa, fb))
        rows.append(_row("compute", f"total_flops.{k}", f"total FLOPs per token at {k} "
                         f"(2 x activated + attention)", "flops",
                         2 * pa.parameters.activated + fa, 2 * pb.parameters.activated + fb))
    return rows


def _expert_bytes(plan) -> int:
    """Routed-expert weights and their scales, main model."""
    return sum(g.numel * itemsize(g.dtype) for g in plan.groups
               if g.component == "routed_expert" and not g.mtp)


def _explain(ca, cb, figures: list[QuantityRow]) -> list[Explanation]:
    v4 = cb if _is_v4(cb) else ca
    other = ca if v4 is cb else cb
    fig = {f.key: f for f in figures}
    out = []
    rows = v4.hc_fn_rows
    out.append(Explanation(topic="hyper-connections", text=(
        f"V4 carries {v4.hc_mult} residual streams instead of one: before attention and before "
        f"the FFN, hc_*_fn [{rows}, {v4.hc_mult}x{v4.hidden_size}] turns the flattened streams "
        f"into {v4.hc_mult} read weights, {v4.hc_mult} write weights and a {v4.hc_mult}x"
        f"{v4.hc_mult} mixing matrix made doubly stochastic by {v4.hc_sinkhorn_iters} Sinkhorn "
        f"iterations; hc_head mixes the streams once more before the final norm. All F32, "
        f"{2 * v4.num_hidden_layers} per-block sets in the main model.")))
    counts = [v4.compress_ratios[: v4.num_hidden_layers].count(r) for r in (0, 4, 128)]
    out.append(Explanation(topic="attention schedule", text=(
        f"V4 replaces MLA by shared-KV multi-query attention ({v4.num_attention_heads} query "
        f"heads of {v4.head_dim}, one KV head, RoPE on the last {v4.qk_rope_head_dim} dims, "
        f"per-head attention sinks, a grouped low-rank output wo_a/wo_b in {v4.o_groups} "
        f"groups). Each layer also sees a {v4.sliding_window}-token sliding window; by "
        f"compress_ratios: {counts[0]} layers sliding-window only, {counts[1]} CSA (ratio 4: "
        f"overlapping 4-token compression, a lightning indexer picks the top "
        f"{v4.index_topk}), {counts[2]} HCA (ratio 128: every 128 tokens compressed to one "
        f"entry, all attended). The MTP block is ratio {v4.compress_ratios[-1]}.")))
    m = "1M"
    out.append(Explanation(topic="KV cache", text=(
        f"BF16 bytes as in docs/attention_cost.md; KV cache at 128K: {fig['kv.128K'].a:,.0f} vs "
        f"{fig['kv.128K'].b:,.0f} bytes (B/A {fig['kv.128K'].ratio:.3f}); at 1M: "
        f"{fig['kv.' + m].a:,.0f} vs {fig['kv.' + m].b:,.0f} (B/A {fig['kv.' + m].ratio:.3f}). "
        f"DeepSeek states V4-Pro needs 10% of V3.2's KV cache at 1M tokens.")))
    out.append(Explanation(topic="attention FLOPs", text=(
        f"One token at 1M context: attention {fig['attention_flops.' + m].a:.3g} vs "
        f"{fig['attention_flops.' + m].b:.3g} FLOPs (B/A {fig['attention_flops.' + m].ratio:.3f}); "
        f"with the matmuls of the activated parameters {fig['total_flops.' + m].a:.3g} vs "
        f"{fig['total_flops.' + m].b:.3g} (B/A {fig['total_flops.' + m].ratio:.3f}). DeepSeek "
        f"states 27% of V3.2's single-token FLOPs for V4-Pro at 1M.")))
    routing = (f"The first {v4.num_hash_layers} layers route by a fixed table: tid2eid[token id] "
               f"(I64 [{v4.vocab_size}, {v4.num_experts_per_tok}]) names the experts, the gate "
               f"only weights them; later layers pick the top-{v4.num_experts_per_tok} of "
               f"{v4.n_routed_experts} by score + bias (no expert groups).")
    if not _is_v4(other):
        routing += (f" {other.model_type} routes every MoE layer by learned sigmoid scores in "
                    f"{other.n_group} groups ({other.topk_group} kept).")
    out.append(Explanation(topic="routing", text=routing))
    out.append(Explanation(topic="scoring", text=(
        f"V4 scores experts with {v4.scoring_func}: sqrt(softplus(logit)), unbounded and "
        f"smooth near 0 where sigmoid saturates at 1; weights are renormalised over the chosen "
        f"experts and scaled by {v4.routed_scaling_factor:g}; the routed SwiGLU clamps its "
        f"inputs at {v4.swiglu_limit:g}.")))
    eb = fig["bytes.routed_experts"]
    out.append(Explanation(topic="FP4 experts", text=(
        f"Routed experts are MXFP4: two e2m1 codes per byte (I8 [out, in/2]) plus one E8M0 "
        f"scale byte per 32 inputs, 0.5625 bytes per parameter against 1 (+ 1/16384 scale) for "
        f"FP8 blocks. Routed-expert bytes {eb.a:,.0f} vs {eb.b:,.0f}. Dense weights stay FP8 "
        f"with one E8M0 (power-of-two) scale per 128x128 block instead of V3's F32 scales.")))
    return out


def compare(src_a: ConfigSource, src_b: ConfigSource, changes: list[FieldChange]) -> Comparison:
    """The `diff` hook: two configs of which at least one is DeepSeek-V4 (ratios are B / A),
    explained against each other when their architectures differ."""
    ca, cb = src_a.config, src_b.config
    pa, pb = plan_for(ca), plan_for(cb)
    figures = _figures(ca, cb, pa, pb)
    architectural = [c for c in changes if c.architectural]
    if not architectural:  # e.g. a checkpoint and its own round trip: nothing to explain
        return Comparison(quantities=figures, attention=(_attention(ca), _attention(cb)))
    kv = next(f for f in figures if f.key == "kv.1M")
    fl = next(f for f in figures if f.key == "total_flops.1M")
    summary = (f"{src_b.label} vs {src_a.label}: {len(architectural)} architectural config "
               f"fields differ; parameters {pb.parameters.main / 1e9:,.1f}B vs "
               f"{pa.parameters.main / 1e9:,.1f}B, activated "
               f"{pb.parameters.activated / 1e9:.1f}B vs {pa.parameters.activated / 1e9:.1f}B; "
               f"at 1M context KV cache x{kv.ratio:.3f} and FLOPs per token x{fl.ratio:.3f}")
    return Comparison(quantities=figures, attention=(_attention(ca), _attention(cb)),
                      explanations=_explain(ca, cb, figures), summary=summary)
