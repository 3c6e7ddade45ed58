"""`ckpt diff`: derived figures against docs/architecture.md §8, the config/plan/routing
diff of the presets, and the header/value diff of tiny checkpoints."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ckpt_tools.figures.arch_figures import arch_figures
from ckpt_tools.inventory.checkpoint import Checkpoint
from ckpt_tools.commands.diff import diff
from ckpt_tools.formats.fp8_block import BF16
from ckpt_tools.io.index import INDEX_FILE, ShardIndex, read_index, write_index, write_json_atomic
from ckpt_tools.presets import find_preset
from ckpt_tools.io.safetensors_io import read_header, write_safetensors
from ckpt_tools.inventory.tensor_plan import TensorPlan


def figures(name):
    return arch_figures(find_preset(name).config)


# -- docs/architecture.md §8 ------------------------------------------------------------------
def test_v3_components_match_section_7():
    c = figures("v3").components
    assert c.attention_per_layer == 187_107_328
    assert c.dense_ffn_per_layer == 396_361_728
    assert c.routed_expert == 44_040_192
    assert c.router_per_layer == 1_835_264  # incl. the 256-element bias
    assert c.moe_ffn_per_layer == 11_320_164_608
    assert c.embedding == c.lm_head == 926_679_040


@pytest.mark.parametrize("name,attention,expert,moe_layer", [
    ("v2", 149_227_520, 23_592_960, 3_972_116_480),
    ("v2.5", 149_227_520, 23_592_960, 3_972_116_480),
    ("v2-lite", 13_763_072, 8_650_752, 584_847_872),
])
def test_v2_components_match_section_7(name, attention, expert, moe_layer):
    c = figures(name).components
    assert c.attention_per_layer == attention
    assert c.routed_expert == expert
    assert c.moe_layer == moe_layer  # section 7 counts V2's MoE layer whole (attention + norms)


@pytest.mark.parametrize("name,main,active", [
    ("v2-lite", 15_706_484_224, 2_451_435_008),
    ("v2", 235_741_434_880, 20_851_512_320),
    ("v3", 671_026_419_200, 36_625_618_432),
    ("r1", 671_026_419_200, 36_625_618_432),
])
def test_totals_match_section_7(name, main, active):
    p = figures(name).parameters
    assert (p.main, p.activated) == (main, active)


def test_v3_mtp_and_bytes_match_sections_6_and_7():
    f = figures("v3")
    assert (f.parameters.mtp, f.parameters.mtp_unique) == (13_463_426_304, 11_610_068_224)
    assert f.parameters.checkpoint == 684_489_845_504
    fp8, bf16 = f.weights
    assert ((fp8.layout, fp8.native, fp8.total_bytes, fp8.tensors)
            == ("fp8", True, 688_574_839_360, 91_991))
    # the BF16 layout: every parameter 2 bytes except the 58+1 F32 score-correction biases
    bias = 59 * 256
    assert (bf16.layout, bf16.native) == ("bf16", False)
    assert bf16.total_bytes == 2 * (684_489_845_504 - bias) + 4 * bias
    assert "F8_E4M3" not in bf16.bytes_by_dtype


def test_kv_cache_mla_vs_mha():
    kv = figures("v3").kv_cache
    assert kv.mla_per_token_per_layer == (512 + 64) * 2 == 1152
    assert kv.mha_per_token_per_layer == 128 * (192 + 128) * 2 == 81_920
    assert kv.mla_per_token == 1152 * 61
    assert kv.mla_at_context == 1152 * 61 * kv.context
    assert figures("v2-lite").kv_cache.mha_per_token_per_layer == 16 * (192 + 128) * 2


@pytest.mark.parametrize("name,m_squared", [
    ("v3", 1.873854), ("r1", 1.873854), ("v2.5", 1.873854),  # mscale_all_dim 1.0
    ("v2-lite", 1.589627), ("v2", 1.589627),  # mscale_all_dim 0.707
])
def test_softmax_scale_sections_3_1_and_4_1(name, m_squared):
    a = figures(name).attention
    assert a.softmax_scale == pytest.approx(192**-0.5 * m_squared, rel=1e-6)
    assert a.mscale**2 == pytest.approx(m_squared, rel=1e-6)


def test_flops_convention_v3():
    f = figures("v3")
    # activated (section 7) minus what is not a matmul: the RMSNorm weights of 61 layers
    # (input, post-attention, q_a, kv_a) plus the final norm, and 58 score-correction biases
    norms = 61 * (2 * 7168 + 1536 + 512) + 7168
    matmul = 36_625_618_432 - norms - 58 * 256
    assert f.flops.matmul_params_per_token == matmul
    # MLA absorbed: per cached entry, 128 heads score over 512 + 64 and sum 512 values
    assert f.flops.attention_flops_per_token == 2 * 61 * 128 * (2 * 512 + 64) * f.flops.context
    assert f.flops.total_flops_per_token == 2 * matmul + f.flops.attention_flops_per_token
    assert arch_figures(find_preset("v3").config, context=1).flops.attention_flops_per_token == \
        2 * 61 * 128 * 1088


def test_experts():
    e = figures("v3").experts
    assert ((e.experts_per_token, e.routed_experts, e.expert_width, e.shared_width)
            == (8, 256, 2048, 2048))
    assert (e.dense_layers, e.moe_layers, e.mtp_layers) == (3, 58, 1)
    assert e.active_ffn_width == (8 + 1) * 2048


# -- routing semantics (docs/architecture.md §6) ---------------------------------------------
def test_routing_v2_v3_v2_lite():
    v2, v3, lite = figures("v2.5").routing, figures("v3").routing, figures("v2-lite").routing
    assert ((v2.scoring_func, v2.group_rule, v2.uses_bias, v2.normalised)
            == ("softmax", "group_max", False, False))
    assert (v2.scaling_applied, v2.routed_scaling_factor, v2.top_k) == ("on_raw_weights", 16.0, 6)
    assert ((v3.scoring_func, v3.group_rule, v3.uses_bias, v3.normalised)
            == ("sigmoid", "top2_sum", True, True))
    assert ((v3.scaling_applied, v3.routed_scaling_factor, v3.top_k)
            == ("after_normalisation", 2.5, 8))
    assert "selection only" in v3.bias and "unbiased" in v3.weights
    assert lite.group_rule == "none" and lite.scaling == "x1 (no-op)"


def test_routing_softmax_with_norm_topk_prob_is_flagged():
    raw = dict(find_preset("v2").raw_config, norm_topk_prob=True)
    from ckpt_tools.configs.parse import parse_config

    r = arch_figures(parse_config(raw)).routing
    assert r.scaling_applied == "implementation_dependent" and r.notes


# -- preset / config diffs --------------------------------------------------------------------
def test_v25_to_v3_config_fields_grouped_and_explained():
    r = diff("v2.5", "v3")
    assert r.verdict == "different_architecture" and not r.same_architecture
    by = {c.field: c for c in r.config_changes}
    assert ((by["scoring_func"].a, by["scoring_func"].b, by["scoring_func"].concern)
            == ("softmax", "sigmoid", "moe"))
    assert "aux-loss-free" in by["topk_method"].meaning
    assert by["n_routed_experts"].b == 256 and by["hidden_size"].concern == "model"
    assert by["num_nextn_predict_layers"].status == "added"
    assert by["quantization_config"].concern == "quantization"
    assert not by["quantization_config"].architectural and not by["aux_loss_alpha"].architectural
    assert "n_group" not in by  # 8 on both sides
    concerns = [c.concern for c in r.config_changes]
    assert concerns == sorted(concerns, key=["model", "attention", "moe", "rope", "vocabulary",
                                             "quantization", "other"].index)


def test_v25_to_v3_plan_by_family_without_expanding_specs(monkeypatch):
    def boom(self):
        raise AssertionError("diff of presets expanded TensorPlan.specs")

    monkeypatch.setattr(TensorPlan, "specs", property(boom))
    r = diff("v2.5", "v3")
    fam = {c.family: c for c in r.plan.changes}
    bias = fam["model.layers.{L}.mlp.gate.e_score_correction_bias"]
    assert bias.status == "added" and bias.b.shape == [256] and bias.b.dtype == "F32"
    up = fam["model.layers.{L}.mlp.experts.{E}.up_proj.weight"]
    assert up.changes == ["shape", "dtype", "count"]
    assert (up.a.count, up.b.count) == (59 * 160, 59 * 256)  # 59 MoE layers each side (58 + MTP)
    assert (up.a.dtype, up.b.dtype, up.b.scale_shape) == ("BF16", "F8_E4M3", [16, 56])
    assert up.b.layers == "3-60, MTP 61"
    assert len(r.plan.changes) < 40  # by family, never tensor by tensor
    q = {x.key: x for x in r.quantities}
    assert q["experts.routed"].a == 160 and q["experts.routed"].b == 256
    assert q["params.main"].ratio == pytest.approx(671_026_419_200 / 235_741_434_880)
    assert r.routing[0].group_rule == "group_max" and r.routing[1].group_rule == "top2_sum"


def test_v3_vs_r1_same_architecture():
    r = diff("v3", "r1")
    assert r.verdict == "same_architecture" and r.same_architecture
    assert r.summary.startswith("Same architecture; differences only in:")
    assert {c.field for c in r.config_changes} == {"aux_loss_alpha", "seq_aux", "pretraining_tp",
                                                  "transformers_version"}
    assert r.plan.changes == [] and r.routing[0] == r.routing[1]


def test_v2_vs_v25_same_shapes_other_softmax_scale():
    r = diff("v2", "v2.5")
    assert r.verdict == "same_tensor_shapes" and r.plan.changes == []
    assert ({c.field for c in r.config_changes}
            == {"rope_scaling.mscale", "rope_scaling.mscale_all_dim"})
    q = {x.key: x for x in r.quantities}
    assert q["attention.softmax_scale"].ratio == pytest.approx(1.873854 / 1.589627, rel=1e-5)


def test_v2_lite_vs_v2_query_projection_families():
    fam = {c.family: c.status for c in diff("v2-lite", "v2").plan.changes}
    assert fam["model.layers.{L}.self_attn.q_proj.weight"] == "removed"
    assert fam["model.layers.{L}.self_attn.q_a_proj.weight"] == "added"


def test_preset_vs_config_json(tmp_path):
    raw = dict(find_preset("v3").raw_config)
    del raw["quantization_config"]
    write_json_atomic(tmp_path / "config.json", raw)
    r = diff("v3", tmp_path / "config.json")
    assert r.b.kind == "config" and r.verdict == "same_architecture"
    assert [c.field for c in r.config_changes] == ["quantization_config"]
    assert r.plan.changes and all(c.changes == ["dtype"] for c in r.plan.changes)


# -- CLI --------------------------------------------------------------------------------------
def test_cli_text_shows_points_1_to_4_headline_first(run_cli):
    res = run_cli("diff", "v2.5", "v3")
    assert res.exit_code == 0, res.stderr
    out = res.stdout
    order = [out.index(s) for s in ("Headline", "Config fields", "Derived quantities",
                                    "Routing", "Tensor plan by family")]
    assert order == sorted(order)
    assert "671.03B" in out and "e_score_correction_bias" in out and "noaux_tc" in out


def test_cli_json_and_markdown(run_cli):
    doc = json.loads(run_cli("diff", "v3", "r1", "--json").stdout)  # exactly one document
    assert doc["verdict"] == "same_architecture" and doc["values"] is None
    md = run_cli("diff", "v2.5", "v3", "--markdown").stdout
    assert (md.startswith("## ckpt diff v2.5 v3")
            and "| `topk_method` | group_limited_greedy |" in md)


def test_cli_preset_diff_imports_no_numpy():
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "ckpt_tools", "diff", "v2.5",
                          "v3"], capture_output=True, text=True, check=True)
    heavy = [line for line in res.stderr.splitlines()
             if line.rsplit("|", 1)[-1].strip().split(".")[0]
             in ("numpy", "ml_dtypes", "safetensors")]
    assert not heavy, heavy[:3]


@pytest.mark.parametrize("make,needle", [
    (lambda p: p / "missing", "not a preset"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no config.json"),
    (lambda p: write_json_atomic(p / "c.json", {"model_type": "llama"}) or p / "c.json",
     "not a DeepSeek"),
])
def test_cli_bad_inputs_one_line_exit_1(run_cli, tmp_path, make, needle):
    res = run_cli("diff", "v3", make(tmp_path))
    assert res.exit_code == 1 and needle in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.output


def test_cli_usage_errors(run_cli):
    assert run_cli("diff", "v3", "r1", "--json", "--markdown").exit_code == 2
    res = run_cli("diff", "v3", "r1", "--values")  # a usage error, named as the CLI spells it
    assert res.exit_code == 2 and "checkpoint directories" in res.stderr
    assert res.stderr.startswith("Error: --values compares")


# -- checkpoints ------------------------------------------------------------------------------
class Recorder:
    def __init__(self):
        self.total, self.done, self.finished = None, 0, False

    def start(self, total, label):
        self.total = total

    def advance(self, n):
        self.done += n

    def finish(self):
        self.finished = True


def test_identical_checkpoints_are_zero(make_ckpt):
    a, b = make_ckpt("v3", fp8=True, name="a"), make_ckpt("v3", fp8=True, name="b")
    rec = Recorder()
    r = diff(a, b, values=True, progress=rec)
    assert r.headers.matching and r.headers.groups == []
    v = r.values
    assert v.compared == v.identical == len(Checkpoint(a).index.weight_map)
    assert v.max_abs == v.max_rel_l2 == 0 and v.min_cosine == 1
    assert rec.finished and rec.done == rec.total == v.bytes_read > 0


def _perturb(ckpt, name: str, delta: float, *, value: float | None = None) -> None:
    """Add `delta` to (or set `value` at) element [0, 0] of one BF16 tensor, in its shard."""
    shard = read_index(ckpt / INDEX_FILE).weight_map[name]
    header = read_header(ckpt / shard)
    entry = header.entries[name]
    assert entry.dtype == "BF16"
    view = np.memmap(ckpt / shard, dtype=BF16, mode="r+",
                     offset=header.data_offset + entry.start, shape=entry.shape)
    view[0, 0] = view[0, 0] + delta if value is None else value
    view.flush()
    del view


def test_one_perturbed_tensor_is_named_first(make_ckpt, monkeypatch):
    a = make_ckpt("v3", name="a")
    b = a.parent / "b"
    shutil.copytree(a, b)
    target = "model.layers.3.mlp.experts.5.down_proj.weight"
    _perturb(b, target, 0.5)
    # many row chunks per tensor
    monkeypatch.setattr("ckpt_tools.commands.tensor_diff._CHUNK_ELEMENTS", 64)
    v = diff(a, b, values=True).values
    worst = v.tensors[0]
    assert worst.name == target and v.identical == v.compared - 1
    x = Checkpoint(a).read_float32(target).astype(np.float64)
    y = Checkpoint(b).read_float32(target).astype(np.float64)
    assert worst.max_abs == pytest.approx(np.abs(x - y).max())
    assert worst.rel_l2 == pytest.approx(np.linalg.norm(x - y) / np.linalg.norm(x))
    assert worst.cosine == pytest.approx(x.ravel() @ y.ravel()
                                         / np.linalg.norm(x) / np.linalg.norm(y))
    assert all(t.max_abs == 0 for t in v.tensors[1:])


def test_nan_in_both_is_no_difference_nan_in_one_is_worst(make_ckpt):
    a = make_ckpt("v3", name="a")
    both, one = "model.layers.0.mlp.up_proj.weight", "model.layers.1.self_attn.o_proj.weight"
    _perturb(a, both, 0, value=float("nan"))
    b = a.parent / "b"
    shutil.copytree(a, b)
    _perturb(b, one, 0, value=float("nan"))
    v = diff(a, b, values=True).values
    by = {t.name: t for t in v.tensors}
    assert by[both].max_abs == 0 and by[both].cosine == 1
    assert v.tensors[0].name == one and v.tensors[0].rel_l2 is None and v.non_finite == 1
    assert v.identical == v.compared - 1


def _bf16_copy(src, dst):
    """An independent upcast: every tensor's float32 value rounded to BF16 (F32 kept F32),
    scales dropped, config without quantization_config."""
    ck = Checkpoint(src)
    dst.mkdir()
    weight_map = {}
    for shard in ck.shard_names:
        tensors = {}
        for name in ck.index.tensors_in(shard):
            if name.endswith("_scale_inv"):
                continue
            value = ck.read_float32(name)
            tensors[name] = value if ck.locate(name)[1].dtype == "F32" else value.astype(BF16)
            weight_map[name] = shard
        write_safetensors(dst / shard, tensors)
    write_index(dst / INDEX_FILE, ShardIndex(weight_map, None))
    config = dict(ck.raw_config)
    del config["quantization_config"]
    write_json_atomic(dst / "config.json", config)


def test_fp8_against_its_bf16_upcast_within_bf16_rounding(make_ckpt):
    a = make_ckpt("v3", fp8=True, name="fp8")
    b = a.parent / "bf16"
    _bf16_copy(a, b)
    r = diff(a, b, values=True)
    assert r.verdict == "same_architecture"
    assert r.headers.matching and r.headers.scales_only_a > 0
    assert {g.kind for g in r.headers.groups} == {"fp8_vs_float"}
    v = r.values
    assert v.skipped == {"scale, other side unquantised": r.headers.scales_only_a}
    assert any(t.dtype_a == "F8_E4M3" and t.dtype_b == "BF16" for t in v.tensors)
    # BF16 keeps 8 significant bits: round-to-nearest relative error per element <= 2^-8
    assert 0 < v.max_rel_l2 <= 2**-8 and v.min_cosine > 1 - 2**-15
    ck = Checkpoint(a)
    for t in v.tensors:
        assert t.max_abs <= np.abs(ck.read_float32(t.name)).max() * 2**-8


def test_header_diff_missing_and_shape(make_ckpt, run_cli):
    a = make_ckpt("v3", name="a")
    b = a.parent / "b"
    shutil.copytree(a, b)
    index = read_index(b / INDEX_FILE)
    dropped = "model.layers.4.mlp.experts.7.up_proj.weight"
    del index.weight_map[dropped]
    write_index(b / INDEX_FILE, index)
    h = diff(a, b).headers
    assert not h.matching and h.tensors_a == h.tensors_b + 1
    (g,) = h.groups
    assert (g.kind, g.family, g.count, g.examples) == (
        "only_a", "model.layers.{L}.mlp.experts.{E}.up_proj.weight", 1, [dropped])
    other = make_ckpt("v2-lite", name="lite")
    kinds = {g.kind for g in diff(other, a).headers.groups}
    assert {"only_a", "only_b", "shape"} <= kinds
    res = run_cli("diff", a, b, "--values")
    assert (res.exit_code == 0 and "only in A" in res.stdout
            and "all compared tensors are identical" in res.stdout)
