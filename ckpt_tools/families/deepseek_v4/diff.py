"""`ckpt diff A B` when one side is DeepSeek-V4: the new architecture explained against
V3 / V3.2 (or V4 against V4), with long-context figures computed from both configs.

The KV cache and attention FLOPs of either side are `attention_cost`'s (the figures
`info` and every other diff show; formulas and sources in docs/attention_cost.md). Total
FLOPs per token = 2 x activated parameters + attention FLOPs (the tensor plan's activated
count; DeepSeek's per-token comparison counts the same two parts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, computed_field

from ...figures.attention_cost import attention_flops, kv_cache_bytes
from ...commands.config_diff import FieldChange, config_changes
from ...io.dtypes import itemsize
from ...commands.info import attention_schedule
from ...results import Result
from ...configs.sources import ConfigSource, resolve_config
from ...commands.tensor_diff import HeaderDiff, ValueDiff
from ...inventory.tensor_plan import plan_for

CONTEXTS = (131_072, 1_048_576)


class V4Side(Result):
    spec: str
    label: str
    title: str | None
    model_type: str
    attention: str = Field(description="Attention kind and schedule, in words")


class Figure(Result):
    key: str
    label: str
    unit: Literal["params", "bytes", "elements", "flops", "count"]
    a: int | float
    b: int | float
    ratio: float | None = Field(description="b / a")


class Explanation(Result):
    topic: str
    text: str


class V4DiffReport(Result):
    """What `ckpt diff` reports when one side is DeepSeek-V4; `--json` prints exactly this."""

    a: V4Side
    b: V4Side
    summary: str
    contexts: list[int]
    figures: list[Figure]
    explanations: list[Explanation] = Field(description="What changes from A to B, in words; "
                                            "none when the configs are the same architecture")
    config_changes: list[FieldChange]
    headers: HeaderDiff | None = Field(None, description="Two checkpoints: names, shapes and "
                                       "dtypes from their headers")
    values: ValueDiff | None = Field(None, description="With values=True: every common tensor "
                                     "compared by its (dequantised) value")

    @computed_field(description="Always true: differences are findings, not failures "
                                "(bad input raises)")
    @property
    def ok(self) -> bool:
        return True


def _is_v4(c) -> bool:
    return c.model_type == "deepseek_v4"


def _sparse(c) -> bool:
    """V3.2-style DSA: a lightning indexer picking index_topk tokens for MLA."""
    return not _is_v4(c) and getattr(c, "index_topk", None) is not None


def _side(src) -> V4Side:
    c = src.config
    if _is_v4(c):
        words = (f"shared-KV MQA ({c.num_attention_heads} heads x {c.head_dim}, 1 KV head), "
                 f"{attention_schedule(c)}")
    elif _sparse(c):
        words = f"MLA + DSA lightning indexer (top-{c.index_topk} tokens)"
    else:
        words = f"MLA (kv_lora_rank {c.kv_lora_rank}), dense"
    return V4Side(spec=src.spec, label=src.label, title=src.preset.title if src.preset else None,
                  model_type=c.model_type, attention=words)


def _row(key, label, unit, a, b) -> Figure:
    return Figure(key=key, label=label, unit=unit, a=a, b=b, ratio=b / a if a else None)


def _figures(ca, cb, pa, pb) -> list[Figure]:
    rows = [
        _row("params.main", "parameters (main model)", "params", pa.parameters.main, pb.parameters.main),
        _row("params.activated", "activated per token", "params", pa.parameters.activated,
             pb.parameters.activated),
        _row("params.mtp", "MTP parameters", "params", pa.parameters.mtp, pb.parameters.mtp),
        _row("bytes.checkpoint", "checkpoint bytes (native layout)", "bytes", pa.total_bytes,
             pb.total_bytes),
        _row("bytes.routed_experts", "routed-expert bytes", "bytes", _expert_bytes(pa),
             _expert_bytes(pb)),
    ]
    for t in CONTEXTS:
        k = f"{t // 1024}K" if t < 1 << 20 else f"{t >> 20}M"
        rows.append(_row(f"kv.{k}", f"KV cache at {k} context (BF16 bytes)", "bytes",
                         kv_cache_bytes(ca, t), kv_cache_bytes(cb, t)))
        fa, fb = attention_flops(ca, t), attention_flops(cb, t)
        rows.append(_row(f"attention_flops.{k}", f"attention FLOPs per token at {k}", "flops", fa, fb))
        rows.append(_row(f"total_flops.{k}", f"total FLOPs per token at {k} (2 x activated + "
                         f"attention)", "flops", 2 * pa.parameters.activated + fa,
                         2 * pb.parameters.activated + fb))
    return rows


def _expert_bytes(plan) -> int:
    """Routed-expert weights and their scales, main model."""
    return sum(g.numel * itemsize(g.dtype) for g in plan.groups
               if g.component == "routed_expert" and not g.mtp)


def _explain(ca, cb, figures: list[Figure]) -> list[Explanation]:
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


def diff_v4(a: str | Path | ConfigSource, b: str | Path | ConfigSource, *,
            headers: HeaderDiff | None = None, values: ValueDiff | None = None) -> V4DiffReport:
    """Compare two configs of which at least one is DeepSeek-V4 (ratios are B / A), with the
    tensor sections `diff` computed for two checkpoints."""
    src_a, src_b = (x if isinstance(x, ConfigSource) else resolve_config(x) for x in (a, b))
    ca, cb = src_a.config, src_b.config
    pa, pb = plan_for(ca), plan_for(cb)
    figures = _figures(ca, cb, pa, pb)
    changes = config_changes(ca, cb)
    architectural = [c for c in changes if c.architectural]
    kv = next(f for f in figures if f.key == "kv.1M")
    fl = next(f for f in figures if f.key == "total_flops.1M")
    if architectural:
        summary = (f"{src_b.label} vs {src_a.label}: {len(architectural)} architectural config "
                   f"fields differ; parameters {pb.parameters.main / 1e9:,.1f}B vs "
                   f"{pa.parameters.main / 1e9:,.1f}B, activated "
                   f"{pb.parameters.activated / 1e9:.1f}B vs {pa.parameters.activated / 1e9:.1f}B; "
                   f"at 1M context KV cache x{kv.ratio:.3f} and FLOPs per token x{fl.ratio:.3f}")
    else:  # e.g. a checkpoint and its own round trip: nothing to explain
        summary = ("Same architecture; " + ("configs identical" if not changes else
                   "differences only in: " + ", ".join(c.field for c in changes)))
    return V4DiffReport(a=_side(src_a), b=_side(src_b), summary=summary, contexts=list(CONTEXTS),
                        figures=figures,
                        explanations=_explain(ca, cb, figures) if architectural else [],
                        config_changes=changes, headers=headers, values=values)


def involves_v4(a: Any, b: Any) -> bool:
    return any(_is_v4(resolve_config(x).config) for x in (a, b))
