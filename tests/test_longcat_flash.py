"""LongCat-Flash (`longcat_flash`) as a registry family: a layer of two attention blocks and
two dense MLPs beside a MoE whose router also scores zero-computation experts, a config under
its own key names, and an MTP block under `model.mtp.` (docs/derived_families.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ckpt_tools.commands.info import describe
from ckpt_tools.commands.reshard import reshard
from ckpt_tools.commands.tiny import make_tiny
from ckpt_tools.configs.parse import parse_config
from ckpt_tools.errors import CkptError
from ckpt_tools.families import family_of
from ckpt_tools.figures.attention_cost import kv_cache_elements
from ckpt_tools.inventory.checkpoint import Checkpoint
from ckpt_tools.inventory.tensor_plan import plan_for
from ckpt_tools.presets import find_preset
from ckpt_tools import forward
from ckpt_tools.reference.deepseek import route
from ckpt_tools.reference.weights import Weights

DATA = Path(__file__).parent / "data"
COUNTS = json.loads((DATA / "derived_param_counts.json").read_text())["longcat-flash"]
TOKENS = [0, 15, 3, 7, 100, 200, 5, 9, 11, 42, 64, 1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("longcat") / "bf16"
    make_tiny(path, "longcat-flash", seed=3)
    return path


def test_plan_is_what_the_release_stores_transformers_count_without_zero_expert_slots():
    """transformers counts gate_up_proj rows for the zero experts, which hold no weights; the
    release's count is the rest, the published 560B (committed meta-device counts)."""
    params = describe("longcat-flash").parameters
    not_stored = COUNTS["not_built"]["zero_expert_gate_up_elements"]
    assert params.main - params.buffers == COUNTS["parameters"] - not_stored == 560_664_958_976
    assert params.buffers == COUNTS["persistent_buffers"]
    # the activated range as the committed counts (which leave the router buffers out)
    assert params.activated - params.buffers == COUNTS["activated_per_token"]["max"]
    assert params.activated_min - params.buffers == COUNTS["activated_per_token"]["min"]


def test_info_shows_the_publishers_range(run_cli):
    info = describe("longcat-flash")
    assert info.published.total_agrees and info.published.activated_agrees
    out = run_cli("info", "longcat-flash").stdout
    assert "560,664,958,976" in out and "18.6B-31.3B activated (agree)" in out


def test_config_reads_and_writes_its_own_key_names():
    preset = find_preset("longcat-flash")
    c = preset.config
    assert (c.num_hidden_layers, c.intermediate_size, c.moe_intermediate_size,
            c.num_experts_per_tok, c.router_slots) == (28, 12288, 2048, 12, 768)
    assert c.attention_blocks == 56  # transformers' num_hidden_layers
    written = c.to_json_dict()
    assert written["num_layers"] == 28 and written["moe_topk"] == 12
    assert "num_hidden_layers" not in written and "num_experts_per_tok" not in written
    assert parse_config(written).model_dump() == c.model_dump()
    # the loader's defaults come under its own names too
    raw = {"model_type": "longcat_flash", "architectures": ["LongcatFlashForCausalLM"]}
    assert parse_config(raw).model_dump() == parse_config(
        {**raw, "num_layers": 28, "moe_topk": 12}).model_dump()


def test_plan_names_two_attention_blocks_two_mlps_and_router_slots_without_tensors():
    c = find_preset("longcat-flash").config
    plan = plan_for(c)
    names = set(plan.by_name)
    for i in (0, 1):
        assert f"model.layers.0.self_attn.{i}.q_a_proj.weight" in names
        assert f"model.layers.0.input_layernorm.{i}.weight" in names
        assert f"model.layers.27.mlps.{i}.down_proj.weight" in names
    assert plan.by_name["model.layers.0.mlp.router.classifier.weight"].shape == (768, 6144)
    assert plan.by_name["model.layers.0.mlp.router.e_score_correction_bias"].shape == (768,)
    assert "model.layers.0.mlp.experts.511.up_proj.weight" in names
    assert "model.layers.0.mlp.experts.512.up_proj.weight" not in names  # a zero expert
    assert not any("shared_experts" in n for n in names)
    mtp = sorted(s.name for s in plan if s.mtp)
    assert "model.mtp.layers.0.enorm.m.weight" in mtp
    assert "model.mtp.layers.0.transformer_layer.mlp.gate_proj.weight" in mtp
    assert "model.mtp.layers.0.self_attn.kv_b_proj.weight" in mtp and len(mtp) == 17
    # FP8: as vLLM reads the FP8 release, eh_proj has its block scale
    assert plan_for(c, "fp8").get("model.mtp.layers.0.eh_proj.weight_scale_inv") is not None


