"""One figure per fact: a model's attention FLOPs, KV cache and bytes are the same numbers
whichever command shows them: `info`, `diff` with the model on either side and any partner,
and the charts drawn from those reports."""

from __future__ import annotations

import pytest

from ckpt_tools import describe, diff
from ckpt_tools.figures.attention_cost import (
    attention_flops,
    indexer_flops_per_key,
    kv_cache_bytes,
    mla_flops_per_entry,
)
from ckpt_tools.presets import all_presets, find_preset

CONTEXT = 131_072  # the context every report shows (V4's diff: "128K")
PARTNERS = ("v3", "v3.1", "v3.2", "v4-flash")


def _shown(name: str) -> list[tuple[str, int, int]]:
    """(where, attention FLOPs, KV-cache bytes) of preset `name` at CONTEXT, as each report
    shows them (None: that report does not show it)."""
    out = []
    for partner in PARTNERS:
        for a, b, side in ((name, partner, "a"), (partner, name, "b")):
            r = diff(a, b, context=CONTEXT)
            where = f"diff {a} {b} ({side})"
            if r.figures_a is not None:
                f = getattr(r, f"figures_{side}")
                out.append((where, f.flops.attention_flops_per_token, f.kv_cache.total_at_context))
                rows = {q.key: q for q in r.quantities}
                dsa = rows.get(f"dsa.attention_flops.{CONTEXT}")
                if dsa is not None:
                    out.append((where + " DSA row", getattr(dsa, side), None))
            else:
                rows = {q.key: q for q in r.quantities}
                out.append((where, getattr(rows["attention_flops.128K"], side),
                            getattr(rows["kv.128K"], side)))
    sparse = describe(name).sparse_attention
    if sparse is not None:
        cost = next(c for c in sparse.flops if c.context == CONTEXT)
        out.append(("info", cost.dsa_flops, None))
    return out


@pytest.mark.parametrize("name", ["v2-lite", "v3", "v3.1", "v3.2", "kimi-k2", "v4-flash",
                                  "v4-pro"])
def test_attention_flops_and_kv_cache_agree_across_info_and_every_diff(name):
    config = find_preset(name).config
    flops, kv = attention_flops(config, CONTEXT), kv_cache_bytes(config, CONTEXT)
    shown = _shown(name)
    assert len(shown) >= 2 * len(PARTNERS)
    for where, f, k in shown:
        assert f == flops, where
        assert k in (None, kv), where


def test_v32_attention_at_128k_is_the_same_in_both_diffs_the_issue_names():
    in_v3 = {q.key: q.b for q in diff("v3.1", "v3.2").quantities}["dsa.attention_flops.131072"]
    in_v4 = {q.key: q.a for q in diff("v3.2", "v4-flash").quantities}["attention_flops.128K"]
    assert in_v3 == in_v4


def test_the_formulas_by_hand():
    v32 = find_preset("v3.2").config
    # MLA absorbed: 128 heads score over the 512 + 64 wide entry and sum 512-wide values
    assert mla_flops_per_entry(v32) == 2 * 128 * (2 * 512 + 64)
    # indexer: 64 heads of 128, plus the weighted sum over the heads
    assert indexer_flops_per_key(v32) == 2 * 64 * 129
    assert attention_flops(v32, 4096) == 61 * (2 * 128 * 1088 * 2048 + 2 * 64 * 129 * 4096)
    assert kv_cache_bytes(v32, 10) == 2 * (512 + 64 + 128) * 10 * 61
    v3 = find_preset("v3").config
    assert attention_flops(v3, 100) == 61 * 2 * 128 * 1088 * 100


def test_v4_pro_against_v32_at_1m_is_near_deepseeks_stated_ratios():
    """DeepSeek's model card: at 1M tokens V4-Pro needs 10% of V3.2's KV cache and 27% of
    its single-token FLOPs (their kernels keep part of the cache in FP8, we count BF16)."""
    figures = {q.key: q for q in diff("v3.2", "v4-pro").quantities}
    assert 0.08 < figures["kv.1M"].ratio < 0.13
    assert 0.24 < figures["total_flops.1M"].ratio < 0.30


@pytest.mark.parametrize("name", sorted(all_presets()))
def test_info_chart_bytes_add_up_to_infos_total(name):
    pytest.importorskip("matplotlib", reason="needs the plot extra: pip install 'ckpt-tools[plot]'")
    from ckpt_tools.commands.plot import info_figure

    info = describe(name)
    fig = info_figure(info)
    ax = fig.axes[0]
    unit = {"GB": 1e9, "MB": 1e6, "KB": 1e3, "B": 1}[ax.get_ylabel().split("(")[1].rstrip(")")]
    drawn = sum(p.get_height() for p in ax.patches) * unit
    assert drawn == pytest.approx(info.plan.total_bytes, rel=1e-9)
    title = ax.get_title()
    from ckpt_tools.cli.render import human_bytes

    assert human_bytes(info.plan.total_bytes) in title
