"""Absent keys get the defaults of the loader the config names (ckpt_tools.configs.defaults).

`python tests/test_config_defaults.py` rewrites tests/data/loader_defaults.json from the
installed transformers (the committed copy keeps the table checked without it).
"""

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import NEEDS_REFERENCE

from ckpt_tools.configs.parse import (DeepseekV2Config, DeepseekV3Config, DeepseekV32Config,
                                      parse_config)
from ckpt_tools.configs.defaults import CLASS_DEFAULTS, IMPLIED, loader_defaults
from ckpt_tools.errors import ConfigError
from ckpt_tools.presets import find_preset
from ckpt_tools.families import FAMILIES

# a derived family declares its loader's defaults in its registry module
OWN = {f.loader: f for f in FAMILIES.values() if f.loader}
ALL_CLASS_DEFAULTS = {**CLASS_DEFAULTS, **{loader: f.class_defaults for loader, f in OWN.items()}}


def all_loader_defaults(loader: str) -> dict:
    return OWN[loader].loader_defaults() if loader in OWN else loader_defaults(loader)

COMMITTED = Path(__file__).parent / "data" / "loader_defaults.json"
TRANSFORMERS_LOADERS = ("transformers DeepseekV2Config", "transformers DeepseekV3Config",
                        "transformers DeepseekV32Config", "transformers Glm4MoeLiteConfig",
                        "transformers Mistral4Config", "transformers GlmMoeDsaConfig",
                        "transformers MistralLarge4TextConfig")


def transformers_class_defaults() -> dict:
    """The constructor defaults of transformers' classes, for the keys our table holds."""
    import transformers

    out = {"transformers_version": transformers.__version__}
    for loader in TRANSFORMERS_LOADERS:
        cls = getattr(transformers, loader.split()[1])
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        for alias, name in cls.attribute_map.items():
            if alias in fields:
                fields[name] = fields.pop(alias)
        rope = cls().rope_parameters  # v5 keeps rope_theta / scaling type here
        fields["rope_theta"] = rope["rope_theta"]
        kind = rope.get("rope_type", "default")
        # as our reader spells it: hub `rope_scaling`, without the keys derived from the widths
        fields["rope_scaling"] = None if kind == "default" else {"type": kind, **{
            k: v for k, v in rope.items() if k not in (
                "rope_type", "rope_theta", "max_position_embeddings", "partial_rotary_factor")}}
        out[loader] = {k: fields[k] for k in sorted(ALL_CLASS_DEFAULTS[loader]) if k in fields}
    return out


def test_table_equals_committed_copy_of_transformers_defaults():
    committed = json.loads(COMMITTED.read_text())
    for loader in TRANSFORMERS_LOADERS:
        assert committed[loader] == ALL_CLASS_DEFAULTS[loader], loader


@pytest.mark.reference
def test_committed_copy_equals_installed_transformers():
    pytest.importorskip("transformers", reason=NEEDS_REFERENCE)
    live = transformers_class_defaults()
    committed = json.loads(COMMITTED.read_text())
    for loader in TRANSFORMERS_LOADERS:
        assert live[loader] == committed[loader], loader


