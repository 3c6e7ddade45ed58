"""The destination under faults (issue 27, 13): a reshard killed once its output is complete
is found complete by its rerun (never "not empty", never without its coverage proof); V4's
`--to deepseek-mp` writes the proof too; a BF16 V4 upcast is refused without allow_copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ckpt_tools.commands.convert import upcast
from ckpt_tools.errors import UnexpectedTensorError
from ckpt_tools.execution.fault_injection import ENV_VAR
from ckpt_tools.io.output import JOURNAL_FILE, report_file
from ckpt_tools.commands.reshard import to_deepseek_mp
from ckpt_tools.io.safetensors_io import read_header
from ckpt_tools.commands.tiny import make_tiny


def _ckpt(args, kill_after=None):
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    if kill_after is not None:
        env[ENV_VAR] = str(kill_after)
    return subprocess.run([sys.executable, "-m", "ckpt_tools", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def _files(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_reshard_killed_once_complete_reruns_to_already_complete(tmp_path):
    src = make_tiny(tmp_path / "src", "v3", shards=2, seed=1).path
    dst = tmp_path / "out"
    args = ["reshard", src, dst, "--max-shard-size", "300KB", "--workers", "1"]
    assert _ckpt(args).returncode == 0
    expected, proof = _files(dst), report_file(dst).read_text()
    # the last crash point: after the journal is removed (every tensor and file before it)
    points = sum(len(read_header(dst / n).entries) + 1 for n in expected
                 if n.endswith(".safetensors")) + 1
    for p in dst.iterdir():
        p.unlink()
    report_file(dst).unlink()
    killed = _ckpt(args, kill_after=points)
    assert killed.returncode < 0, killed.stderr  # SIGKILLed where the kill landed
    assert not (dst / JOURNAL_FILE).exists()
    assert report_file(dst).read_text() == proof  # the proof exists before the journal goes
    rerun = _ckpt([*args, "--json"])
    assert rerun.returncode == 0, rerun.stderr
    assert "already complete" in " ".join(json.loads(rerun.stdout)["notes"])
    assert _files(dst) == expected and report_file(dst).read_text() == proof
    changed = _ckpt(["reshard", src, dst, "--max-shard-size", "200KB", "--workers", "1"])
    assert changed.returncode == 1 and "not empty" in changed.stderr  # another job: refused


@pytest.fixture(scope="module")
def v4(tmp_path_factory):
    root = tmp_path_factory.mktemp("v4-dest")
    return (make_tiny(root / "fp8", "v4-flash", fp8=True, shards=2, seed=2).path,
            make_tiny(root / "bf16", "v4-flash", fp8=False, shards=2, seed=2).path)


def test_v4_to_deepseek_mp_writes_its_proof_beside_dst(v4, tmp_path):
    report = to_deepseek_mp(v4[0], tmp_path / "mp", 2, workers=1)
    saved = json.loads(report_file(tmp_path / "mp").read_text())
    assert saved["files"] == [f.model_dump() for f in report.files]
    assert [f.name for f in report.files] == ["model0-mp2.safetensors", "model1-mp2.safetensors"]
    assert saved["coverage"]["complete"] and "seconds" not in saved
    assert not (tmp_path / "mp" / "reshard-report.json").exists()


def test_v4_bf16_upcast_needs_allow_copy_like_v32(v4, tmp_path):
    with pytest.raises(UnexpectedTensorError, match="copy of the source"):
        upcast(v4[1], tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()
    assert upcast(v4[1], tmp_path / "out", workers=1, allow_copy=True).ok


def test_ray_executor_without_ray_creates_nothing(tmp_path, monkeypatch):
    """Issue 28's item on the destination: the option is checked before DST is touched."""
    from ckpt_tools.execution import ray_executor
    from ckpt_tools.errors import MissingDependencyError

    monkeypatch.setattr(ray_executor, "find_spec", lambda name: None)
    src = make_tiny(tmp_path / "src", "v3", fp8=True, seed=1).path
    with pytest.raises(MissingDependencyError, match="needs Ray"):
        upcast(src, tmp_path / "out", executor="ray")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["upcast", "quantize"])
def test_convert_killed_once_complete_reruns_to_already_complete(command, tmp_path, monkeypatch):
    """Issue 27, 13 for upcast and quantize: a kill at the last crash point (the output
    complete, its journal removed) reruns to "already complete", from the proof beside DST
    that reshard writes too."""
    from ckpt_tools.execution import fault_injection
    from ckpt_tools.commands.convert import quantize

    src = make_tiny(tmp_path / "src", "v3", fp8=command == "upcast", shards=2, seed=1).path
    run = {"upcast": upcast, "quantize": quantize}[command]
    monkeypatch.setattr(fault_injection, "_remaining", 10**9)  # count this run's crash points
    run(src, tmp_path / "count", workers=1)
    points = 10**9 - fault_injection._remaining
    expected, proof = _files(tmp_path / "count"), report_file(tmp_path / "count", command)
    dst = tmp_path / "out"
    args = [command, src, dst, "--workers", "1"]
    killed = _ckpt(args, kill_after=points)
    assert killed.returncode < 0, killed.stderr  # SIGKILLed after the journal went
    assert not (dst / JOURNAL_FILE).exists()
    saved = json.loads(report_file(dst, command).read_text())  # written before the journal went
    assert {**saved, "destination": None} == {**json.loads(proof.read_text()), "destination": None}
    rerun = _ckpt([*args, "--json"])
    assert rerun.returncode == 0, rerun.stderr
    assert "already complete" in " ".join(json.loads(rerun.stdout)["notes"])
    assert _files(dst) == expected
    changed = _ckpt([*args[:-2], "--workers", "1", *(["--dtype", "f32"] if command == "upcast"
                                                      else ["--scale-fmt", "ue8m0"])])
    assert changed.returncode == 1 and "not empty" in changed.stderr  # another job: refused
