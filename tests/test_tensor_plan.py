"""The plan must reproduce the published figures exactly (docs/architecture.md §2, §8)."""

import math

import pytest

from ckpt_tools.presets import find_preset
from ckpt_tools.inventory.tensor_plan import TensorPlan


def plan(name, layout=None):
    return TensorPlan(find_preset(name).config, layout)


def test_v3_fp8_checkpoint_figures():
    p = plan("v3")
    assert p.layout == "fp8"
    assert len(p) == 91_991
    assert len(p.specs) == 91_991 and len(p.by_name) == 91_991
    assert p.total_bytes == 688_574_839_360
    assert sum(s.nbytes for s in p.specs) == 688_574_839_360
    params = p.parameters
    assert params.main == 671_026_419_200
    assert params.activated == 36_625_618_432
    assert params.activated_with_embedding == 37_552_297_472
    assert params.mtp == 13_463_426_304
    assert params.mtp_unique == 11_610_068_224
    assert params.checkpoint == 684_489_845_504
    assert params.scale_elements == 41_540_496


@pytest.mark.parametrize("name", ["v2", "v2.5"])
def test_v2_figures(name):
    p = plan(name)
    assert p.layout == "bf16"
    assert len(p) == 29_102
    assert p.parameters.main == 235_741_434_880
    assert p.parameters.activated == 20_851_512_320


def test_v2_lite_figures():
    p = plan("v2-lite")
    assert len(p) == 5_291
    assert p.parameters.main == 15_706_484_224
    assert p.parameters.activated == 2_451_435_008
    assert "model.layers.0.self_attn.q_proj.weight" in p
    assert "model.layers.0.self_attn.q_a_proj.weight" not in p
    assert p.by_name["model.layers.0.self_attn.q_proj.weight"].shape == (3072, 2048)


def test_v3_per_component_figures():
    p = plan("v3")
    by = p.parameters.by_component
    assert by["embedding"] == by["lm_head"] == 926_679_040
    layer3 = [s for s in p.layer_specs(3) if s.is_parameter]
    attn = sum(s.numel for s in layer3 if s.component == "attention")
    assert attn + 2 * 7168 == 187_107_328 + 2 * 7168  # norms counted separately
    expert = sum(s.numel for s in layer3 if s.component == "routed_expert" and s.expert == 0)
    assert expert == 44_040_192
    gate = sum(s.numel for s in layer3 if s.component == "router")
    assert gate == 1_835_264


def test_fp8_dtype_policy_and_scales():
    p = plan("v3")
    s = p.by_name
    assert s["model.layers.3.mlp.gate.weight"].dtype == "BF16"
    assert s["model.layers.3.mlp.gate.e_score_correction_bias"].dtype == "F32"
    assert s["model.layers.61.eh_proj.weight"].dtype == "BF16"
    assert "model.layers.61.eh_proj.weight_scale_inv" not in p
    kv_a = s["model.layers.0.self_attn.kv_a_proj_with_mqa.weight"]
    assert kv_a.dtype == "F8_E4M3" and kv_a.shape == (576, 7168)
    sc = s[kv_a.scale_name]
    assert sc.shape == (5, 56) and sc.dtype == "F32" and sc.scale_of == kv_a.name
    for spec in p.specs:
        if spec.scale_name:
            w = spec.shape
            assert s[spec.scale_name].shape == (math.ceil(w[0] / 128), math.ceil(w[1] / 128))


def test_bf16_layout_of_v3_has_no_scales_but_keeps_f32_bias():
    p = plan("v3", "bf16")
    assert not any(x.scale_of for x in p.specs)
    assert p.by_name["model.layers.3.mlp.gate.e_score_correction_bias"].dtype == "F32"
    scales = sum(1 for x in plan("v3").specs if x.scale_of)
    assert len(p) == 91_991 - scales
    assert p.parameters.main == 671_026_419_200


def test_mtp_layer_is_derived_from_num_hidden_layers():
    from ckpt_tools.configs.parse import parse_config
    raw = dict(find_preset("v3").raw_config, num_hidden_layers=10)
    p = TensorPlan(parse_config(raw))
    mtp = {s.layer for s in p.specs if s.mtp}
    assert mtp == {10}
    assert "model.layers.10.eh_proj.weight" in p
    assert not any(s.layer == 61 for s in p.specs)


def test_moe_layer_freq_places_dense_layers():
    from ckpt_tools.configs.parse import parse_config
    raw = dict(find_preset("v2-lite").raw_config, num_hidden_layers=6, moe_layer_freq=2)
    p = TensorPlan(parse_config(raw))
    dense = {s.layer for s in p.specs if s.component == "dense_mlp"}
    moe = {s.layer for s in p.specs if s.component == "router"}
    assert dense == {0, 1, 3, 5} and moe == {2, 4}


def test_names_unique_and_weight_precedes_scale():
    p = plan("v3")
    pos = {s.name: i for i, s in enumerate(p.specs)}
    assert len(pos) == len(p.specs)
    for s in p.specs:
        if s.scale_of:
            assert pos[s.scale_of] == pos[s.name] - 1