def test_kv_cache_counts_both_attention_blocks_of_a_layer():
    c = find_preset("longcat-flash").config
    assert kv_cache_elements(c, 10) == (512 + 64) * 10 * 56


def test_diff_against_v3_names_what_changed(run_cli):
    r = run_cli("diff", "v3", "longcat-flash")
    assert r.exit_code == 0, r.stderr
    assert "num_experts_per_tok" in r.stdout and "zero_expert_num" in r.stdout


def test_tiny_checkpoint_validates_strictly_and_keeps_the_layer_shape(tiny, run_cli):
    r = run_cli("validate", "--strict", tiny)
    assert r.exit_code == 0, r.stdout + r.stderr
    raw = json.loads((tiny / "config.json").read_text())
    assert raw["num_layers"] == 2 and raw["zero_expert_num"] == 4 and "num_hidden_layers" not in raw
    assert raw["head_dim"] == raw["qk_rope_head_dim"]  # the width its rotary embedding turns


def test_deepseek_model_parallel_layout_is_refused_naming_why(tiny, tmp_path):
    with pytest.raises(CkptError, match="two attention blocks"):
        reshard(tiny, tmp_path / "mp", to="deepseek-mp", model_parallel=2)
    assert not (tmp_path / "mp").exists() or not any((tmp_path / "mp").iterdir())


def test_router_picks_zero_experts_and_they_return_the_token(tiny):
    with Checkpoint(tiny) as ck:
        w = Weights(ck)
        c = ck.config
        x = np.random.default_rng(0).normal(size=(64, c.hidden_size)).astype(np.float32)
        experts, weights = route(c, x, w.read(w.name("gate", 0)), w.read(w.name("gate_bias", 0)))
    assert experts.max() < c.router_slots and (experts >= c.n_routed_experts).any()
    assert np.all(weights > 0) and family_of(c).name == "longcat_flash"


def test_forward_runs_the_familys_layer_order(tiny):
    """The family's decoder hook is what runs, also through `ckpt_tools.reference.forward`:
    DeepSeek's order (one attention block, then the MoE) computes another function."""
    from ckpt_tools.reference import forward as reference_forward
    from ckpt_tools.reference.deepseek import Model

    with Checkpoint(tiny) as ck:
        ours = forward(ck, TOKENS)
        np.testing.assert_array_equal(reference_forward(ck, TOKENS), ours)
        assert not np.allclose(Model(ck).forward(TOKENS), ours, atol=1e-2)
    assert ours.shape == (len(TOKENS), 320) and np.isfinite(ours).all()


def test_hub_file_without_model_type_reads_by_its_architecture(tmp_path, run_cli):
    """The Hub's LongCat-Flash-Chat config runs remote code and names no model_type; its
    remote-code keys transformers does not read are kept without a warning."""
    raw = find_preset("longcat-flash").raw_config
    raw.pop("model_type")
    raw.update(auto_map={"AutoConfig": "configuration_longcat_flash.LongcatFlashConfig"},
               zero_expert_type="identity", mla_scale_q_lora=True, mla_scale_kv_lora=True)
    config = parse_config(raw)
    assert family_of(config).name == "longcat_flash" and not config.reading.warnings
    assert config.reading.loader == "transformers LongcatFlashConfig"
    (tmp_path / "config.json").write_text(json.dumps(raw))
    tiny = tmp_path / "tiny"
    make_tiny(tiny, str(tmp_path / "config.json"))
    r = run_cli("validate", "--strict", tiny)
    assert r.exit_code == 0, r.stdout + r.stderr


def test_forward_of_the_mtp_block_is_refused_in_one_line(tiny, tmp_path, run_cli):
    r = run_cli("forward", tiny, "--out", tmp_path / "mtp.npy", "--mtp")
    assert r.exit_code == 1 and "MTP block" in r.stderr and "internal error" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "mtp.npy").exists()
