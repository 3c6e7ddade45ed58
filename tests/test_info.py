import json

import pytest


def test_info_v3_json_reports_published_figures(run_cli):
    r = run_cli("info", "v3", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)  # exactly one JSON document
    assert doc["plan"]["tensors"] == 91_991
    assert doc["plan"]["total_bytes"] == 688_574_839_360
    assert doc["parameters"]["main"] == 671_026_419_200
    assert doc["parameters"]["activated"] == 36_625_618_432
    assert doc["provenance"]["kind"] == "reconstructed"
    assert doc["architecture"]["mtp_layers"] == 1


@pytest.mark.parametrize("preset,total", [("v2", 235_741_434_880), ("v2.5", 235_741_434_880),
                                          ("v2-lite", 15_706_484_224), ("r1", 671_026_419_200)])
def test_info_presets(run_cli, preset, total):
    r = run_cli("info", preset, "--json")
    assert json.loads(r.stdout)["parameters"]["main"] == total


def test_info_human_shows_provenance(run_cli):
    r = run_cli("info", "r1")
    assert r.exit_code == 0
    assert "verbatim" in r.stdout and "671,026,419,200" in r.stdout


def test_info_checkpoint_dir_reads_headers(run_cli, make_ckpt):
    path = make_ckpt("v3", fp8=True)
    doc = json.loads(run_cli("info", path, "--json").stdout)
    assert doc["source_kind"] == "checkpoint"
    assert doc["files"]["tensors"] == doc["plan"]["tensors"]
    assert doc["files"]["total_bytes"] == doc["plan"]["total_bytes"]


@pytest.mark.parametrize("arg,needle", [("/nonexistent/x", "no such file or directory"),
                                        ("v9", "not a preset"), (".", "no config.json")])
def test_info_bad_inputs(run_cli, arg, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_cli("info", arg)
    assert r.exit_code == 1 and needle in r.stderr and "Traceback" not in r.output
