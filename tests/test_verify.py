"""`ckpt forward` / `ckpt verify`: conversions that keep the function pass, a corrupted
expert fails naming its layer, and the command-line contract holds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import flip_sign_on_disk

from ckpt_tools.inventory.checkpoint import Checkpoint
from ckpt_tools.errors import ConfigError
from ckpt_tools.reference import Model, deepseek
from ckpt_tools.commands.verify import forward, open_tensor_source, verify

TOKENS = "0,15,3,7,100,200,5,9,11,300"
IDS = [int(t) for t in TOKENS.split(",")]


def test_fp8_checkpoint_verifies_against_its_bf16_upcast(make_ckpt, run_cli, tmp_path):
    convert = pytest.importorskip("ckpt_tools.commands.convert")
    fp8 = make_ckpt("v3", fp8=True)
    bf16 = tmp_path / "upcast"
    convert.upcast(fp8, bf16, workers=1)
    r = run_cli("verify", fp8, "--against", bf16, "--tokens", TOKENS, "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] and report["first_divergence"] is None
    stages = ["layer 0", "layer 1", "layer 2", "layer 3", "output"]
    assert [s["stage"] for s in report["stages"]] == stages
    # BF16 rounding is visible but small; exact agreement would mean nothing was compared
    assert 0 < report["max_rel_error"] < report["rtol"]
    assert report["top1_agreement"] >= 0.9
    assert "quantization_config" not in " ".join(report["config_differences"])


def test_hf_checkpoint_verifies_exactly_against_its_deepseek_mp_reshard(make_ckpt, tmp_path):
    reshard = pytest.importorskip("ckpt_tools.commands.reshard")
    hf = make_ckpt("v3")
    mp = tmp_path / "mp"
    reshard.to_deepseek_mp(hf, mp, 2)
    source = open_tensor_source(mp)
    assert type(source).__name__ == "MpCheckpoint"
    report = verify(hf, mp, IDS)
    assert report.ok and report.max_abs_error == 0.0
    assert report.top1_agreement == 1.0 and report.top5_agreement == 1.0


def test_a_corrupted_expert_fails_naming_its_layer_and_first_position(make_ckpt, run_cli,
                                                                      tmp_path, monkeypatch):
    good = make_ckpt("v3")
    model = Model(Checkpoint(good))
    chosen = []
    real_route = deepseek.route
    monkeypatch.setattr(deepseek, "route", lambda *a: chosen.append(real_route(*a)) or chosen[-1])
    model.forward(IDS)
    monkeypatch.undo()
    config = model.config
    layer = [k for k in range(config.num_hidden_layers) if config.is_moe_layer(k)][-1]
    experts = chosen[-1][0]  # [t, k] at the last MoE layer
    expert = int(experts[-1, 0])  # one the last token uses
    first_user = int(np.flatnonzero((experts == expert).any(axis=1))[0])

    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    flip_sign_on_disk(bad, f"model.layers.{layer}.mlp.experts.{expert}.down_proj.weight")

    report = verify(bad, good, IDS)
    assert not report.ok
    d = report.first_divergence
    assert (d.stage, d.layer, d.position, d.token) == (f"layer {layer}", layer, first_user,
                                                       IDS[first_user])
    assert all(s.within_tolerance for s in report.stages if s.layer is not None and s.layer < layer)

    r = run_cli("verify", bad, "--against", good, "--tokens", TOKENS)
    assert r.exit_code == 1
    assert f"FAILED: layer {layer} diverges first, at position {first_user}" in r.stdout
    r = run_cli("verify", bad, "--against", good, "--tokens", TOKENS, "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["first_divergence"]["layer"] == layer


def test_forward_writes_logits_and_verify_reads_them_back(make_ckpt, run_cli, tmp_path):
    ckpt = make_ckpt("v2-lite")
    out = tmp_path / "ref.npy"
    r = run_cli("forward", ckpt, "--tokens", TOKENS, "--out", out)
    assert r.exit_code == 0, r.stderr
    logits = np.load(out)
    assert logits.dtype == np.float32 and logits.shape == (len(IDS), 320)
    np.testing.assert_array_equal(logits, forward(ckpt, IDS))
    assert not list(tmp_path.glob("*.partial"))

    r = run_cli("verify", ckpt, "--logits", out, "--tokens", TOKENS, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["max_abs_error"] == 0.0

    shifted = logits.copy()
    shifted[4, 7] += 1.0
    np.save(out, shifted)
    r = run_cli("verify", ckpt, "--logits", out, "--tokens", TOKENS, "--json")
    assert r.exit_code == 1
    report = json.loads(r.stdout)
    assert report["first_divergence"] == {
        "stage": "output", "layer": None, "position": 4, "token": IDS[4], "stream": None,
        "abs_error": pytest.approx(1.0, abs=1e-6)}
    assert [p["within_tolerance"] for p in report["positions"]] == [i != 4 for i in range(len(IDS))]


def test_layers_k_computes_and_compares_hidden_states_only(make_ckpt, run_cli, tmp_path):
    ckpt = make_ckpt("v3")
    out = tmp_path / "h.npy"
    r = run_cli("forward", ckpt, "--tokens", TOKENS, "--layers", "2", "--out", out)
    assert r.exit_code == 0, r.stderr
    assert np.load(out).shape == (len(IDS), 96)
    r = run_cli("verify", ckpt, "--logits", out, "--tokens", TOKENS, "--layers", "2", "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["output"] == "hidden_states" and report["top1_agreement"] is None
    r = run_cli("verify", ckpt, "--against", ckpt, "--layers", "1", "--json")
    assert [s["stage"] for s in json.loads(r.stdout)["stages"]] == ["layer 0"]


def test_npz_output_carries_the_tokens_for_verify(make_ckpt, run_cli, tmp_path):
    ckpt = make_ckpt("v3")
    out = tmp_path / "ref.npz"
    assert run_cli("forward", ckpt, "--tokens", TOKENS, "--out", out).exit_code == 0
    with np.load(out) as data:
        assert data["tokens"].tolist() == IDS and data["logits"].shape == (len(IDS), 320)
    r = run_cli("verify", ckpt, "--logits", out, "--json")  # tokens come from the file
    assert r.exit_code == 0 and json.loads(r.stdout)["tokens"] == IDS
    assert run_cli("verify", ckpt, "--logits", out, "--tokens", "1,2").exit_code == 2


def test_mtp_logits_have_one_row_per_predicted_position(make_ckpt, run_cli, tmp_path):
    ckpt = make_ckpt("v3")
    out = tmp_path / "mtp.npy"
    r = run_cli("forward", ckpt, "--tokens", TOKENS, "--mtp", "--out", out, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["output"] == "mtp_logits"
    assert np.load(out).shape == (len(IDS) - 1, 320)
    r = run_cli("forward", make_ckpt("v2"), "--mtp", "--out", out)
    assert r.exit_code == 1 and "0 MTP module(s)" in r.stderr


def test_bad_invocations_are_usage_errors_or_one_line_errors(make_ckpt, run_cli, tmp_path):
    ckpt = make_ckpt("v3")
    ref = tmp_path / "ref.npy"
    np.save(ref, np.zeros((3, 320), np.float32))
    assert run_cli("verify", ckpt).exit_code == 2
    assert run_cli("verify", ckpt, "--against", ckpt, "--logits", ref).exit_code == 2
    assert run_cli("forward", ckpt, "--tokens", "1,x", "--out", ref).exit_code == 2
    r = run_cli("verify", ckpt, "--logits", ref, "--tokens", "1,2")
    assert r.exit_code == 1
    assert "expected logits of shape [2, 320], found [3, 320]" in r.stderr
    r = run_cli("forward", ckpt, "--tokens", "1,999", "--out", ref)
    assert r.exit_code == 1 and "id 999 is outside the vocabulary" in r.stderr
    r = run_cli("forward", ckpt, "--layers", "9", "--out", ref)
    assert r.exit_code == 1 and "layers: must be in [0, 4]" in r.stderr


def test_checkpoints_of_different_shapes_are_not_compared(make_ckpt):
    a = make_ckpt("v3")
    b = make_ckpt("v3", name="wide", overrides={"hidden_size": 128})
    with pytest.raises(ConfigError, match="hidden_size 96 vs 128"):
        verify(a, b)
