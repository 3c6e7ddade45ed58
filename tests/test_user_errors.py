"""Bad input gets the message a person needs: what the file is, which command or argument
fixes it, spelled the way the caller calls (Python argument or CLI flag)."""

import json

import pytest

import ckpt_tools
from ckpt_tools.errors import ArgumentError, FormatError, OfflineError, OutputError
from ckpt_tools.io.safetensors_io import read_header


@pytest.mark.parametrize("content, kind", [
    (b"Hello, this is a README saved as a shard\n", "starts with text"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 12\n", "Git LFS pointer"),
    (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "HTML"),
    (b"PK\x03\x04" + b"\0" * 60, "zip archive"),
])
def test_a_file_that_is_not_safetensors_says_so(tmp_path, content, kind):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=f"not a safetensors file .*{kind}"):
        read_header(path)


def test_a_real_header_length_problem_still_reports_the_length(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes((10**6).to_bytes(8, "little") + b"{}")
    with pytest.raises(FormatError, match="runs past the end"):
        read_header(path)


def test_upcast_of_a_bf16_checkpoint_is_refused_unless_allow_copy(make_ckpt, tmp_path, run_cli):
    src = make_ckpt("v2-lite")
    with pytest.raises(ckpt_tools.UnexpectedTensorError, match=r"pass allow_copy=True"):
        ckpt_tools.upcast(src, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    assert ckpt_tools.upcast(src, tmp_path / "b", allow_copy=True, workers=1).copied > 0
    r = run_cli("upcast", src, tmp_path / "c")
    assert r.exit_code == 1 and "pass --allow-copy" in r.stderr
    assert run_cli("upcast", src, tmp_path / "d", "--allow-copy", "-q").exit_code == 0


def test_library_errors_name_arguments_and_the_cli_names_flags(make_ckpt, tmp_path, run_cli):
    src = make_ckpt("v2-lite")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep")
    with pytest.raises(OutputError, match=r"pass overwrite=True to replace") as e:
        ckpt_tools.reshard(src, tmp_path / "busy", max_shard_size="1MB")
    assert "--overwrite" not in str(e.value)
    r = run_cli("reshard", src, tmp_path / "busy", "--max-shard-size", "1MB", "--json")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["error"]["code"] == "output"
    assert "pass --overwrite to replace" in doc["error"]["message"]


def test_model_parallel_directories_and_index_paths(make_ckpt, tmp_path, run_cli):
    src = make_ckpt("v2-lite")
    ckpt_tools.reshard(src, tmp_path / "mp", to="deepseek-mp", model_parallel=2)
    for command in ("upcast", "quantize"):
        r = run_cli(command, tmp_path / "mp", tmp_path / f"{command}-out")
        assert r.exit_code == 1 and "reshard SRC DST --to hf" in r.stderr, r.stderr
    r = run_cli("reshard", tmp_path / "mp", tmp_path / "r", "--max-shard-size", "1GB")
    assert r.exit_code == 1 and "--to hf" in r.stderr  # this command has the flag itself
    # an index path is the checkpoint it indexes, as for validate
    index = src / "model.safetensors.index.json"
    assert ckpt_tools.quantize(index, tmp_path / "q", workers=1).quantized > 0
    with pytest.raises(FormatError, match="pass its checkpoint directory"):
        ckpt_tools.quantize(next(src.glob("model-0000*.safetensors")), tmp_path / "q2")


def test_a_report_lands_beside_the_checkpoint_not_inside(make_ckpt, tmp_path):
    ckpt_tools.reshard(make_ckpt("v2-lite"), tmp_path / "out", max_shard_size="1MB")
    assert not (tmp_path / "out" / "reshard-report.json").exists()
    assert (tmp_path / "out.reshard-report.json").is_file()


@pytest.mark.parametrize("repo_id", ["not/a/repo", "a--b", "", "org/na me"])
def test_an_invalid_repo_id_is_a_usage_error_before_any_request(repo_id, run_cli, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: never asked
    with pytest.raises(ArgumentError, match="not a Hub repository id"):
        ckpt_tools.plan_download(repo_id)
    r = run_cli("download", repo_id, "--dry-run")
    assert r.exit_code == 2 and "not a Hub repository id" in r.stderr
    assert r.stderr.count("\n") == 1 and "internal error" not in r.stderr


def test_offline_mode_is_named(run_cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE"):
        ckpt_tools.plan_download("org/name")
    r = run_cli("download", "org/name", "--dry-run", "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["error"]["code"] == "offline"
    assert "offline mode is on" in r.stderr and "network" not in r.stderr


def test_download_speaks_hf_flags(run_cli):
    r = run_cli("download", "--help")
    for flag in ("--token", "--cache-dir", "--quiet", "--max-workers", "--workers"):
        assert flag in r.stdout, flag


def test_an_index_path_works_wherever_a_directory_does(make_ckpt, tmp_path):
    src = make_ckpt("v2-lite")
    index = src / "model.safetensors.index.json"
    assert ckpt_tools.reshard(index, tmp_path / "r", max_shard_size="300KB").ok
    assert ckpt_tools.validate(index).ok
    assert ckpt_tools.info(index).files is not None


def test_diff_still_compares_the_config_of_a_model_parallel_directory(make_ckpt, tmp_path):
    ckpt_tools.reshard(make_ckpt("v2-lite"), tmp_path / "mp", to="deepseek-mp", model_parallel=2)
    assert ckpt_tools.diff(tmp_path / "mp", "v2-lite").a.kind == "checkpoint"
    with pytest.raises(FormatError, match="reshard SRC DST --to hf"):
        ckpt_tools.info(tmp_path / "mp")
