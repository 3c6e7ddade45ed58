"""Recognition of the architecture and layout of a config (config_layouts), describe before
you judge, near-miss keys, other quantisation schemes."""

import json
import re
from pathlib import Path

import pytest
from conftest import NEEDS_REFERENCE

from ckpt_tools.configs.parse import parse_config
from ckpt_tools.configs.layouts import edit_distance, to_inference_layout
from ckpt_tools.errors import ConfigError, UnsupportedModelError
from ckpt_tools.presets import find_preset

V3 = find_preset("v3").raw_config
CORPUS = Path(__file__).parent / "data" / "configs"


def test_renamed_model_type_is_read_by_its_architectures():
    cfg = parse_config(dict(V3, model_type="kimi_k2"), source="config.json")
    assert cfg.model_type == "deepseek_v3"
    why = cfg.reading.recognised_by
    assert why.startswith("architectures: DeepseekV3ForCausalLM; model_type kimi_k2")
    assert cfg.to_json_dict()["model_type"] == "kimi_k2"  # written back as it was


def test_kimi_k2_text_config_without_classes_is_v3():
    """Kimi-K2.5's text_config names neither architectures nor auto_map."""
    inner = {k: v for k, v in V3.items() if k not in ("architectures", "auto_map")}
    cfg = parse_config({"model_type": "kimi_k25", "text_config": dict(inner, model_type="kimi_k2")})
    assert cfg.model_type == "deepseek_v3" and "model_type kimi_k2" in cfg.reading.recognised_by
    assert cfg.reading.loader == "remote-code DeepseekV3Config"


def test_auto_map_alone_is_enough():
    raw = {k: v for k, v in V3.items() if k != "architectures"}
    raw["model_type"] = "my_finetune"
    cfg = parse_config(raw)
    assert cfg.model_type == "deepseek_v3" and "auto_map AutoConfig" in cfg.reading.recognised_by
    assert cfg.reading.loader == "remote-code DeepseekV3Config"


@pytest.mark.parametrize("model_type,arch,name", [
    ("llama", "LlamaForCausalLM", "Llama"), ("qwen2", "Qwen2ForCausalLM", "Qwen2"),
    ("qwen3_moe", "Qwen3MoeForCausalLM", "Qwen3-MoE"),
])
def test_other_architectures_refused_naming_what_they_are(model_type, arch, name):
    with pytest.raises(UnsupportedModelError) as e:
        parse_config({"model_type": model_type, "architectures": [arch], "hidden_size": 8},
                     source="config.json")
    msg = str(e.value)
    assert "\n" not in msg and f"a {name} config" in msg and arch in msg


def test_inference_config_read_and_round_tripped():
    raw = {"vocab_size": 102400, "dim": 2048, "inter_dim": 10944, "moe_inter_dim": 1408,
           "n_layers": 27, "n_dense_layers": 1, "n_heads": 16, "n_routed_experts": 64,
           "n_shared_experts": 2, "n_activated_experts": 6, "route_scale": 1.0, "q_lora_rank": 0,
           "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
           "v_head_dim": 128, "mscale": 0.707}
    cfg = parse_config(raw)
    lite = find_preset("v2-lite").config
    assert cfg.reading.layout == "inference" and cfg.model_type == "deepseek_v2"
    for field in ("hidden_size", "num_hidden_layers", "n_routed_experts", "num_experts_per_tok",
                  "q_lora_rank", "topk_method", "scoring_func", "norm_topk_prob", "n_group"):
        assert getattr(cfg, field) == getattr(lite, field), field
    assert cfg.softmax_scale() == pytest.approx(lite.softmax_scale())
    back = to_inference_layout(cfg)
    assert {k: back[k] for k in raw} == raw
    assert parse_config(back).model_dump() == cfg.model_dump()


