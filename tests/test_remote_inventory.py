"""The one inventory on remote sources: `inspect`, `require` and `open_checkpoint` judge an
hf:// checkpoint with the code that judges a local one (headers by range, fetched at once)."""

from __future__ import annotations

import json

import pytest
from test_remote import REPO, hub, loopback_only, shard_reads  # noqa: F401, F811  (fixtures)

from ckpt_tools.inventory.checkpoint import Checkpoint
from ckpt_tools.errors import CkptError
from ckpt_tools.inventory.inspect import inspect, open_checkpoint, require
from ckpt_tools.io.reader_pool import ReaderPool
from ckpt_tools.remote.path import RemotePath
from ckpt_tools.remote.stores import HEADER_PROBE_BYTES
from ckpt_tools.commands.tiny import make_tiny


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote-inventory")
    make_tiny(root / "seed0", "v3", fp8=True, shards=3, seed=0)
    make_tiny(root / "seed1", "v3", fp8=True, shards=3, seed=1)
    return root


def _same(remote, local) -> None:
    assert isinstance(remote.root, RemotePath)
    assert (remote.kind, remote.layout, remote.checks, remote.config_source) == (
        local.kind, local.layout, local.checks, local.config_source)
    assert [(f.code, f.file, f.tensor) for f in remote.findings] == [
        (f.code, f.file, f.tensor) for f in local.findings]
    assert [(i.shards, i.entries, i.shard_of, i.tensor_bytes, i.partial)
            for i in remote.inventories] == [(i.shards, i.entries, i.shard_of, i.tensor_bytes,
                                              i.partial) for i in local.inventories]
    assert (remote.plan is None) == (local.plan is None)
    if remote.plan is not None:
        assert [s.name for s in remote.plan.specs] == [s.name for s in local.plan.specs]


def test_inspect_remote_equals_local_from_headers_only(hub, sources):
    since = len(hub.log)
    found = inspect(f"hf://{REPO}")
    _same(found, inspect(sources / "seed1"))
    reads = shard_reads(hub, since)
    assert {f for f, _, _ in reads} == {p.name for p in (sources / "seed1").glob("*.safetensors")}
    assert all(lo == 0 and hi <= HEADER_PROBE_BYTES for _, lo, hi in reads)


def test_inspect_one_remote_shard_of_a_set_is_judged_on_its_own(hub, sources):
    name = "model-00002-of-00003.safetensors"
    found = inspect(f"hf://{REPO}/{name}")
    _same(found, inspect(sources / "seed1" / name))
    assert found.single == name and found.inventory.partial


def test_require_refuses_a_remote_checkpoint_with_the_local_code(hub, tmp_path):
    broken = tmp_path / "broken"
    make_tiny(broken, "v3", fp8=True, shards=3, seed=0)
    index = json.loads((broken / "model.safetensors.index.json").read_text())
    # a tensor the index leaves out (a writer would drop it); a stale total_size no
    # longer stops a writer (policy.TOLERATED)
    del index["weight_map"]["model.norm.weight"]
    (broken / "model.safetensors.index.json").write_text(json.dumps(index))
    hub.add_commit("org/broken", broken)
    with pytest.raises(CkptError) as local:
        require(broken, "upcast")
    with pytest.raises(CkptError) as remote:
        require("hf://org/broken", "upcast")
    assert remote.value.finding == local.value.finding == "tensor-not-indexed"
    assert type(remote.value) is type(local.value)


def test_open_checkpoint_reads_remote_tensors_by_range(hub, sources):
    local = Checkpoint(sources / "seed1")
    with open_checkpoint(f"hf://{REPO}") as ck:
        assert isinstance(ck, Checkpoint) and isinstance(ck.dir, RemotePath)
        name = next(n for n in ck.index.weight_map if n.endswith("weight_scale_inv"))
        assert (ck.read(name) == local.read(name)).all()
    pool = ReaderPool(f"hf://{REPO}")
    with pool:
        shard = local.shard_names[0]
        assert pool(shard).header.entries == local.header(shard).entries
        assert shard in pool
    local.close()


def test_model_parallel_remote_source_is_inspected_and_read_as_local(hub, sources, tmp_path):
    from ckpt_tools.inventory.mp_layout import MpCheckpoint
    from ckpt_tools.commands.reshard import to_deepseek_mp

    make_tiny(tmp_path / "bf16", "v3", shards=2, seed=2)
    mp = tmp_path / "mp"
    to_deepseek_mp(tmp_path / "bf16", mp, 2)
    if not (mp / "config.json").is_file():
        (mp / "config.json").write_bytes((tmp_path / "bf16" / "config.json").read_bytes())
    hub.add_commit("org/mp", mp)
    found = inspect("hf://org/mp")
    _same(found, inspect(mp))
    assert found.kind == "mp" and found.model_parallel == 2
    with open_checkpoint("hf://org/mp") as remote_ck, open_checkpoint(mp) as local_ck:
        assert isinstance(remote_ck, MpCheckpoint) and isinstance(remote_ck.dir, RemotePath)
        name = "model.layers.0.self_attn.o_proj.weight"
        assert (remote_ck.read_float32(name) == local_ck.read_float32(name)).all()
