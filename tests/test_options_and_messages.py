"""Options are honoured or refused before anything is written, and one situation gets one
message whatever the command: each refusal and each message has its test here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ckpt_tools import verify
from ckpt_tools.io.index import INDEX_FILE, read_index
from ckpt_tools.configs.sources import not_found


def _usage_refusal(r, dst, *words):
    """Exit 2, one line naming why, nothing written and no 'writing ...' announced."""
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr)
    assert not dst.exists(), "written before refusing"
    assert "writing" not in r.stderr and "Traceback" not in r.stderr
    error = r.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in error, error


# -- make-tiny: refused before anything is written -------------------------------------------
def test_make_tiny_refuses_expert_dtype_on_a_model_other_than_v4(run_cli, tmp_path):
    dst = tmp_path / "t"
    _usage_refusal(run_cli("make-tiny", dst, "--preset", "v3", "--expert-dtype", "fp8"), dst,
                   "--expert-dtype fp8", "a format of their own")


def test_make_tiny_refuses_real_widths_on_v4(run_cli, tmp_path):
    dst = tmp_path / "t"
    _usage_refusal(run_cli("make-tiny", dst, "--preset", "v4-flash", "--real-widths"), dst,
                   "--real-widths", "DeepSeek-V4")


def test_make_tiny_refuses_expert_dtype_without_fp8(run_cli, tmp_path):
    dst = tmp_path / "t"
    _usage_refusal(run_cli("make-tiny", dst, "--preset", "v4-flash", "--expert-dtype", "fp8"),
                   dst, "--expert-dtype fp8", "BF16")


def test_make_tiny_set_with_a_typo_says_did_you_mean(run_cli, tmp_path):
    dst = tmp_path / "t"
    _usage_refusal(run_cli("make-tiny", dst, "--set", "norm_topk_probs=false"), dst,
                   "norm_topk_probs=false", "did you mean 'norm_topk_prob'")


def test_make_tiny_refuses_more_shards_than_tensors(run_cli, tmp_path):
    dst = tmp_path / "t"
    _usage_refusal(run_cli("make-tiny", dst, "--preset", "v2-lite", "--shards", "1000"), dst,
                   "--shards 1000", "at most")


@pytest.mark.parametrize("shards", [3, 5])
def test_make_tiny_writes_the_shards_asked_for_even_when_one_tensor_dominates(tmp_path, shards):
    """--real-widths: V2-Lite's embedding is most of the bytes; the shards still number N."""
    from ckpt_tools.commands.tiny import tiny_plan
    from ckpt_tools.commands.tiny_writer import _split

    _, plan = tiny_plan("v2-lite", fp8=True, real_widths=True, shards=shards)
    groups = _split(list(plan.specs), shards)
    assert len(groups) == shards and all(groups)
    assert [s.name for g in groups for s in g] == [s.name for s in plan.specs]


def test_forward_refuses_an_output_name_that_is_not_numpy(run_cli, make_ckpt, tmp_path):
    ckpt = make_ckpt("v2-lite")
    out = tmp_path / "x.txt"
    r = run_cli("forward", ckpt, "--tokens", "0,1", "--out", out)
    assert r.exit_code == 2 and not out.exists()
    assert ".npy" in r.stderr and ".npz" in r.stderr


# -- one message per situation ---------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["validate", "{p}"], ["upcast", "{p}", "{out}"], ["quantize", "{p}", "{out}"],
    ["reshard", "{p}", "{out}", "--max-shard-size", "1MB"],
    ["reshard", "{p}", "{out}", "--to", "hf"],
    ["verify", "{p}", "--logits", "{out}.npy"], ["forward", "{p}", "--out", "{out}.npy"]])
def test_a_missing_path_gets_one_message_from_every_command(run_cli, tmp_path, argv):
    missing = tmp_path / "nowhere"
    r = run_cli(*[a.format(p=missing, out=tmp_path / "out") for a in argv])
    assert r.exit_code == 1, r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"Error: {missing}: no such file or directory"


@pytest.mark.parametrize("command",
                         [["validate"], ["upcast", "OUT"], ["verify", "--logits", "x.npy"]])
