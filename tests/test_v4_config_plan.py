"""DeepSeek-V4: config schema (Hub and transformers 5 spellings), presets, tensor plan.

Published figures the plan must reproduce (sources in docs/deepseek_v4.md):
- model card (deepseek-ai/DeepSeek-V4-Flash and -Pro README, also quoted on the vLLM recipes
  page): Flash 284B total / 13B activated, Pro 1.6T total / 49B activated;
- V4-Flash `model.safetensors.index.json`: 69,187 tensors, `"total_size": 159609485896`,
  1,575 of them `mtp.0.*` (asserted by alibaba/rtp-llm's V4 weight-mapping oracle test);
- V4-Pro: 145,116 tensors holding 861,608,274,846 stored elements, 805.32 GiB (a
  third-party model-information report that lists every tensor of the Hub checkpoint).
"""

import json

import pytest

from ckpt_tools.configs.parse import parse_config
from ckpt_tools.errors import ConfigError, UnsupportedModelError
from ckpt_tools.presets import find_preset
from ckpt_tools.configs.v4 import DeepseekV4Config
from ckpt_tools.inventory.tensor_plan import plan_for
from ckpt_tools.families.deepseek_v4.tensor_plan import V4TensorPlan


def raw(name):
    return find_preset(name).raw_config


def test_presets_parse_as_v4_with_hub_names():
    flash, pro = find_preset("v4-flash").config, find_preset("v4-pro").config
    assert isinstance(flash, DeepseekV4Config) and isinstance(pro, DeepseekV4Config)
    assert flash.compress_ratios == [0, 0] + [4, 128] * 20 + [4, 0]
    assert pro.compress_ratios == [128, 128] + [4, 128] * 29 + [4, 0]
    assert flash.declared_expert_dtype == "fp4" and pro.declared_expert_dtype is None
    assert find_preset("v4-pro").provenance_kind == "verbatim"
    assert find_preset("v4-flash").provenance_kind == "reconstructed"
    assert flash.layer_types.count("compressed_sparse_attention") == 21
    assert flash.mlp_layer_types[:4] == ["hash_moe"] * 3 + ["moe"]


def test_transformers_layout_maps_back_to_hub_keys():
    """The spelling transformers 5 writes (DeepseekV4Config.to_dict) parses to the same config."""
    transformers = pytest.importorskip("transformers")
    for name in ("v4-flash", "v4-pro"):
        hub = raw(name)
        written = transformers.DeepseekV4Config(**raw(name)).to_dict()
        assert "layer_types" in written and "compress_ratios" not in written
        assert "rope_parameters" in written
        ours = parse_config(written, source="tf")
        want = parse_config(hub)
        for field in ("compress_ratios", "num_hash_layers", "qk_rope_head_dim", "rope_theta",
                      "compress_rope_theta", "hidden_size", "o_groups", "index_topk"):
            assert getattr(ours, field) == getattr(want, field), field
        assert (ours.rope_scaling.factor == 16
                and ours.rope_scaling.original_max_position_embeddings == 65536)


def test_hand_written_transformers_layout():
    hub = raw("v4-flash")
    ratios = hub.pop("compress_ratios")
    hub.pop("num_hash_layers")
    hub["layer_types"] = [{0: "sliding_attention", 4: "compressed_sparse_attention",
                           128: "heavily_compressed_attention"}[r] for r in ratios[:43]]
    hub["mlp_layer_types"] = ["hash_moe"] * 2 + ["moe"] * 41
    c = parse_config(hub)
    assert c.compress_ratios == ratios and c.num_hash_layers == 2
    hub["mlp_layer_types"] = ["moe", "hash_moe"] + ["moe"] * 41
    with pytest.raises(ConfigError, match="mlp_layer_types"):
        parse_config(hub)


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r.update(compress_ratios=r["compress_ratios"][:-1]), "compress_ratios"),
    (lambda r: r["compress_ratios"].__setitem__(3, 16), "compress_ratios"),
    (lambda r: r.update(num_key_value_heads=8), "num_key_value_heads"),
    (lambda r: r.update(o_groups=7), "o_groups"),
    (lambda r: r.update(num_hash_layers=50), "num_hash_layers"),
    (lambda r: r.pop("hc_mult"), "hc_mult"),
])
def test_bad_v4_configs_one_line(mutate, field):
    r = raw("v4-flash")
    mutate(r)
    with pytest.raises(ConfigError) as e:
        parse_config(r, source="cfg.json")
    assert f"field '{field}" in str(e.value) and "\n" not in str(e.value)


def test_other_v4_family_layouts_refused():
    dspark = raw("v4-flash") | {"dspark_block_size": 4, "dspark_markov_rank": 8}
    with pytest.raises(UnsupportedModelError, match="Flash-0731 / DSpark"):
        parse_config(dspark, source="x")
    with pytest.raises(UnsupportedModelError, match="V4.1"):
        parse_config({"model_type": "deepseek_v41", "text_config": {}}, source="x")


