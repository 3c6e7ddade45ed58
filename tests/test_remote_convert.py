"""Converters reading a remote source (hf:// on the fake Hub): the output equals the one
made from the same checkpoint on disk, and a run killed midway resumes to the same bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fake_hub import FakeHub
from test_remote import loopback_only, tensors_read  # noqa: F401  (autouse fixture)

from ckpt_tools.commands.convert import quantize, upcast
from ckpt_tools.execution.fault_injection import ENV_VAR
from ckpt_tools.io.output import JOURNAL_FILE, SOURCE_COPY_DIR
from ckpt_tools.remote import stores as remote
from ckpt_tools.remote.verified import VERIFY_ENV
from ckpt_tools.commands.reshard import reshard_by_size, to_deepseek_mp
from ckpt_tools.io.safetensors_io import read_header
from ckpt_tools.commands.tiny import make_tiny

REPORTS = {"reshard-report.json"}  # name the source and time the run: differ by design


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote-convert")
    make_tiny(root / "fp8", "v3", fp8=True, shards=3, seed=3)
    make_tiny(root / "bf16", "v3", shards=2, seed=4)
    return root


@pytest.fixture
def hub(sources, tmp_path, monkeypatch):
    with FakeHub(tmp_path / "hub-store") as fake:
        fake.add_commit("org/fp8", sources / "fp8")
        fake.add_commit("org/bf16", sources / "bf16")
        for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "CKPT_HEADER_CACHE",
                    ENV_VAR):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield fake


def files_of(path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())
            if p.is_file() and not p.name.startswith(".") and p.name not in REPORTS}


@pytest.mark.parametrize("case", ["upcast", "upcast-2-workers", "quantize", "reshard-size",
                                  "reshard-mp"])
def test_output_from_remote_equals_output_from_disk(case, hub, sources, tmp_path):
    repo, local = ("org/fp8", sources / "fp8") if case.startswith(("upcast", "reshard-size")) else (
        "org/bf16", sources / "bf16")
    run = {"upcast": lambda s, d: upcast(s, d, workers=1),
           "upcast-2-workers": lambda s, d: upcast(s, d, workers=2),
           "quantize": lambda s, d: quantize(s, d, workers=1),
           "reshard-size": lambda s, d: reshard_by_size(s, d, 150_000, workers=1),
           "reshard-mp": lambda s, d: to_deepseek_mp(s, d, 2, workers=1)}[case]
    report = run(f"hf://{repo}", tmp_path / "from-remote")
    run(local, tmp_path / "from-disk")
    assert files_of(tmp_path / "from-remote") == files_of(tmp_path / "from-disk")
    assert report.source.startswith(f"hf://{repo}")


def _cli(args, env_extra=None, cwd=None):
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env.update(env_extra or {})
    env["PYTHONPATH"] = os.pathsep.join(sys.path)  # the same ckpt_tools from any cwd
    return subprocess.run([sys.executable, "-m", "ckpt_tools", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=cwd)


@pytest.mark.parametrize("checked", [True, False])
@pytest.mark.parametrize("kill_after", [3, 150])
def test_upcast_from_remote_killed_midway_resumes_to_the_same_bytes(kill_after, checked, hub,
                                                                   sources, tmp_path):
    upcast(sources / "fp8", tmp_path / "want", workers=1)
    dst = tmp_path / "dst"
    args = ["upcast", "hf://org/fp8", dst, "--workers", "1"]
    env = {VERIFY_ENV: "1" if checked else "0"}
    killed = _cli(args, {ENV_VAR: str(kill_after), **env})
    assert killed.returncode == -9, killed.stderr
    for p in dst.glob("*.safetensors"):  # whatever is under a final name is whole
        assert read_header(p).file_size == p.stat().st_size
    finished = set(json.loads((dst / JOURNAL_FILE).read_text())["done"])  # recorded as done
    assert bool(finished) == (kill_after > 100)
    since = len(hub.log)
    rerun = _cli(args, env)
    assert rerun.returncode == 0, rerun.stderr
    assert files_of(dst) == files_of(tmp_path / "want")
    read = {n for n in tensors_read(hub, sources / "fp8", since) if not n.endswith("_scale_inv")}
    if checked:  # the copies checked against the Hub's SHA-256 were kept: none fetched again
        assert not read and not (dst / SOURCE_COPY_DIR).exists()
        return
    # resumed per file: besides the scales planning checks, no tensor of a source shard
    # whose output was complete is read again (upcast keeps the shard names)
    shard_of = {n: f.name for f in (sources / "fp8").glob("*.safetensors")
                for n in read_header(f).entries}
    assert read and not {shard_of[n] for n in read} & finished


def test_converter_errors_from_remote_are_one_line(hub, sources, tmp_path):
    for args in (["upcast", "hf://org/missing", tmp_path / "out"],
                 ["upcast", sources / "fp8", "hf://org/fp8-bf16"],  # no writing to the Hub
                 ["reshard", "hf://org/fp8", "hf://org/out", "--max-shard-size", "1MB"]):
        r = _cli(args, cwd=tmp_path)  # a URL taken for a local path would land here
        assert r.returncode == 1 and r.stderr.startswith("Error: "), (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "s3:").exists()
    assert not (tmp_path / "hf:").exists()
    remote.forget_remote()
