"""Real configs that were misread (issue 25), each in the shape its publisher ships, each
read as its loader reads it; a tiny checkpoint of every accepted shape passes
`validate --strict` (docs/config-layouts.md says where each shape comes from)."""

import json
from pathlib import Path

import pytest

from ckpt_tools.configs.parse import parse_config
from ckpt_tools.configs.layouts import PRETRAINED_CONFIG_KEYS, known_keys
from ckpt_tools.errors import ConfigError, UnsupportedModelError

CORPUS = Path(__file__).parent / "data" / "configs"

# A small DeepSeek-V2-bodied language model (DeepSeek-VL2-tiny's shape: no q compression).
V2_BODY = {
    "vocab_size": 1280, "hidden_size": 256, "intermediate_size": 512, "moe_intermediate_size": 64,
    "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 8,
    "n_shared_experts": 2, "n_routed_experts": 16, "num_experts_per_tok": 4,
    "routed_scaling_factor": 1.0, "topk_method": "greedy", "n_group": 1, "topk_group": 1,
    "norm_topk_prob": False, "scoring_func": "softmax", "first_k_dense_replace": 1,
    "moe_layer_freq": 1, "q_lora_rank": None, "kv_lora_rank": 64, "qk_nope_head_dim": 32,
    "qk_rope_head_dim": 16, "v_head_dim": 32, "max_position_embeddings": 4096,
    "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "bos_token_id": 0, "eos_token_id": 1,
}
# Aux-loss-free routing as DeepSeek-VL2 and Kimi-VL (Moonlight) ship it.
NOAUX = {"topk_method": "noaux_tc", "scoring_func": "sigmoid", "n_group": 2, "topk_group": 1,
         "norm_topk_prob": True, "routed_scaling_factor": 2.446}


def _tiny_validates(run_cli, tmp_path: Path, raw: dict) -> dict:
    """make-tiny from `raw`, then validate --strict on it; the tiny config.json."""
    src = tmp_path / "config.json"
    src.write_text(json.dumps(raw))
    out = tmp_path / "tiny"
    r = run_cli("make-tiny", out, "--config", src)
    assert r.exit_code == 0, r.output
    r = run_cli("validate", out, "--strict", "--json")
    assert r.exit_code == 0, r.stdout
    return json.loads((out / "config.json").read_text())


# -- Kimi-VL: a text_config that names no class ---------------------------------------
KIMI_VL_TEXT = dict(V2_BODY, **NOAUX, vocab_size=1600, num_nextn_predict_layers=0)


@pytest.mark.parametrize("names", [
    {"model_type": "kimi_vl"},
    {"model_type": "my_kimi_vl_finetune", "architectures": ["KimiVLForConditionalGeneration"]},
    {"auto_map": {"AutoConfig": "configuration_kimi_vl.KimiVLConfig"}},
], ids=["model_type", "architectures", "auto_map"])
def test_kimi_vl_text_config_is_read_as_its_wrapper_builds_it(names):
    raw = {**names, "text_config": KIMI_VL_TEXT, "vision_config": {"model_type": "moonvit"}}
    cfg = parse_config(raw, source="kimi-vl/config.json")
    assert cfg.model_type == "deepseek_v3"
    assert cfg.reading.loader == "transformers DeepseekV3Config"
    assert "DeepseekV3Config(**text_config)" in cfg.reading.recognised_by
    assert cfg.reading.tensor_prefix == "language_model."
    assert cfg.reading.outside_plan == ["vision_config"]


def test_a_classless_text_config_of_an_unknown_wrapper_is_still_refused():
    with pytest.raises(UnsupportedModelError, match="not a DeepSeek"):
        parse_config({"model_type": "some_vlm", "text_config": KIMI_VL_TEXT})


def test_tiny_kimi_vl_validates_strict(run_cli, tmp_path):
    written = _tiny_validates(run_cli, tmp_path, {
        "architectures": ["KimiVLForConditionalGeneration"], "model_type": "kimi_vl",
        "text_config": KIMI_VL_TEXT, "vision_config": {"model_type": "moonvit"}})
    assert written["model_type"] == "kimi_vl" and "text_config" in written


# -- DeepSeek-VL2: deepseek_v2 with noaux_tc / sigmoid ---------------------------------
def _vl2(**language) -> dict:
    inner = dict(V2_BODY, model_type="deepseek_v2", architectures=["DeepseekV2ForCausalLM"],
                 **language)
    return {"architectures": ["DeepseekVLV2ForCausalLM"], "model_type": "deepseek_vl_v2",
            "language_config": inner, "vision_config": {"model_name": "siglip_so400m_patch14_384"},
            "projector_config": {"projector_type": "downsample_mlp_gelu"}}


def test_vl2_language_model_routes_noaux_tc_as_its_own_code_does():
    cfg = parse_config(_vl2(**NOAUX))  # strict: no inconsistency
    assert cfg.model_type == "deepseek_v2" and cfg.has_score_bias
    assert cfg.reading.loader == "remote-code DeepSeek-VL2 DeepseekV2Config"
    assert cfg.reading.tensor_prefix == "language."


