import copy
import json

import pytest
from conftest import NEEDS_REFERENCE

from ckpt_tools.configs.parse import (
    DeepseekV2Config,
    DeepseekV3Config,
    DeepseekV32Config,
    parse_config,
)
from ckpt_tools.families.glm4_moe_lite import Glm4MoeLiteConfig
from ckpt_tools.families.glm_moe_dsa import GlmMoeDsaConfig
from ckpt_tools.families.longcat_flash import LongcatFlashConfig
from ckpt_tools.families.mistral4 import Mistral4Config
from ckpt_tools.families.mistral_large4 import MistralLarge4TextConfig
from ckpt_tools.errors import ConfigError, UnsupportedModelError
from ckpt_tools.presets import all_presets, find_preset
from ckpt_tools.configs.v4 import DeepseekV4Config

V3 = find_preset("v3").raw_config
V2 = find_preset("v2").raw_config


def test_every_preset_parses_to_its_class():
    for p in all_presets().values():
        cfg = p.config
        arch = p.raw_config["architectures"][0]  # kimi-k2's model_type is kimi_k2
        expected = {"DeepseekV2ForCausalLM": DeepseekV2Config,
                    "DeepseekV3ForCausalLM": DeepseekV3Config,
                    "DeepseekV32ForCausalLM": DeepseekV32Config,
                    "DeepseekV4ForCausalLM": DeepseekV4Config,
                    "Glm4MoeLiteForCausalLM": Glm4MoeLiteConfig,
                    "Mistral4ForCausalLM": Mistral4Config,
                    "GlmMoeDsaForCausalLM": GlmMoeDsaConfig,
                    "MistralLarge4ForConditionalGeneration": MistralLarge4TextConfig,
                    "LongcatFlashForCausalLM": LongcatFlashConfig}[arch]
        assert type(cfg) is expected, p.name
        assert p.provenance_kind in ("verbatim", "reconstructed")


@pytest.mark.parametrize("alias,name", [("deepseek-v3", "v3"), ("deepseek-ai/DeepSeek-R1", "r1"),
                                        ("DeepSeek-V2.5", "v2.5"), ("V2-LITE", "v2-lite")])
def test_aliases(alias, name):
    assert find_preset(alias).name == name


def test_verbatim_r1_preset_equals_reference_file():
    from pathlib import Path
    ref = Path(__file__).parent / "data/configs/DeepSeek-R1/config.json"  # see data/SOURCES.md
    assert find_preset("r1").raw_config == json.loads(ref.read_text())


def test_unknown_keys_survive_round_trip():
    raw = dict(V3, some_future_field={"a": 1}, aux_loss_alpha=0.001)
    cfg = parse_config(raw)
    out = cfg.to_json_dict()
    assert out["some_future_field"] == {"a": 1}
    assert out["aux_loss_alpha"] == 0.001
    assert parse_config(out) == cfg


def _bad(**changes):
    raw = copy.deepcopy(V3)
    for k, v in changes.items():
        if v is ...:
            raw.pop(k)
        else:
            raw[k] = v
    with pytest.raises(ConfigError) as e:
        parse_config(raw, source="config.json")
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_wrong_type_names_field():
    msg = _bad(hidden_size="big")
    assert "field 'hidden_size'" in msg and "big" in msg


def test_missing_field_takes_the_loaders_default_and_is_marked():
    raw = {k: v for k, v in V3.items() if k != "kv_lora_rank"}
    cfg = parse_config(raw)
    assert cfg.kv_lora_rank == 512 and cfg.reading.defaulted == {"kv_lora_rank": 512}
    assert "kv_lora_rank" not in cfg.to_json_dict()  # written back as it was read


def test_null_the_loader_cannot_route_with_names_field():
    msg = _bad(num_experts_per_tok=None)
    assert "field 'num_experts_per_tok': null" in msg


def test_literal_choice_names_field():
    assert "field 'topk_method'" in _bad(topk_method="gready")


@pytest.mark.parametrize("changes,field", [
    ({"n_group": 7}, "n_group"),
    ({"topk_group": 9}, "topk_group"),
    ({"num_experts_per_tok": 200}, "num_experts_per_tok"),
    ({"scoring_func": "softmax"}, "scoring_func"),
    ({"first_k_dense_replace": 100}, "first_k_dense_replace"),
    ({"num_key_value_heads": 1}, "num_key_value_heads"),
])
def test_cross_field_rules_name_the_field(changes, field):
    assert f"field '{field}'" in _bad(**changes)


def test_v2_cannot_use_noaux_tc():
    raw = dict(V2, topk_method="noaux_tc", scoring_func="sigmoid")
    with pytest.raises(ConfigError, match="field 'topk_method'"):
        parse_config(raw)