def test_inference_config_of_v32_is_read_as_v32_and_round_tripped():
    """DeepSeek's config_671B_v3.2.json: the index_* keys make it V3.2, read with V3.2-Exp's
    ModelArgs, and written back with them."""
    raw = json.loads((CORPUS / "inference-config_671B_v3.2.json").read_text())
    cfg = parse_config(raw)
    assert cfg.model_type == "deepseek_v32" and cfg.has_indexer
    assert cfg.reading.layout == "inference"
    assert cfg.reading.loader == "DeepSeek V3.2 inference ModelArgs"
    assert (cfg.index_n_heads, cfg.index_head_dim, cfg.index_topk) == (64, 128, 2048)
    v32 = find_preset("v3.2-exp").config
    for field in ("hidden_size", "num_hidden_layers", "n_routed_experts", "num_experts_per_tok",
                  "q_lora_rank", "topk_method", "scoring_func", "norm_topk_prob", "n_group",
                  "index_n_heads", "index_head_dim", "index_topk"):
        assert getattr(cfg, field) == getattr(v32, field), field
    back = to_inference_layout(cfg)
    assert {k: back[k] for k in raw} == raw
    assert parse_config(back).model_dump() == cfg.model_dump()
    # ModelArgs' q_lora_rank default is 0 (none), which the indexer cannot read from: named
    with pytest.raises(ConfigError, match="field 'q_lora_rank'"):
        parse_config({"dim": 7168, "n_layers": 61, "n_heads": 128, "index_n_heads": 64})


def test_describe_before_judge():
    raw = dict(V3, n_routed_experts=16, n_group=8, topk_group=1, num_experts_per_tok=8)
    with pytest.raises(ConfigError, match="field 'num_experts_per_tok': 8 is more than the 2"):
        parse_config(raw)
    cfg = parse_config(raw, lenient=True)
    assert cfg.reading.inconsistencies == [
        "num_experts_per_tok: 8 is more than the 2 experts in the 1 kept group(s)"]


def test_near_miss_key_is_a_did_you_mean_warning():
    raw = dict(V3, norm_topk_probs=False, some_future_field=1, n_layers=61)
    cfg = parse_config(raw)
    warnings = cfg.reading.warnings
    assert any("norm_topk_probs" in w and "did you mean 'norm_topk_prob'" in w for w in warnings)
    assert any(w.startswith("n_layers: a key of DeepSeek's inference configs") for w in warnings)
    assert not any("some_future_field" in w for w in warnings)
    assert cfg.norm_topk_prob is True and cfg.to_json_dict()["norm_topk_probs"] is False


def test_keys_of_the_other_layout_are_named_both_ways():
    inference = {"dim": 2048, "n_layers": 27, "n_heads": 16, "hidden_size": 4096, "n_layer": 3}
    warnings = parse_config(inference).reading.warnings
    assert "hidden_size: a key of HF configs, not read from an inference config (which spells " \
           "it dim)" in warnings
    assert any(w.startswith("n_layer: unknown key") and "'n_layers'" in w for w in warnings)


def test_edit_distance():
    assert edit_distance("norm_topk_probs", "norm_topk_prob") == 1
    assert edit_distance("topk_gruop", "topk_group") == 1  # a swap is one edit
    assert edit_distance("abc", "abc") == 0


@pytest.mark.parametrize("qc,name", [
    ({"quant_method": "compressed-tensors", "format": "float-quantized"}, "compressed-tensors"),
    ({"quant_method": "modelopt", "quant_algo": "NVFP4"}, "NVIDIA ModelOpt (NVFP4)"),
    ({"quant_method": "gptq", "bits": 4}, "GPTQ"),
    ({"quant_method": "awq", "bits": 4}, "AWQ"),
])
def test_other_quantisation_schemes_named(qc, name):
    raw = dict(V3, quantization_config=qc)
    cfg = parse_config(raw, lenient=True)
    assert cfg.reading.quantization_scheme.startswith(name)
    assert cfg.quantization_config is None  # the architecture is described unquantized
    with pytest.raises(UnsupportedModelError, match=f"quantization_config is {re.escape(name)}"):
        parse_config(raw)


def test_hf_quant_config_beside_config_names_modelopt(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in V3.items()
                                                       if k != "quantization_config"}))
    (tmp_path / "hf_quant_config.json").write_text(json.dumps(
        {"producer": {"name": "modelopt"},
         "quantization": {"quant_algo": "NVFP4", "group_size": 16}}))
    from ckpt_tools.configs.parse import read_config_file
    cfg = read_config_file(tmp_path / "config.json", lenient=True)
    assert cfg.reading.quantization_scheme == "NVIDIA ModelOpt (NVFP4)"


