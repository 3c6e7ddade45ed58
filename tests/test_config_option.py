"""`--config` / `config=`: a folder without config.json is converted against a config the
user names, with one option name, help and library parameter wherever a config is read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ckpt_tools.configs.parse import read_config_file
from ckpt_tools.commands.convert import quantize, upcast
from ckpt_tools.commands.forward import forward

CONVERTERS = ("upcast", "quantize")


def _without_config(ck: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of `ck` without config.json, and the config.json kept aside."""
    bare = tmp_path / f"{ck.name}-weights-only"
    shutil.copytree(ck, bare)
    kept = tmp_path / f"{ck.name}-config.json"
    (bare / "config.json").rename(kept)
    return bare, kept


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.mark.parametrize("command", CONVERTERS)
def test_a_folder_without_config_is_refused_naming_the_option(command, make_ckpt, tmp_path,
                                                               run_cli):
    bare, _ = _without_config(make_ckpt(fp8=command == "upcast"), tmp_path)
    r = run_cli(command, bare, tmp_path / "out")
    assert r.exit_code == 1
    assert "--config" in r.stderr and "config.json" in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("given", ["file", "checkpoint", "parsed"])
def test_upcast_with_a_given_config_writes_what_a_folder_with_one_does(given, make_ckpt,
                                                                        tmp_path):
    ck = make_ckpt(fp8=True)
    bare, kept = _without_config(ck, tmp_path)
    config = {"file": kept, "checkpoint": ck, "parsed": read_config_file(kept)}[given]
    upcast(ck, tmp_path / "with", workers=1)
    report = upcast(bare, tmp_path / "given", workers=1, config=config)
    assert report.ok and report.dequantized > 0
    with_files, given_files = _files(tmp_path / "with"), _files(tmp_path / "given")
    if given == "parsed":  # written from the parsed model: the same keys and values
        assert (json.loads(given_files.pop("config.json"))
                == json.loads(with_files.pop("config.json")))
    assert given_files == with_files


def test_quantize_with_a_given_config_writes_what_a_folder_with_one_does(make_ckpt, tmp_path,
                                                                         run_cli):
    ck = make_ckpt()
    bare, kept = _without_config(ck, tmp_path)
    quantize(ck, tmp_path / "with", workers=1)
    r = run_cli("quantize", bare, tmp_path / "given", "--config", kept, "--workers", "1")
    assert r.exit_code == 0, r.stderr
    assert _files(tmp_path / "given") == _files(tmp_path / "with")


def test_a_config_that_does_not_fit_the_tensors_is_refused_before_writing(make_ckpt, tmp_path,
                                                                          run_cli):
    bare, _ = _without_config(make_ckpt(fp8=True), tmp_path)
    r = run_cli("upcast", bare, tmp_path / "out", "--config", "v3")
    assert r.exit_code == 1
    assert "expected shape" in r.stderr and "[shape-mismatch]" in r.stderr
    assert not (tmp_path / "out").exists()


def test_an_unknown_config_is_named(make_ckpt, tmp_path, run_cli):
    bare, _ = _without_config(make_ckpt(fp8=True), tmp_path)
    r = run_cli("upcast", bare, tmp_path / "out", "--config", "no-such-preset")
    assert r.exit_code == 1
    assert r.stderr.startswith("Error: no-such-preset: not a preset")
    assert not (tmp_path / "out").exists()


def test_a_rerun_with_another_config_does_not_resume_the_first(make_ckpt, tmp_path):
    ck = make_ckpt(fp8=True)
    bare, kept = _without_config(ck, tmp_path)
    upcast(bare, tmp_path / "out", workers=1, config=kept)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads(kept.read_text()), "rms_norm_eps": 1e-5}))
    report = upcast(bare, tmp_path / "out", workers=1, config=other, overwrite=True)
    assert report.resumed_files == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["rms_norm_eps"] == 1e-5


def test_every_command_reading_a_config_offers_the_same_option(run_cli):
    helps = {c: run_cli(c, "--help").stdout
             for c in (*CONVERTERS, "validate", "forward", "verify", "reshard")}
    lines = {c: " ".join(h.split("--config C", 1)[1].split("  -")[0].split())
             for c, h in helps.items()}
    assert "config.json" in lines["validate"]
    assert len(set(lines.values())) == 1, lines


def test_forward_and_verify_read_a_folder_without_config_given_one(make_ckpt, tmp_path, run_cli):
    ck = make_ckpt(fp8=True)
    bare, kept = _without_config(ck, tmp_path)
    assert (forward(bare, [1, 2, 3], config=read_config_file(kept))
            == forward(ck, [1, 2, 3])).all()
    refused = run_cli("verify", bare, "--against", ck)
    assert refused.exit_code == 1 and "--config" in refused.stderr
    r = run_cli("verify", bare, "--against", ck, "--config", kept)
    assert r.exit_code == 0, r.stderr
    assert "OK: within atol" in r.stdout


def test_a_config_whose_family_reads_its_own_files_is_refused_naming_why(make_ckpt, tmp_path,
                                                                           run_cli):
    bare, _ = _without_config(make_ckpt(fp8=True), tmp_path)
    for argv in (["upcast", bare, tmp_path / "out"],
                 ["forward", bare, "--out", tmp_path / "x.npy"]):
        r = run_cli(*argv, "--config", "v4-flash")
        assert r.exit_code == 2  # a combination of arguments that cannot work: usage
        assert "not available for DeepSeek-V4" in r.stderr and "config.json" in r.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.npy").exists()


@pytest.mark.parametrize("layout", [["--max-shard-size", "1MB"],
                                    ["--to", "deepseek-mp", "--model-parallel", "2"]])
def test_reshard_with_a_given_config_writes_what_a_folder_with_one_does(layout, make_ckpt,
                                                                          tmp_path, run_cli):
    ck = make_ckpt(fp8=True)
    bare, kept = _without_config(ck, tmp_path)
    refused = run_cli("reshard", bare, tmp_path / "refused", *layout)
    assert refused.exit_code == 1 and "--config" in refused.stderr
    assert run_cli("reshard", ck, tmp_path / "with", *layout).exit_code == 0
    r = run_cli("reshard", bare, tmp_path / "given", *layout, "--config", kept)
    assert r.exit_code == 0, r.stderr
    assert _files(tmp_path / "given") == _files(tmp_path / "with")


def test_reshard_refuses_a_preset_it_could_not_copy(make_ckpt, tmp_path, run_cli):
    bare, _ = _without_config(make_ckpt(), tmp_path)
    r = run_cli("reshard", bare, tmp_path / "out", "--max-shard-size", "1MB", "--config", "v3")
    assert r.exit_code == 2 and "not a preset" in r.stderr
    assert not (tmp_path / "out").exists()