@pytest.mark.parametrize("name, tensors, total_bytes, mtp_tensors", [
    ("v4-flash", 69_187, 159_609_485_896, 1_575),
])
def test_plan_reproduces_published_flash_index(name, tensors, total_bytes, mtp_tensors):
    p = V4TensorPlan(find_preset(name).config)
    assert len(p) == tensors == len(p.specs) == len(p.by_name)
    assert p.total_bytes == total_bytes == sum(s.nbytes for s in p.specs)
    assert sum(s.name.startswith("mtp.0.") for s in p.specs) == mtp_tensors


def test_plan_reproduces_published_pro_inventory():
    p = V4TensorPlan(find_preset("v4-pro").config)
    assert len(p) == 145_116
    assert p.stored_elements == 861_608_274_846
    assert round(p.total_bytes / 2**30, 2) == 805.32


@pytest.mark.parametrize("name, total, total_digits, active", [
    ("v4-flash", 284e9, -9, 13e9),  # "284B" / "13B"
    ("v4-pro", 1.6e12, -11, 49e9),  # "1.6T" / "49B"
])
def test_published_parameter_counts(name, total, total_digits, active):
    params = V4TensorPlan(find_preset(name).config).parameters
    assert round(params.main, total_digits) == total
    assert round(params.activated, -9) == active
    assert params.mtp > 0 and params.checkpoint == params.main + params.mtp


def test_plan_dtypes_and_shapes_match_the_release():
    p = V4TensorPlan(find_preset("v4-pro").config)
    want = {
        "layers.0.ffn.gate.tid2eid": ("I64", (129280, 6)),
        "layers.3.ffn.gate.bias": ("F32", (384,)),
        "layers.2.attn.wq_b.scale": ("F8_E8M0", (512, 12)),
        "layers.2.attn.wo_a.weight": ("F8_E4M3", (16384, 4096)),
        "layers.2.attn.wo_a.scale": ("F8_E8M0", (128, 32)),
        "layers.5.ffn.experts.7.w1.weight": ("I8", (3072, 3584)),
        "layers.5.ffn.experts.7.w1.scale": ("F8_E8M0", (3072, 224)),
        "layers.5.ffn.experts.7.w2.scale": ("F8_E8M0", (7168, 96)),
        "layers.2.attn.compressor.ape": ("F32", (4, 1024)),
        "layers.3.attn.compressor.ape": ("F32", (128, 512)),
        "layers.2.attn.indexer.compressor.wkv.weight": ("BF16", (256, 7168)),
        "layers.2.hc_attn_fn": ("F32", (24, 28672)),
        "hc_head_fn": ("F32", (4, 28672)),
        "mtp.0.e_proj.scale": ("F8_E8M0", (56, 56)),
    }
    for name, (dtype, shape) in want.items():
        s = p.get(name)
        assert s is not None, name
        assert (s.dtype, s.shape) == (dtype, shape), name
    assert p.get("layers.3.attn.indexer.wq_b.weight") is None  # HCA has no indexer
    assert p.get("layers.2.ffn.gate.bias") is None  # hash layer
    assert p.get("mtp.0.ffn.gate.tid2eid") is None and p.get("mtp.0.attn.compressor.ape") is None


def test_bf16_and_fp8_expert_layouts():
    c = find_preset("v4-flash").config
    bf16 = V4TensorPlan(c, "bf16")
    assert not any(s.scale_of for s in bf16.specs)
    assert bf16.get("layers.3.ffn.experts.0.w2.weight").shape == (4096, 2048)
    assert bf16.get("layers.0.ffn.gate.tid2eid").dtype == "I64"
    fp8 = V4TensorPlan(c, expert_dtype="fp8")
    assert fp8.get("layers.3.ffn.experts.0.w2.weight").dtype == "F8_E4M3"
    assert fp8.get("layers.3.ffn.experts.0.w2.scale").shape == (32, 16)
    assert bf16.parameters.main == fp8.parameters.main == V4TensorPlan(c).parameters.main
    assert isinstance(plan_for(c), V4TensorPlan)


def test_info_v4(run_cli):
    r = run_cli("info", "v4-flash", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["plan"]["tensors"] == 69_187
    assert doc["architecture"]["attention_schedule"].startswith("2 sliding")
    assert doc["architecture"]["hash_layers"] == 3
    comps = {c["component"]: c for c in doc["components"]}
    params = doc["parameters"]
    for key, field in (("total", "main"), ("activated", "activated"), ("mtp", "mtp")):
        assert sum(c[key] for c in comps.values()) == params[field]
    assert comps["routed_expert"]["activated"] * 256 == comps["routed_expert"]["total"] * 6
    assert comps["embedding"]["activated"] == 0 and comps["hyper_connection"]["total"] > 0
    r = run_cli("info", "v4-pro")
    assert r.exit_code == 0 and "31 HCA" in r.stdout