def test_wrapped_language_model():
    raw = {"model_type": "kimi_k25", "architectures": ["KimiK25ForConditionalGeneration"],
           "text_config": dict(V3, model_type="kimi_k2"), "vision_config": {"hidden_size": 8}}
    cfg = parse_config(raw)
    r = cfg.reading
    assert cfg.model_type == "deepseek_v3" and r.wrapper_key == "text_config"
    assert r.tensor_prefix == "language_model." and r.outside_plan == ["vision_config"]
    assert "text_config (architectures: DeepseekV3ForCausalLM" in r.recognised_by


@pytest.mark.reference
def test_transformers_5_default_v2_saved_is_read(tmp_path):
    transformers = pytest.importorskip("transformers", reason=NEEDS_REFERENCE)
    transformers.DeepseekV2Config(num_experts_per_tok=6).save_pretrained(tmp_path)
    cfg = parse_config(json.loads((tmp_path / "config.json").read_text()))
    assert cfg.reading.layout == "transformers-5"
    got = (cfg.scoring_func, cfg.n_group, cfg.topk_group, cfg.q_lora_rank)
    assert got == ("softmax", 1, 1, 1536)
    transformers.DeepseekV2Config().save_pretrained(tmp_path)  # top-k left null: cannot route
    with pytest.raises(ConfigError, match="field 'num_experts_per_tok': null"):
        parse_config(json.loads((tmp_path / "config.json").read_text()))


def test_validate_strict_fails_on_a_typo(tmp_path, run_cli):
    out = tmp_path / "t"
    assert run_cli("make-tiny", out, "--preset", "v3").exit_code == 0
    config = json.loads((out / "config.json").read_text())  # make-tiny --set refuses a typo
    config["norm_topk_probs"] = config.pop("norm_topk_prob")
    (out / "config.json").write_text(json.dumps(config))
    assert run_cli("validate", out).exit_code == 0
    r = run_cli("validate", out, "--strict")
    # report lines wrap at the terminal's width (80 columns here): compare the words
    assert r.exit_code == 1 and "did you mean 'norm_topk_prob'" in " ".join(r.stdout.split())


def test_info_says_what_was_recognised(tmp_path, run_cli):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(dict(V3, model_type="kimi_k2", n_group=3)))
    r = run_cli("info", p)
    assert r.exit_code == 0
    assert "architectures: DeepseekV3ForCausalLM; model_type kimi_k2" in " ".join(
        r.stdout.split())  # lines wrap at the terminal's width (80 columns here)
    assert "n_group" in r.stderr and "inconsistent" in r.stderr
    r = run_cli("info", p, "--json")
    doc = json.loads(r.stdout)
    assert doc["reading"]["inconsistencies"][0].startswith("n_group: 3 does not divide")


def test_checkpoint_with_another_scheme_is_described_and_writers_refuse(tmp_path, run_cli):
    src = tmp_path / "ct"
    assert run_cli("make-tiny", src, "--config", "v3").exit_code == 0
    raw = json.loads((src / "config.json").read_text())
    raw["quantization_config"] = {"quant_method": "compressed-tensors", "format": "pack-quantized"}
    (src / "config.json").write_text(json.dumps(raw))
    doc = json.loads(run_cli("info", src, "--json").stdout)
    assert doc["reading"]["quantization_scheme"] == "compressed-tensors (pack-quantized)"
    assert doc["files"]["bytes_by_dtype"]  # the dtypes the headers hold
    assert run_cli("diff", src, "v3").exit_code == 0
    r = run_cli("upcast", src, tmp_path / "out")
    assert r.exit_code == 1 and "quantization_config is compressed-tensors" in r.stderr
    assert r.stderr.strip().count("\n") == 0 and not (tmp_path / "out").exists()
    r = run_cli("validate", src, "--json")
    assert r.exit_code == 1
    assert [f["code"] for f in json.loads(r.stdout)["findings"]] == ["config-quantization"]