def test_unknown_and_refused_model_types():
    llama = {k: v for k, v in V3.items() if k not in ("architectures", "auto_map")}
    with pytest.raises(UnsupportedModelError, match="a Llama config .*not a DeepSeek V2/V3"):
        parse_config(dict(llama, model_type="llama", architectures=["LlamaForCausalLM"]))
    with pytest.raises(UnsupportedModelError, match="V4.1 .*not supported"):
        parse_config(dict(V3, model_type="deepseek_v41"))


V32 = find_preset("v3.2-exp").raw_config


def test_v32_is_v3_plus_three_index_fields():
    cfg = parse_config(V32)
    assert isinstance(cfg, DeepseekV3Config) and cfg.has_indexer
    assert (cfg.index_n_heads, cfg.index_head_dim, cfg.index_topk) == (64, 128, 2048)
    assert not parse_config(V3).has_indexer
    assert find_preset("deepseek-ai/DeepSeek-V3.2").name == "v3.2"
    assert find_preset("v3.2-speciale").name == "v3.2"
    v3_fields = {k: v for k, v in V32.items() if not k.startswith("index_")
                 and k not in ("model_type", "architectures")}
    assert v3_fields == {k: v for k, v in find_preset("v3.1").raw_config.items()
                         if k not in ("model_type", "architectures", "auto_map")}


@pytest.mark.parametrize("change,field", [
    ({"q_lora_rank": None}, "q_lora_rank"),
    ({"index_head_dim": 32}, "index_head_dim"),  # narrower than the 64 RoPE dims
    ({"index_topk": 0}, "index_topk"),
    ({"mlp_layer_types": ["dense"] * 61}, "mlp_layer_types"),
])
def test_v32_rules_name_the_field(change, field):
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        parse_config(dict(V32, **change))


def test_quantization_config_typed():
    cfg = parse_config(find_preset("v3.1").raw_config)
    assert cfg.quantization_config.scale_fmt == "ue8m0"
    assert cfg.quantization_config.weight_block_size == (128, 128)
    with pytest.raises(ConfigError, match="quantization_config"):
        parse_config(dict(V3, quantization_config={"quant_method": "gptq"}))


def test_transformers_v5_layout_loads_as_same_architecture():
    raw = {k: v for k, v in V3.items() if k not in ("rope_scaling", "torch_dtype", "topk_method",
                                                     "scoring_func", "rope_theta")}
    raw.update(dtype="bfloat16", rope_interleave=True, head_dim=64, qk_head_dim=192,
               rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0,
                                "original_max_position_embeddings": 4096, "beta_fast": 32.0,
                                "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0})
    cfg = parse_config(raw)
    ref = parse_config(V3)
    assert cfg.topk_method == "noaux_tc" and cfg.scoring_func == "sigmoid"
    assert cfg.rope_scaling.factor == ref.rope_scaling.factor
    assert cfg.softmax_scale() == ref.softmax_scale()
    assert cfg.torch_dtype == "bfloat16"


@pytest.mark.reference
@pytest.mark.parametrize("preset", ["v3", "v2-lite", "v2.5", "v3.2"])
def test_config_saved_by_transformers_loads(tmp_path, preset):
    transformers = pytest.importorskip("transformers", reason=NEEDS_REFERENCE)
    raw = find_preset(preset).raw_config
    cls = {"deepseek_v3": transformers.DeepseekV3Config,
           "deepseek_v2": transformers.DeepseekV2Config,
           "deepseek_v32": transformers.DeepseekV32Config}[raw["model_type"]]
    keys = {k: v for k, v in raw.items()
            if k not in ("auto_map", "architectures", "quantization_config")}
    if preset == "v3.2":  # transformers' V3.2 config is strict: only its own fields
        keys = {k: v for k, v in keys.items()
                if k in cls.__dataclass_fields__ or k == "rope_scaling"}
    cls(**keys).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    cfg = parse_config(saved)
    ref = parse_config(raw)
    for field in ("hidden_size", "num_hidden_layers", "n_routed_experts", "topk_method",
                  "scoring_func", "q_lora_rank", "routed_scaling_factor", "n_group", "topk_group",
                  "norm_topk_prob", "first_k_dense_replace", "has_indexer"):
        assert getattr(cfg, field) == getattr(ref, field), field
    assert cfg.softmax_scale() == pytest.approx(ref.softmax_scale())


def test_cli_bad_config_one_line_exit_1(tmp_path, run_cli):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(dict(V3, hidden_size="big")))
    r = run_cli("info", p)
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    assert r.stderr.strip().count("\n") == 0
    assert "hidden_size" in r.stderr
    p.write_text("{not json")
    r = run_cli("info", p)
    assert r.exit_code == 1 and "invalid JSON" in r.stderr