@pytest.mark.reference
def test_implied_values_are_what_transformers_modeling_does():
    """transformers' V3 router is noaux_tc over sigmoid scores (it has a correction bias) and
    every layer from first_k_dense_replace on is MoE; its V2 router scores with softmax."""
    transformers = pytest.importorskip("transformers", reason=NEEDS_REFERENCE)
    torch = pytest.importorskip("torch", reason=NEEDS_REFERENCE)
    tiny = {"vocab_size": 32, "hidden_size": 16, "intermediate_size": 32,
            "moe_intermediate_size": 8, "num_hidden_layers": 3, "num_attention_heads": 2,
            "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 2,
            "topk_group": 1, "first_k_dense_replace": 1, "kv_lora_rank": 8, "q_lora_rank": 8,
            "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 8}
    v3 = transformers.DeepseekV3ForCausalLM(transformers.DeepseekV3Config(**tiny))
    names = dict(v3.state_dict())
    assert "model.layers.2.mlp.gate.e_score_correction_bias" in names  # noaux_tc
    assert "model.layers.0.mlp.gate_proj.weight" in names  # dense first layer
    assert "model.layers.1.mlp.gate.weight" in names
    v2_config = transformers.DeepseekV2Config(**tiny, topk_method="greedy")
    v2 = transformers.DeepseekV2ForCausalLM(v2_config)
    gate = v2.model.layers[1].mlp.gate
    with torch.no_grad():
        gate.weight.normal_()
        _, weights, _ = gate(torch.randn(5, 16))
    assert torch.all(weights < 1) and torch.all(weights > 0)  # softmax probabilities
    assert IMPLIED["transformers DeepseekV2Config"]["scoring_func"] == "softmax"
    assert IMPLIED["transformers DeepseekV3Config"]["topk_method"] == "noaux_tc"
    # V3.2: V3's router (with the correction bias); its config has no MTP field at all
    v32 = transformers.DeepseekV32ForCausalLM(transformers.DeepseekV32Config(
        **tiny, index_n_heads=2, index_head_dim=8, index_topk=4))
    assert "model.layers.2.mlp.gate.e_score_correction_bias" in dict(v32.state_dict())
    fields = {f.name for f in dataclasses.fields(transformers.DeepseekV32Config)}
    assert not fields & {"num_mtp_layers", "num_nextn_predict_layers"}
    assert IMPLIED["transformers DeepseekV32Config"]["num_nextn_predict_layers"] == 0


# A config of each loader from which keys are removed one at a time.
def _base(loader: str) -> dict:
    if loader == "DeepSeek V3.2 inference ModelArgs":
        return {**_base("DeepSeek inference ModelArgs"), "index_n_heads": 64,
                "index_head_dim": 128, "index_topk": 2048}
    if loader == "DeepSeek inference ModelArgs":
        return {"vocab_size": 129280, "dim": 7168, "inter_dim": 18432, "moe_inter_dim": 2048,
                "n_layers": 61, "n_dense_layers": 3, "n_heads": 128, "n_routed_experts": 256,
                "n_shared_experts": 1, "n_activated_experts": 8, "n_expert_groups": 8,
                "n_limited_groups": 4, "route_scale": 2.5, "score_func": "sigmoid",
                "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
                "qk_rope_head_dim": 64, "v_head_dim": 128, "dtype": "fp8"}
    derived = {"Glm4MoeLite": "glm-4.7-flash", "Mistral4": "mistral-4", "GlmMoeDsa": "glm-5",
               "MistralLarge4Text": "mistral-large-4", "LongcatFlash": "longcat-flash"}
    for cls, preset in derived.items():
        if cls in loader:  # hub spelling: rope_theta at the top, rope_scaling
            raw = find_preset(preset).raw_config
            raw = raw.get("text_config", raw)  # a wrapper's language model
            rope = raw.pop("rope_parameters")
            raw["rope_theta"] = rope.pop("rope_theta")
            kind = rope.pop("rope_type")
            raw["rope_scaling"] = None if kind == "default" else {"type": kind, **rope}
            return raw
    raw = find_preset("v3.2" if "V32" in loader else "v3" if "V3" in loader
                      else "v2.5").raw_config
    if loader.startswith("transformers"):
        raw.pop("auto_map", None)
    return raw


INFERENCE_NAMES = {"hidden_size": "dim", "intermediate_size": "inter_dim",
                   "moe_intermediate_size": "moe_inter_dim", "num_hidden_layers": "n_layers",
                   "first_k_dense_replace": "n_dense_layers", "num_attention_heads": "n_heads",
                   "num_experts_per_tok": "n_activated_experts", "n_group": "n_expert_groups",
                   "topk_group": "n_limited_groups", "scoring_func": "score_func",
                   "routed_scaling_factor": "route_scale"}
CASES = [(loader, key) for loader in ALL_CLASS_DEFAULTS for key in all_loader_defaults(loader)]


@pytest.mark.parametrize("loader,key", CASES,
                         ids=[f"{ld.split()[0]}-{ld.split()[-1]}-{k}" for ld, k in CASES])
def test_absent_key_gets_the_loaders_default(loader, key):
    raw = _base(loader)
    written = INFERENCE_NAMES.get(key, key) if loader.startswith("DeepSeek") else key
    if written not in raw and key not in ("rope_theta", "rms_norm_eps", "moe_layer_freq",
                                          "num_nextn_predict_layers", "topk_method",
                                          "scoring_func", "bos_token_id", "eos_token_id",
                                          "hidden_act", "tie_word_embeddings", "attention_bias",
                                          "rope_scaling", "num_key_value_heads"):
        pytest.skip(f"{key} is not written in this layout")
    raw.pop(written, None)
    if key == "num_attention_heads":
        raw.pop("num_key_value_heads", None)  # MLA: one key head per query head
    if key in ("topk_method", "scoring_func") and loader.startswith("transformers"):
        raw.pop("topk_method", None), raw.pop("scoring_func", None)  # implied together
    want = all_loader_defaults(loader)[key]
    needs_groups = key in ("n_group", "topk_group") and raw.get("topk_method") != "greedy"
    if want is None and (key in ("num_experts_per_tok", "n_routed_experts") or needs_groups):
        with pytest.raises(ConfigError, match=f"field '{key}': null"):
            parse_config(raw)
        return
    if key == "q_lora_rank" and want is None and "V3.2" in loader:
        with pytest.raises(ConfigError, match="field 'q_lora_rank'"):  # the indexer reads it
            parse_config(raw)
        return
    if want == "gready":  # the V2 remote code's typo: its own router rejects it, so do we
        with pytest.raises(ConfigError, match="field 'topk_method'"):
            parse_config(raw)
        return
    if key == "scoring_func" and loader == "DeepSeek inference ModelArgs":
        raw["n_expert_groups"] = raw["n_limited_groups"] = 1  # softmax: a V2-style router
    cfg = parse_config(raw, lenient=True)
    # a family's own key names (LongCat-Flash's num_layers) read into the common fields
    got = getattr(cfg, {v: k for k, v in type(cfg).file_keys().items()}.get(key, key))
    problems = "".join(cfg.reading.inconsistencies)
    assert "num_key_value_heads" not in problems or key == "num_key_value_heads"
    if key == "n_shared_experts" and want is None:
        want = 0  # the remote code builds no shared MLP for null
    if key == "num_key_value_heads" and want is None:
        want, got = cfg.num_attention_heads, got or cfg.num_attention_heads
    if key == "rope_scaling" and loader.startswith("DeepSeek"):
        pytest.skip("the inference layout always has YaRN (ModelArgs defaults)")
    if key == "rope_scaling" and got is not None:  # Mistral 4 / Large 4: YaRN unless the
        got = got.model_dump(exclude_unset=True)  # file says; as the loader spells it
    assert got == want
    assert key in cfg.reading.defaulted


# What DeepSeek's inference code does where its ModelArgs has no field (model.py: F.silu,
# a separate ParallelEmbedding and ColumnParallelLinear head, bias-free Linear layers).
INFERENCE_FIXED = {"hidden_act": "silu", "tie_word_embeddings": False, "attention_bias": False,
                   "num_key_value_heads": None, "bos_token_id": None, "eos_token_id": None}


@pytest.mark.parametrize("cls", [DeepseekV2Config, DeepseekV3Config, DeepseekV32Config])
def test_schema_field_defaults_are_reached_only_where_they_are_the_loaders(cls):
    """parse_config fills every key of the loader's table first, so a pydantic field default
    (exported in the JSON schema) is reached only for a loader without that key; loader-
    dependent fields (n_group, q_lora_rank, ...) have no pydantic default at all."""
    for loader in ALL_CLASS_DEFAULTS:
        table = all_loader_defaults(loader)
        for name, field in cls.model_fields.items():
            if field.is_required() or name in table or name in (
                    "architectures", "quantization_config", "torch_dtype", "rope_scaling"):
                continue
            assert loader.startswith("DeepSeek") and loader.endswith("inference ModelArgs"), (
                name, loader)
            assert INFERENCE_FIXED[name] == field.default, name
    for name in ("n_group", "topk_group", "norm_topk_prob", "routed_scaling_factor",
                 "first_k_dense_replace", "q_lora_rank", "topk_method", "scoring_func",
                 *(("index_n_heads", "index_head_dim", "index_topk")
                   if cls is DeepseekV32Config else ())):
        assert cls.model_fields[name].is_required(), name


def test_kimi_style_missing_keys_read_with_remote_v3_defaults():
    raw = find_preset("v3").raw_config
    for key in ("norm_topk_prob", "n_group", "topk_group", "routed_scaling_factor",
                "first_k_dense_replace", "q_lora_rank", "scoring_func"):
        raw.pop(key)
    cfg = parse_config(raw)
    assert (cfg.norm_topk_prob, cfg.n_group, cfg.topk_group, cfg.routed_scaling_factor,
            cfg.first_k_dense_replace, cfg.q_lora_rank) == (True, 8, 4, 2.5, 3, 1536)


def test_diff_tells_apart_models_that_differ_only_by_a_loader_default(tmp_path, run_cli):
    """A transformers-loaded V2 config without q_lora_rank has q_a_proj/q_b_proj (1536),
    not V2-Lite's plain q_proj: diff must not call them the same architecture."""
    lite = {k: v for k, v in find_preset("v2-lite").raw_config.items() if k != "auto_map"}
    absent = {k: v for k, v in lite.items() if k != "q_lora_rank"}
    (tmp_path / "lite.json").write_text(json.dumps(lite))
    (tmp_path / "absent.json").write_text(json.dumps(absent))
    doc = json.loads(run_cli("diff", tmp_path / "lite.json", tmp_path / "absent.json",
                             "--json").stdout)
    assert doc["verdict"] == "different_architecture"
    assert doc["b"]["reading"]["defaulted"] == {"q_lora_rank": 1536}


if __name__ == "__main__":
    COMMITTED.write_text(json.dumps(transformers_class_defaults(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {COMMITTED}")
