"""Remote sources on the code paths main gained beside them: jobs shipped to other processes
(a picklable description of the source, reopened without listing), wrapped configs and
DeepSeek-V4 checkpoints read by range from the fake Hub."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_hub import FakeHub
from test_remote import loopback_only  # noqa: F401  (autouse fixture)
from test_remote_convert import files_of

from ckpt_tools.commands.convert import upcast
from ckpt_tools.errors import OutputError
from ckpt_tools.commands.info import describe
from ckpt_tools.remote.path import RemotePath
from ckpt_tools.remote.stores import open_remote
from ckpt_tools.commands.tiny import make_tiny
from ckpt_tools.commands.validate import validate
from ckpt_tools.commands.verify import forward

sys.path.insert(0, str(Path(__file__).parent))
from v4_tiny import hub_config, hub_tensors, quantized_tensors, write_checkpoint  # noqa: E402

V4_CONFIG = hub_config(num_hidden_layers=2, compress_ratios=[0, 4, 0], sliding_window=8,
                       index_topk=2)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote-merged")
    make_tiny(root / "fp8", "v3", fp8=True, shards=3, seed=5)
    make_tiny(root / "fp8-v2", "v3", fp8=True, shards=3, seed=6)
    wrapped_cfg = root / "wrapped.json"
    tiny = json.loads((root / "fp8" / "config.json").read_text())
    wrapped_cfg.write_text(json.dumps({"model_type": "kimi_k25", "text_config": tiny}))
    make_tiny(root / "wrapped", str(wrapped_cfg), fp8=True, shards=2, seed=5)
    write_checkpoint(root / "v4", V4_CONFIG,
                     quantized_tensors(V4_CONFIG, hub_tensors(V4_CONFIG, 2)))
    make_tiny(root / "v4-flash", "v4-flash", fp8=True, shards=3)
    return root


@pytest.fixture
def hub(sources, tmp_path, monkeypatch):
    with FakeHub(tmp_path / "hub-store") as fake:
        for name in ("fp8", "wrapped", "v4"):
            fake.add_commit(f"org/{name}", sources / name)
        for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "CKPT_HEADER_CACHE"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield fake


def test_a_remote_path_pickles_as_its_listing_and_reads_the_listed_commit(hub, sources):
    """What a Ray task or a worker process receives: the URL (named by its commit) and the
    listing; unpickling lists nothing, and the repository moving on changes nothing."""
    root = open_remote("hf://org/fp8")
    shard = min(p.name for p in (sources / "fp8").glob("*.safetensors"))
    blob = pickle.dumps(root / shard)
    hub.add_commit("org/fp8", sources / "fp8-v2")  # main moves after the listing
    since = len(hub.log)
    again = pickle.loads(blob)
    assert isinstance(again, RemotePath) and again.tree is not root.tree
    assert str(again) == str(root / shard) and again.info() == (root / shard).info()
    assert again.read_bytes() == (sources / "fp8" / shard).read_bytes()  # the listed commit
    asked = [r.path for r in hub.log[since:]]
    assert asked and all(shard in p for p in asked)  # no listing, no repo info: the file only
    assert pickle.loads(blob).tree is again.tree  # reopened once per process


def test_upcast_from_remote_in_worker_processes_equals_disk(hub, sources, tmp_path):
    upcast("hf://org/fp8", tmp_path / "remote", workers=2)  # parts pickled to two workers
    upcast(sources / "fp8", tmp_path / "disk", workers=1)
    assert files_of(tmp_path / "remote") == files_of(tmp_path / "disk")


def test_object_store_destination_with_ray_is_refused_before_anything(sources):
    with pytest.raises(OutputError, match="staged on this machine's disk") as e:
        upcast(sources / "fp8", "s3://bucket/out", executor="ray")
    assert "\n" not in str(e.value)
    # the library names its argument, the CLI its option (test_remote_options_...)
    assert "executor='local'" in str(e.value) and "--" not in str(e.value)


def test_wrapped_checkpoint_from_remote(hub, sources, tmp_path):
    info = describe("hf://org/wrapped")
    assert info.reading.tensor_prefix == "language_model."
    assert validate("hf://org/wrapped").errors == 0
    upcast("hf://org/wrapped", tmp_path / "remote", workers=1)
    upcast(sources / "wrapped", tmp_path / "disk", workers=1)
    assert files_of(tmp_path / "remote") == files_of(tmp_path / "disk")
    tokens = [0, 5, 3]
    np.testing.assert_array_equal(forward("hf://org/wrapped", tokens, layers=1),
                                  forward(sources / "wrapped", tokens, layers=1))


def test_v4_checkpoint_from_remote(hub, sources):
    tokens = [1, 7, 2, 9]
    np.testing.assert_array_equal(forward("hf://org/v4", tokens, layers=1),
                                  forward(sources / "v4", tokens, layers=1))


def test_v4_writers_read_a_remote_source_like_disk(hub, sources, tmp_path):
    """DeepSeek-V4's writers take an hf:// source as V2/V3's do: upcast (convert_v4, parts
    pickled to worker processes) and both reshard directions (families/deepseek_v4/mp), the
    same bytes as from disk; V4MpCheckpoint reads remote rank files by range."""
    from ckpt_tools.reference.v4_checkpoint import V4MpCheckpoint
    from ckpt_tools.commands.reshard import from_deepseek_mp, to_deepseek_mp

    local = sources / "v4-flash"
    hub.add_commit("org/v4-flash", local)
    upcast("hf://org/v4-flash", tmp_path / "up-remote", workers=2)
    upcast(local, tmp_path / "up-disk", workers=1)
    assert files_of(tmp_path / "up-remote") == files_of(tmp_path / "up-disk")
    to_deepseek_mp("hf://org/v4-flash", tmp_path / "mp-remote", 2, workers=2)
    to_deepseek_mp(local, tmp_path / "mp-disk", 2, workers=1)
    assert files_of(tmp_path / "mp-remote") == files_of(tmp_path / "mp-disk")
    hub.add_commit("org/v4-mp", tmp_path / "mp-disk")
    from_deepseek_mp("hf://org/v4-mp", tmp_path / "back-remote")
    from_deepseek_mp(tmp_path / "mp-disk", tmp_path / "back-disk")
    assert files_of(tmp_path / "back-remote") == files_of(tmp_path / "back-disk")
    remote, disk = V4MpCheckpoint("hf://org/v4-mp"), V4MpCheckpoint(tmp_path / "mp-disk")
    try:
        assert isinstance(remote.dir, RemotePath)
        for name in ("embed.weight", "layers.0.attn.wo_b.weight", "layers.0.attn.wo_a.weight"):
            np.testing.assert_array_equal(remote.read_float32(name), disk.read_float32(name))
    finally:
        remote.close()
        disk.close()


def test_remote_options_follow_the_cli_conventions(hub, sources):
    """--remote on a command with --json: one JSON document, on success and on failure."""
    from click.testing import CliRunner

    from ckpt_tools.cli import cli

    runner = CliRunner()
    r = runner.invoke(cli, ["info", "--remote", "org/fp8", "--json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["ok"] is True
    r = runner.invoke(cli, ["validate", str(sources / "fp8"), "--checksums", "hub", "--json"])
    assert r.exit_code == 2
    assert json.loads(r.stdout)["error"]["code"] == "usage"
    r = runner.invoke(cli, ["upcast", str(sources / "fp8"), "s3://bucket/out", "--executor",
                            "ray", "--json"])
    assert r.exit_code == 1
    error = json.loads(r.stdout)["error"]
    assert error["code"] == "output" and "--executor local" in error["message"]