def _wrap(src, dst, prefix, wrapper):
    """A checkpoint of a multimodal wrapper: src's tensors under `prefix`, a vision tower
    beside them, and the language config under `wrapper`."""
    import numpy as np

    from ckpt_tools.io.index import INDEX_FILE, ShardIndex, write_index
    from ckpt_tools.io.safetensors_io import SafetensorsReader, SafetensorsWriter

    dst.mkdir()
    weight_map, total = {}, 0
    for shard in sorted(src.glob("*.safetensors")):
        with SafetensorsReader(shard) as r:
            names = r.names
            entries = [(prefix + n, r.entry(n).dtype, r.entry(n).shape) for n in names]
            extra = [("vision_tower.patch_embed.weight", "F32", (4, 3))] if not weight_map else []
            with SafetensorsWriter(dst / shard.name, entries + extra) as w:
                for n in names:
                    w.write_bytes(prefix + n, r.iter_chunks(n))
                for name, _, shape in extra:
                    w.write(name, np.ones(shape, np.float32))
        for name, dtype, shape in entries + extra:
            weight_map[name] = shard.name
    for shard in sorted(dst.glob("*.safetensors")):
        with SafetensorsReader(shard) as r:
            total += sum(r.entry(n).nbytes for n in r.names)
    write_index(dst / INDEX_FILE, ShardIndex(weight_map, total))
    text = json.loads((src / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps(
        {"model_type": "kimi_k25", "architectures": ["KimiK25ForConditionalGeneration"],
         wrapper: text, "vision_config": {"hidden_size": 4}}))


@pytest.mark.parametrize("wrapper,prefix", [("text_config", "language_model."),
                                            ("language_config", "language.")])
def test_wrapped_checkpoint_info_diff_validate(tmp_path, run_cli, wrapper, prefix):
    src, wrapped = tmp_path / "lm", tmp_path / "wrapped"
    assert run_cli("make-tiny", src, "--config", "kimi-k2", "--fp8").exit_code == 0
    _wrap(src, wrapped, prefix, wrapper)
    doc = json.loads(run_cli("info", wrapped, "--json").stdout)
    assert doc["reading"]["tensor_prefix"] == prefix
    assert doc["reading"]["outside_plan"] == ["vision_config"]
    assert doc["files"]["tensors"] == doc["plan"]["tensors"] + 1
    r = run_cli("validate", wrapped, "--strict", "--json")
    assert r.exit_code == 0, r.stdout
    findings = json.loads(r.stdout)["findings"]
    codes = [(x["code"], x["tensor"]) for x in findings]
    assert codes == [("tensor-outside-plan", "vision_tower.")]
    r = run_cli("diff", wrapped, src, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["same_architecture"]
    r = run_cli("upcast", wrapped, tmp_path / "out")  # the vision tower is copied as is
    assert r.exit_code == 0, r.output
    assert run_cli("validate", tmp_path / "out", "--strict").exit_code == 0


def test_wrapped_checkpoint_end_to_end(tmp_path, run_cli):
    """make-tiny keeps the wrapper (and so the prefix); upcast and reshard by size work on
    the language-model tensors; the forward pass of a wrapped copy equals the bare one;
    DeepSeek's model-parallel layout refuses it in one line."""
    import numpy as np

    from ckpt_tools.inventory.checkpoint import Checkpoint
    from ckpt_tools.reference import forward

    wrapped_cfg = tmp_path / "wrapped.json"
    wrapped_cfg.write_text(json.dumps({"model_type": "kimi_k25",
                                       "text_config": find_preset("kimi-k2").raw_config}))
    fp8, bf16, by_size = tmp_path / "fp8", tmp_path / "bf16", tmp_path / "by-size"
    assert run_cli("make-tiny", fp8, "--config", wrapped_cfg, "--fp8").exit_code == 0
    with Checkpoint(fp8) as ck:
        assert all(n.startswith("language_model.") for n in ck.index.weight_map)
    assert run_cli("upcast", fp8, bf16).exit_code == 0
    assert run_cli("validate", bf16, "--strict").exit_code == 0
    assert run_cli("reshard", bf16, by_size, "--max-shard-size", "100KB").exit_code == 0
    assert run_cli("validate", by_size, "--strict").exit_code == 0
    r = run_cli("verify", by_size, "--against", fp8)
    assert r.exit_code == 0, r.output
    r = run_cli("reshard", bf16, tmp_path / "mp", "--to", "deepseek-mp", "--model-parallel", "2")
    assert r.exit_code == 1 and "wrapped language model" in r.stderr

    bare, wrapped = tmp_path / "bare", tmp_path / "wrapped"
    assert run_cli("make-tiny", bare, "--config", "kimi-k2").exit_code == 0
    _wrap(bare, wrapped, "language_model.", "text_config")
    tokens = [0, 15, 3, 7, 100]
    np.testing.assert_array_equal(forward(Checkpoint(wrapped), tokens),
                                  forward(Checkpoint(bare), tokens))