def test_a_bare_repo_id_that_is_no_local_path_points_to_hf(run_cli, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    argv = [command[0], "deepseek-ai/DeepSeek-V3", *command[1:]]
    r = run_cli(*argv)
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == ("Error: deepseek-ai/DeepSeek-V3: no such file or "
                                                 "directory; to read the Hub repository, write "
                                                 "hf://deepseek-ai/DeepSeek-V3")
    assert not (tmp_path / "OUT").exists()


def test_a_relative_path_gets_no_hub_hint():
    assert not_found("runs/ckpt") .endswith("hf://runs/ckpt")  # looks like a repo id
    assert not_found("./runs/ckpt") == "./runs/ckpt: no such file or directory"
    assert not_found("/data/ckpt") == "/data/ckpt: no such file or directory"


def test_info_says_which_preset_an_alias_means(run_cli):
    r = run_cli("info", "v4")
    assert r.exit_code == 0 and "DeepSeek-V4-Flash" in r.stdout
    assert "v4: the preset v4-flash" in " ".join(r.stderr.split())
    r = run_cli("info", "deepseek-ai/DeepSeek-V3")
    note = " ".join(r.stderr.split())
    assert "the preset v3" in note and "hf://deepseek-ai/DeepSeek-V3" in note
    assert run_cli("info", "v3").stderr == ""  # a preset's own name needs no note


def test_a_writer_on_a_folder_without_config_names_it_once(run_cli, make_ckpt, tmp_path):
    ckpt = make_ckpt("v2-lite")
    (ckpt / "config.json").unlink()
    r = run_cli("upcast", ckpt, tmp_path / "out", "--allow-copy")
    assert r.exit_code == 1 and not (tmp_path / "out").exists()
    error = r.stderr.strip().splitlines()[-1]
    assert error.count(ckpt.name) == 2, error  # the path, then 'copy ... into NAME'
    assert f"{ckpt}/config.json: absent" in error and "[config-missing]" in error


# -- discoverability -------------------------------------------------------------------------
def test_presets_lists_every_preset_with_aliases_and_provenance(run_cli):
    from ckpt_tools.presets import all_presets

    r = run_cli("presets", "--json")
    assert r.exit_code == 0
    listed = {p["name"]: p for p in json.loads(r.stdout)["presets"]}
    assert set(listed) == set(all_presets())
    assert "v4" in listed["v4-flash"]["aliases"]
    assert listed["r1"]["provenance"]["kind"] == "verbatim"
    text = run_cli("presets").stdout
    assert all(name in text for name in listed) and "reconstructed" in text


def test_schema_prints_one_schema_by_any_of_its_names(run_cli):
    by_stem = run_cli("schema", "validation_report")
    assert by_stem.exit_code == 0
    assert json.loads(by_stem.stdout)["title"] == "ValidationReport"
    assert run_cli("schema", "ValidationReport").stdout == by_stem.stdout
    wrong = run_cli("schema", "validaton_report")
    assert wrong.exit_code == 2 and "did you mean 'validation_report'" in wrong.stderr


def test_library_verify_takes_against_and_logits_as_the_cli_does(make_ckpt, tmp_path):
    from ckpt_tools import forward

    a, b = make_ckpt("v2-lite", name="a"), make_ckpt("v2-lite", name="b")
    assert verify(a, against=b, tokens=[0, 1, 2]).ok
    np.savez(tmp_path / "ref.npz", logits=forward(b, [0, 1, 2]), tokens=np.array([0, 1, 2]))
    report = verify(a, logits=tmp_path / "ref.npz")
    assert report.ok and report.tokens == [0, 1, 2]
    from ckpt_tools.errors import ArgumentError
    with pytest.raises(ArgumentError):
        verify(a, b, against=b)
    with pytest.raises(ArgumentError):
        verify(a, logits=tmp_path / "ref.npz", tokens=[3, 4, 5])


def test_the_default_fp8_tiny_model_splits_across_two_ranks(run_cli, make_ckpt, tmp_path):
    """What the README's tour shows: --to deepseek-mp on the FP8 tiny model."""
    ckpt = make_ckpt("v3.2", fp8=True)
    r = run_cli("reshard", ckpt, tmp_path / "mp", "--to", "deepseek-mp", "--model-parallel", "2")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "mp").glob("*.safetensors")) == [
        "model0-mp2.safetensors", "model1-mp2.safetensors"]
    shards = read_index(ckpt / INDEX_FILE).shards
    assert len(shards) == 2