@pytest.mark.parametrize("names", [{}, {"model_type": "deepseek_v2"}], ids=["bare", "named"])
def test_vl2_language_config_gets_deepseek_vl2_defaults(names):
    inner = {k: v for k, v in V2_BODY.items()
             if k not in ("num_hidden_layers", "scoring_func", "moe_layer_freq")}
    cfg = parse_config({"model_type": "deepseek_vl_v2", "language_config": {**inner, **names}})
    assert cfg.reading.loader == "remote-code DeepSeek-VL2 DeepseekV2Config"
    # its DeepseekV2Config's defaults (30 layers; transformers' class says 32), use_mla on
    filled = {k: cfg.reading.defaulted[k]
              for k in ("num_hidden_layers", "scoring_func", "moe_layer_freq", "use_mla")}
    assert filled == {"num_hidden_layers": 30, "scoring_func": "softmax", "moe_layer_freq": 1,
                      "use_mla": True}


def test_plain_deepseek_v2_with_noaux_tc_is_still_inconsistent_for_its_loader():
    raw = dict(V2_BODY, model_type="deepseek_v2", **NOAUX)
    with pytest.raises(ConfigError, match="topk_method.*transformers DeepseekV2Config router"):
        parse_config(raw)
    assert parse_config(raw, lenient=True).reading.inconsistencies


def test_vl2_still_needs_sigmoid_scores_for_noaux_tc():
    with pytest.raises(ConfigError, match="field 'scoring_func': noaux_tc routing needs 'sigmoid'"):
        parse_config(_vl2(**dict(NOAUX, scoring_func="softmax")))


def test_tiny_vl2_validates_strict(run_cli, tmp_path):
    written = _tiny_validates(run_cli, tmp_path, _vl2(**NOAUX))
    assert written["language_config"]["topk_method"] == "noaux_tc"


# -- DeepSeek-OCR: use_mla false --------------------------------------------------------
def test_use_mla_false_is_refused_in_one_line_saying_what_it_is(run_cli, tmp_path):
    ocr = _vl2(use_mla=False, kv_lora_rank=None, q_lora_rank=None, lm_head=True, rm_head=False)
    ocr["architectures"] = ["DeepseekOCRForCausalLM"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(ocr))
    r = run_cli("info", path)
    assert r.exit_code == 1 and "Traceback" not in r.output
    line = r.stderr.strip()
    assert line.count("\n") == 0
    assert "use_mla false" in line and "multi-head attention" in line and "DeepSeek-OCR" in line
    assert "kv_lora_rank" not in line  # not a schema error about the field MLA would need
    with pytest.raises(UnsupportedModelError, match="use_mla false"):
        parse_config(dict(V2_BODY, model_type="deepseek_v2", use_mla=False))


def test_use_mla_true_is_mla():
    assert parse_config(_vl2(use_mla=True)).kv_lora_rank == 64


# -- keys every transformers config may carry --------------------------------------------
def test_pretrained_config_keys_get_no_did_you_mean_and_kimi_tiny_validates(run_cli, tmp_path):
    kimi = json.loads((CORPUS / "create-bot-v1-kimi-k2-renamed.json").read_text())
    kimi.update(min_length=0, tie_encoder_decoder=False, is_decoder=False, num_beams=1,
                do_sample=False, output_scores=False, decoder_start_token_id=None,
                task_specific_params=None, add_cross_attention=False, pruned_heads={})
    assert parse_config(kimi, lenient=True).reading.warnings == []
    _tiny_validates(run_cli, tmp_path, kimi)
    typo = parse_config(dict(kimi, min_lenght=0), lenient=True).reading.warnings
    assert typo == ["min_lenght: unknown key, kept but not read; did you mean 'min_length'?"]


def test_pretrained_config_keys_cover_the_installed_transformers():
    transformers = pytest.importorskip("transformers")
    generation = set(transformers.GenerationConfig._get_default_generation_params())
    common = set(transformers.PreTrainedConfig().to_dict())
    assert generation <= PRETRAINED_CONFIG_KEYS
    assert common - {"model_type"} <= known_keys()


# -- hidden_act: no tensor depends on it -------------------------------------------------
def test_gelu_is_read_and_its_tiny_checkpoint_validates(run_cli, tmp_path):
    # transformers' DeepseekV2ModelTester config says hidden_act "gelu"
    raw = dict(V2_BODY, model_type="deepseek_v2", hidden_act="gelu")
    assert parse_config(raw).hidden_act == "gelu"
    assert _tiny_validates(run_cli, tmp_path, raw)["hidden_act"] == "gelu"


# -- dtype naming, foreign quantisation keys ----------------------------------------------
def test_float16_is_shown_as_f16(run_cli, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(V2_BODY, model_type="deepseek_v2", torch_dtype="float16")))
    doc = json.loads(run_cli("info", path, "--json").stdout)
    assert doc["architecture"]["weights_dtype"] == "F16"
    text = run_cli("info", path).stdout
    assert "none (F16)" in text and "BF16" not in text.split("quantization")[1].splitlines()[0]


def test_ascend_quantize_key_is_named_and_left_out_of_a_tiny_bf16_checkpoint(run_cli, tmp_path):
    raw = dict(V2_BODY, model_type="deepseek_v2", quantize="w8a8_dynamic")
    path = tmp_path / "src" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(raw))
    doc = json.loads(run_cli("info", path, "--json").stdout)
    assert "w8a8_dynamic" in doc["reading"]["quantization_scheme"]
    assert "Ascend" in run_cli("info", path).stdout
    with pytest.raises(UnsupportedModelError, match="quantised as Ascend .*w8a8_dynamic"):
        parse_config(raw)  # the writers' reading: its weights are not BF16 or block FP8
    written = _tiny_validates(run_cli, tmp_path, raw)
    assert "quantize" not in written and written["torch_dtype"] == "bfloat16"
