"""Kimi-K2 and Moonlight: tiny checkpoints of their shape go through upcast, reshard
(including DeepSeek's model-parallel layout and its inference config) and verify; the
forward pass of a tiny Kimi-K2 matches transformers' DeepseekV3ForCausalLM."""

import json

import numpy as np
import pytest
from conftest import NEEDS_REFERENCE

from ckpt_tools.inventory.checkpoint import Checkpoint
from ckpt_tools.configs.parse import parse_config, read_config_file
from ckpt_tools.configs.layouts import INFERENCE_CONFIG_FILE
from ckpt_tools.presets import find_preset
from ckpt_tools.reference import forward

TOKENS = [0, 15, 3, 7, 100, 200, 5, 9, 11, 300, 42, 64]


@pytest.mark.parametrize("preset", ["kimi-k2", "moonlight"])
def test_make_tiny_keeps_the_structure_and_says_what_it_shrank(preset, tmp_path, run_cli):
    out = tmp_path / preset
    r = run_cli("make-tiny", out, "--config", preset, "--fp8", "--json")
    assert r.exit_code == 0, r.output
    shrunk = json.loads(r.stdout)["shrunk"]
    assert shrunk["hidden_size"] == [find_preset(preset).raw_config["hidden_size"], 96]
    big, tiny = find_preset(preset).config, read_config_file(out / "config.json")
    for field in ("model_type", "topk_method", "scoring_func", "n_group", "norm_topk_prob",
                  "routed_scaling_factor", "moe_layer_freq", "num_nextn_predict_layers"):
        assert getattr(tiny, field) == getattr(big, field), field
    assert (tiny.q_lora_rank is None) == (big.q_lora_rank is None)
    assert tiny.first_k_dense_replace == big.first_k_dense_replace == 1
    assert tiny.n_shared_experts == big.n_shared_experts
    if preset == "kimi-k2":
        assert json.loads((out / "config.json").read_text())["model_type"] == "kimi_k2"


@pytest.mark.parametrize("preset", ["kimi-k2", "moonlight"])
def test_upcast_reshard_verify(preset, tmp_path, run_cli):
    fp8, bf16, mp, back = (tmp_path / n for n in ("fp8", "bf16", "mp", "back"))
    assert run_cli("make-tiny", fp8, "--config", preset, "--fp8", "--shards", "2").exit_code == 0
    assert run_cli("upcast", fp8, bf16).exit_code == 0
    assert run_cli("validate", bf16, "--strict").exit_code == 0
    r = run_cli("reshard", bf16, mp, "--to", "deepseek-mp", "--model-parallel", "2")
    assert r.exit_code == 0, r.output
    assert run_cli("validate", mp).exit_code == 0
    assert run_cli("reshard", mp, back, "--to", "hf").exit_code == 0
    r = run_cli("verify", back, "--against", bf16)
    assert r.exit_code == 0, r.output
    r = run_cli("verify", mp, "--against", bf16)
    assert r.exit_code == 0, r.output
    # the FP8 checkpoint itself splits across 2 ranks, and computes what it computed
    mp8 = tmp_path / "mp8"
    r = run_cli("reshard", fp8, mp8, "--to", "deepseek-mp", "--model-parallel", "2")
    assert r.exit_code == 0, r.output
    r = run_cli("verify", mp8, "--against", fp8)
    assert r.exit_code == 0, r.output


def test_reshard_to_deepseek_mp_writes_the_inference_config(tmp_path, run_cli):
    src, mp = tmp_path / "src", tmp_path / "mp"
    assert run_cli("make-tiny", src, "--config", "kimi-k2").exit_code == 0
    r = run_cli("reshard", src, mp, "--to", "deepseek-mp", "--model-parallel", "2")
    assert r.exit_code == 0, r.output
    inference = json.loads((mp / INFERENCE_CONFIG_FILE).read_text())
    assert inference["dim"] == 96 and inference["n_routed_experts"] == 8
    assert inference["score_func"] == "sigmoid" and inference["dtype"] == "bf16"
    assert inference["route_scale"] == 2.827 and inference["rope_factor"] == 32.0
    # read back, it is the same model (less what the inference format cannot say)
    hf, back = read_config_file(src / "config.json"), parse_config(inference)
    for field in ("hidden_size", "num_hidden_layers", "first_k_dense_replace", "n_group",
                  "topk_group", "num_experts_per_tok", "routed_scaling_factor", "q_lora_rank",
                  "topk_method", "norm_topk_prob", "rope_theta"):
        assert getattr(back, field) == getattr(hf, field), field
    assert back.softmax_scale() == pytest.approx(hf.softmax_scale())
    r = run_cli("reshard", mp, tmp_path / "hf", "--to", "hf")
    assert r.exit_code == 0 and not (tmp_path / "hf" / INFERENCE_CONFIG_FILE).exists()


@pytest.mark.reference
def test_tiny_kimi_k2_forward_matches_transformers_deepseek_v3(tmp_path, run_cli):
    torch = pytest.importorskip("torch", reason=NEEDS_REFERENCE)
    transformers = pytest.importorskip("transformers", reason=NEEDS_REFERENCE)
    transformers.logging.set_verbosity_error()
    path = tmp_path / "kimi"
    assert run_cli("make-tiny", path, "--config", "kimi-k2", "--seed", "7").exit_code == 0
    # kimi_k2 is not a transformers model_type, and transformers 5 picks its weight
    # conversions (fusing the routed experts) by model_type: loaded as is, the experts
    # would stay uninitialised. Load the class `architectures` names, with its own type.
    raw = json.loads((path / "config.json").read_text())
    assert raw["model_type"] == "kimi_k2"
    config = transformers.DeepseekV3Config(**{k: v for k, v in raw.items() if k != "model_type"})
    model, info = transformers.DeepseekV3ForCausalLM.from_pretrained(
        path, config=config, dtype=torch.float32, attn_implementation="eager",
        output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        expected = model(torch.tensor([TOKENS])).logits[0].numpy()
    got = forward(Checkpoint(path), TOKENS)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("preset", ["v2-lite", "v2", "v2.5", "v3", "r1", "r1-0528", "v3.1",
                                    "v3.2-exp", "v3.2", "kimi-k2", "moonlight", "v4-flash",
                                    "v4-pro"])
def test_preset_figures_agree_with_the_published_ones(preset, run_cli):
    doc = json.loads(run_cli("info", preset, "--json").stdout)
    pub = doc["published"]
    assert pub["source"].startswith("https://")
    assert pub["total_agrees"] and pub["activated_agrees"], (doc["parameters"], pub)


def test_rounds_to_is_a_real_check():
    from ckpt_tools.commands.info import rounds_to

    assert rounds_to(1_026_408_232_448, "1T") and not rounds_to(2_100_000_000_000, "1T")
    assert not rounds_to(400_000_000_000, "1T")
    assert rounds_to(36_625_618_432, "37B") and not rounds_to(36_400_000_000, "37B")
    assert rounds_to(2_451_435_008, "2.4B") and not rounds_to(2_600_000_000, "2.4B")
    assert not rounds_to(15_960_110_208, "15.29B")  # the paper's non-embedding count
