"""`ckpt diff` against DeepSeek-V4: the new architecture explained, with long-context
figures checked against DeepSeek's published statements (V4 model card / technical report:
at 1M tokens V4-Pro needs 10% of V3.2's KV cache and 27% of its single-token FLOPs)."""

from __future__ import annotations

import json

import pytest

from ckpt_tools.configs.parse import parse_config
from ckpt_tools.commands.diff import diff
from ckpt_tools.presets import find_preset
from ckpt_tools.figures.attention_cost import attention_flops, kv_cache_elements
from ckpt_tools.commands.diff import DiffReport


@pytest.fixture
def v32(tmp_path):
    """V3.2: the preset when present, else V3's config plus V3.2's indexer fields as in
    DeepSeek's deepseek-ai/DeepSeek-V3.2-Exp inference/config_671B_v3.2.json."""
    if find_preset("v3.2") is not None:
        return "v3.2"
    raw = find_preset("v3").raw_config | {"index_n_heads": 64, "index_head_dim": 128,
                                          "index_topk": 2048}
    path = tmp_path / "v32.json"
    path.write_text(json.dumps(raw))
    return str(path)


def fig(report, key):
    return next(q for q in report.quantities if q.key == key)


def test_v4_pro_against_v32_matches_deepseek_statements(v32):
    r = diff(v32, "v4-pro")
    assert isinstance(r, DiffReport) and r.ok and r.figures_a is None
    kv, flops = fig(r, "kv.1M").ratio, fig(r, "total_flops.1M").ratio
    assert 0.08 <= kv <= 0.13  # "10%"
    assert 0.24 <= flops <= 0.30  # "27%"
    assert fig(r, "params.main").b > 1.5e12


def test_v3_to_v4_pro_explains_the_architecture():
    r = diff("v3", "v4-pro")
    topics = [e.topic for e in r.explanations]
    assert topics == ["hyper-connections", "attention schedule", "KV cache", "attention FLOPs",
                      "routing", "scoring", "FP4 experts"]
    text = {e.topic: e.text for e in r.explanations}
    assert "30 CSA" in text["attention schedule"] and "31 HCA" in text["attention schedule"]
    assert "0 layers sliding-window only" in text["attention schedule"]
    assert "tid2eid" in text["routing"] and "sqrtsoftplus" in text["scoring"]
    assert "20 Sinkhorn" in text["hyper-connections"]
    assert fig(r, "kv.1M").ratio < 0.2 and fig(r, "bytes.routed_experts").b < 2 * 0.57 * 1.6e12
    fields = {c.field for c in r.config_changes}
    assert {"compress_ratios", "hc_mult", "num_hash_layers", "kv_lora_rank"} <= fields


def test_long_context_formulas_by_hand():
    raw = find_preset("v4-flash").raw_config | {
        "num_hidden_layers": 3, "compress_ratios": [0, 4, 128, 0], "sliding_window": 8,
        "head_dim": 16, "qk_rope_head_dim": 4, "index_head_dim": 2, "index_n_heads": 3,
        "index_topk": 5, "num_attention_heads": 8, "o_groups": 2}
    c = parse_config(raw)
    t = 1024
    # sliding: 8 x 16; CSA: 8 x 16 + 256 x 16 + 256 x 2; HCA: 8 x 16 + 8 x 16
    assert kv_cache_elements(c, t) == 128 + (128 + 4096 + 512) + (128 + 128)
    per_entry = 4 * 8 * 16
    # the CSA indexer: 3 heads x (2 + 1: the weighted sum over heads) per compressed entry
    want = per_entry * 8 + (per_entry * (8 + 5) + 2 * 3 * (2 + 1) * 256) + per_entry * (8 + 8)
    assert attention_flops(c, t) == want
    v3 = find_preset("v3").config
    assert kv_cache_elements(v3, 10) == 576 * 10 * 61
    assert attention_flops(v3, 10) == 2 * 128 * (2 * 512 + 64) * 10 * 61


def test_cli_diff_v4(run_cli):
    r = run_cli("diff", "v3", "v4-flash", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["b"]["model_type"] == "deepseek_v4"
    assert "2 sliding-window only" in doc["b"]["attention"]
    r = run_cli("diff", "v3", "v4-flash", "--markdown")
    assert r.exit_code == 0 and "### Hyper-connections" in r.stdout
    r = run_cli("diff", "v4-flash", "v4-pro")
    assert r.exit_code == 0 and "KV cache at 1M" in r.stdout


def test_v4_checkpoint_against_its_own_round_trip_is_one_report_with_tensor_sections(
        run_cli, tmp_path):
    """The same DiffReport as every family: no V3-to-V4 explainer for the same architecture,
    the tensor plan by family, and the header and value sections of two checkpoints."""
    from ckpt_tools.commands.convert import upcast
    from ckpt_tools.commands.tiny import make_tiny

    make_tiny(tmp_path / "fp8", "v4-flash", fp8=True)
    upcast(tmp_path / "fp8", tmp_path / "bf16", workers=1)
    r = diff(tmp_path / "fp8", tmp_path / "bf16", values=True)
    assert isinstance(r, DiffReport) and r.ok
    assert r.explanations == [] and r.same_architecture
    assert r.summary.startswith("Same architecture")
    assert (r.a.layout, r.b.layout) == ("fp8", "bf16") and r.plan.layout_b == "bf16"
    assert r.plan.families_a == r.plan.families_b and r.plan.tensors_a > r.plan.tensors_b
    assert r.headers.common == r.headers.tensors_b == r.values.compared > 0
    assert r.values.max_rel_l2 < 1e-2  # dequantised FP8/FP4 against its exact BF16 upcast
    out = run_cli("diff", tmp_path / "fp8", tmp_path / "bf16", "--values")
    assert out.exit_code == 0, out.output
    assert "Checkpoint tensors (headers)" in out.stdout and "Values, worst first" in out.stdout
    assert "Hyper-connections" not in out.stdout
    doc = json.loads(run_cli("diff", tmp_path / "fp8", tmp_path / "bf16", "--json").stdout)
    assert doc["headers"]["common"] == r.headers.common and doc["values"] is None
