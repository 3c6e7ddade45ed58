"""Remote sources (hf://) read by range through the real huggingface_hub client against the
fake Hub on 127.0.0.1: validate, info, diff, forward/verify, and one-line errors."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from fake_hub import FakeHub, point_client_at

from ckpt_tools.inventory.checkpoint import Checkpoint
from ckpt_tools.commands.diff import diff
from ckpt_tools.errors import CkptError, FormatError, HubError
from ckpt_tools.commands.info import describe
from ckpt_tools.remote import byte_source
from ckpt_tools.remote import stores as remote
from ckpt_tools.remote.path import RemotePath
from ckpt_tools.remote.stores import HEADER_PROBE_BYTES, as_path, parse_hf_url
from ckpt_tools.io.safetensors_io import read_header
from ckpt_tools.commands.tiny import make_tiny
from ckpt_tools.commands.validate import validate
from ckpt_tools.commands.verify import forward, verify

REPO = "org/tiny-v3"


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote-sources")
    make_tiny(root / "seed0", "v3", fp8=True, shards=3, seed=0)
    make_tiny(root / "seed1", "v3", fp8=True, shards=3, seed=1)
    make_tiny(root / "bf16", "v3", shards=2, seed=0)
    return root


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    connect = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
                "127.0.0.1", "::1"):
            raise AssertionError(f"test tried to reach {address}")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    remote.forget_remote()
    yield
    remote.forget_remote()


@pytest.fixture
def hub(sources, tmp_path, monkeypatch):
    with FakeHub(tmp_path / "hub-store") as fake:
        fake.first = fake.add_commit(REPO, sources / "seed0")
        fake.second = fake.add_commit(REPO, sources / "seed1")  # main is seed1 now
        point_client_at(fake, monkeypatch, tmp_path / "hf-home")
        yield fake


def shard_reads(hub: FakeHub, since: int = 0) -> list[tuple[str, int, int]]:
    """(file, first, last+1) of every ranged GET of a .safetensors file."""
    out = []
    for r in hub.gets(since=since):
        if r.path.endswith(".safetensors") and 200 <= r.status < 300:
            first, _, last = r.range.removeprefix("bytes=").partition("-")
            out.append((r.path.rsplit("/", 1)[-1], int(first), int(last) + 1))
    return out


def tensors_read(hub: FakeHub, local: Path, since: int = 0) -> set[str]:
    """Tensors whose bytes some ranged GET overlapped, header reads (from byte 0) aside."""
    touched = set()
    for file, lo, hi in shard_reads(hub, since):
        if lo == 0:
            continue
        h = read_header(local / file)
        for e in h.entries.values():
            a, b = h.data_offset + e.start, h.data_offset + e.end
            if e.nbytes and a < hi and lo < b:
                touched.add(e.name)
    return touched


# -- parsing ---------------------------------------------------------------------------------
def test_parse_hf_url():
    loc = parse_hf_url("hf://org/name@refs/pr/3/sub/dir/")
    assert (loc.repo_id, loc.revision, loc.subdir) == ("org/name", "refs/pr/3", "sub/dir")
    assert parse_hf_url("hf://org/name").revision == "main"
    with pytest.raises(HubError, match="expected hf://ORG/NAME"):
        parse_hf_url("hf://justname")
    assert remote.remote_spec("org/name", True) == "hf://org/name"
    assert remote.remote_spec("v3", True) == "v3"  # a preset stays a preset
    assert remote.remote_spec("org/name", False) == "org/name"


# -- validate / info -------------------------------------------------------------------------
def test_validate_remote_reads_headers_only_and_agrees_with_local(hub, sources):
    since = len(hub.log)
    report = validate(f"hf://{REPO}")
    local = validate(sources / "seed1")
    assert report.errors == 0 and report.warnings == 0
    assert (report.tensors, report.files, report.tensor_bytes, report.layout) == (
        local.tensors, local.files, local.tensor_bytes, local.layout)
    reads = shard_reads(hub, since)
    assert {f for f, _, _ in reads} == {p.name for p in (sources / "seed1").glob("*.safetensors")}
    assert all(lo == 0 and hi <= HEADER_PROBE_BYTES for _, lo, hi in reads)
    # every request pinned to the commit main resolved to
    assert all(hub.second in r.path for r in hub.gets(since=since))


def test_validate_remote_finds_what_local_finds(hub, sources, tmp_path):
    broken = tmp_path / "broken"
    make_tiny(broken, "v3", fp8=True, shards=3, seed=0)
    index = json.loads((broken / "model.safetensors.index.json").read_text())
    index["metadata"]["total_size"] += 1
    (broken / "model.safetensors.index.json").write_text(json.dumps(index))
    shard = broken / "model-00003-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[:-1])  # one byte short
    hub.add_commit("org/broken", broken)
    remote_codes = sorted(f.code for f in validate("hf://org/broken").findings)
    assert remote_codes == sorted(f.code for f in validate(broken).findings)
    assert "shard-truncated" in remote_codes and "config-missing" not in remote_codes


def test_revision_pinning_and_subdir(hub, sources, tmp_path):
    a = Checkpoint(f"hf://{REPO}@{hub.first}")
    b = Checkpoint(f"hf://{REPO}@main")
    name = "model.layers.0.self_attn.kv_a_layernorm.weight"
    assert np.array_equal(a.read(name), Checkpoint(sources / "seed0").read(name))
    assert np.array_equal(b.read(name), Checkpoint(sources / "seed1").read(name))
    nested = tmp_path / "nested"
    (nested / "weights").mkdir(parents=True)
    for p in (sources / "bf16").iterdir():
        (nested / "weights" / p.name).write_bytes(p.read_bytes())
    (nested / "README.md").write_text("hello")
    hub.add_commit("org/nested", nested)
    report = validate("hf://org/nested/weights")
    assert report.errors == 0 and report.layout == "bf16"
    with pytest.raises(HubError, match="no such folder"):
        validate("hf://org/nested/nope")


def test_one_remote_file_or_index(hub, sources):
    shard = "model-00002-of-00003.safetensors"
    report = validate(f"hf://{REPO}/{shard}")
    want = read_header(sources / "seed1" / shard)
    assert report.files == 1 and report.tensors == len(want.entries)
    assert validate(f"hf://{REPO}/model.safetensors.index.json").tensors == validate(
        sources / "seed1").tensors
    with pytest.raises(HubError, match="no such folder"):
        validate(f"hf://{REPO}/nothing-here.safetensors")


def test_info_remote_equals_local(hub, sources):
    got = describe(f"hf://{REPO}@{hub.first}")
    want = describe(sources / "seed0")
    assert got.files == want.files and got.architecture == want.architecture
    assert got.source_kind == "checkpoint"


def test_checksums_hub(hub, sources):
    report = validate(f"hf://{REPO}", checksums="hub")
    assert report.errors == 0 and "checksums" in report.checks
    shard = "model-00002-of-00003.safetensors"
    remote.forget_remote()
    hub.corrupt(shard)
    report = validate(f"hf://{REPO}", checksums="hub")
    errors = {(f.code, f.file) for f in report.findings if f.severity == "error"}
    assert ("checksum-mismatch", shard) in errors  # (its flipped first bytes break the header too)
    assert {file for _, file in errors} == {shard}
    with pytest.raises(CkptError, match="need a remote source"):
        validate(sources / "seed0", checksums="hub")


def test_header_cache_spares_the_second_run(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("CKPT_HEADER_CACHE", str(tmp_path / "headers"))
    validate(f"hf://{REPO}")
    remote.forget_remote()
    since = len(hub.log)
    assert validate(f"hf://{REPO}").errors == 0
    assert shard_reads(hub, since) == []


# -- errors: one line, never a mixed revision ---------------------------------------------------
def test_missing_repo_revision_and_gated(hub, sources, run_cli):
    with pytest.raises(HubError, match="repository not found"):
        validate("hf://org/nothing")
    with pytest.raises(HubError, match="revision 'v9' not found"):
        validate(f"hf://{REPO}@v9")
    hub.add_commit("org/gated", sources / "bf16", gated=True)
    with pytest.raises(HubError, match="gated repository"):
        validate("hf://org/gated")
    for args in (["validate", "hf://org/nothing"], ["info", "org/nothing", "--remote"],
                 ["validate", "hf://org/gated"]):
        r = run_cli(*args)
        assert r.exit_code == 1 and r.stderr.startswith("Error: ")
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


def test_token_opens_a_gated_repo(hub, sources, monkeypatch):
    hub.add_commit("org/gated", sources / "bf16", gated=True)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    assert validate("hf://org/gated").errors == 0
    assert all(r.authorized for r in hub.gets() if "org/gated" in r.path)


def test_missing_fsspec_backend_is_one_line():
    try:
        import gcsfs  # noqa: F401
        pytest.skip("gcsfs is installed: its absence cannot be shown")
    except ImportError:
        pass
    with pytest.raises(CkptError, match=r"no fsspec backend for gs://.*ckpt-tools\[gcs\]"):
        validate("gs://bucket/ckpt")


def test_404_midway_truncated_range_and_changed_etag(hub, sources, monkeypatch):
    monkeypatch.setattr(byte_source, "READAHEAD_BYTES", 0)
    shard = "model-00001-of-00003.safetensors"
    ck = Checkpoint(f"hf://{REPO}")
    name = next(n for n, s in ck.index.weight_map.items() if s == shard)
    ck.read(name)
    hub.fail(shard, 404)
    ck2 = Checkpoint(f"hf://{REPO}")
    with pytest.raises(HubError, match=f"{shard}: file not found"):
        ck2.read(name)
    hub._fail.clear()
    hub.short(shard)
    with pytest.raises(FormatError, match="truncated range"):
        Checkpoint(f"hf://{REPO}").read(name)
    hub._short.clear()
    hub.ignore_ranges(shard)  # a proxy sending the whole shard: refused, not downloaded
    with pytest.raises(HubError, match="ignored the byte range"):
        Checkpoint(f"hf://{REPO}").read(name)
    hub._no_ranges.clear()
    ck3 = Checkpoint(f"hf://{REPO}")
    hub.cut(shard, 100, times=1)  # a connection dropped mid-range is retried
    assert np.array_equal(ck3.read(name), Checkpoint(sources / "seed1").read(name))
    hub.change_etag(shard)
    with pytest.raises(FormatError, match="changed while being read"):
        ck3.read(name)


def test_truncated_range_in_validate_is_a_finding(hub, monkeypatch):
    hub.short("model-00003-of-00003.safetensors")
    report = validate(f"hf://{REPO}")
    bad = [f for f in report.findings if f.file == "model-00003-of-00003.safetensors"]
    assert bad and "truncated range" in bad[0].message


# -- diff / forward / verify -----------------------------------------------------------------
def test_diff_two_revisions_by_range(hub, sources):
    remote_report = diff(f"hf://{REPO}@{hub.first}", f"hf://{REPO}@main", values=True)
    local_report = diff(sources / "seed0", sources / "seed1", values=True)
    assert remote_report.headers == local_report.headers
    assert remote_report.values == local_report.values and local_report.values is not None
    assert remote_report.verdict == local_report.verdict


def test_verify_reads_only_touched_tensors_and_selected_experts(hub, sources, monkeypatch):
    monkeypatch.setattr(byte_source, "READAHEAD_BYTES", 0)
    tokens = [5, 7]
    since = len(hub.log)
    report = verify(f"hf://{REPO}@{hub.first}", sources / "seed0", tokens, layers=3)
    assert report.ok and all(s.max_abs_error == 0 for s in report.stages)
    touched = tensors_read(hub, sources / "seed0", since)
    assert touched and all(n.startswith(("model.layers.0.", "model.layers.1.",
                                         "model.layers.2.", "model.embed_tokens."))
                           for n in touched)
    experts = {int(n.split(".")[5]) for n in touched if ".mlp.experts." in n}
    assert 0 < len(experts) <= 2 * 3  # top-3 of 8 experts for each of the 2 tokens
    assert np.array_equal(forward(f"hf://{REPO}@{hub.first}", tokens, layers=3),
                          forward(sources / "seed0", tokens, layers=3))


def test_prefetch_reads_small_tensors_ahead_once(hub, sources, monkeypatch):
    from ckpt_tools.inventory import checkpoint

    monkeypatch.setattr(byte_source, "READAHEAD_BYTES", 0)
    monkeypatch.setattr(checkpoint, "PREFETCH_MAX_BYTES", 4096)
    ck, local = Checkpoint(f"hf://{REPO}@{hub.first}"), Checkpoint(sources / "seed0")
    small = [n for n in ck.index.weight_map if n.endswith("_scale_inv")][:5]
    big = "model.embed_tokens.weight"  # over the cap: not read ahead
    ck.prefetch([])  # (headers first)
    for n in (*small, big):
        ck.locate(n)
    since = len(hub.log)
    ck.prefetch([*small, big])
    assert len(hub.gets(since=since)) == len(small)
    since = len(hub.log)
    for n in small:
        assert np.array_equal(ck.read(n), local.read(n))
    assert hub.gets(since=since) == []  # taken from what was read ahead
    assert np.array_equal(ck.read(big), local.read(big))
    assert len(hub.gets(since=since)) == 1


def test_cli_remote_commands(hub, sources, run_cli, tmp_path):
    r = run_cli("validate", REPO, "--remote", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["errors"] == 0
    r = run_cli("validate", f"hf://{REPO}", "--checksums", "hub")
    assert r.exit_code == 0, r.output
    r = run_cli("verify", f"hf://{REPO}@{hub.first}", "--against", sources / "seed0",
                "--layers", "2", "--tokens", "1,2")
    assert r.exit_code == 0, r.output
    r = run_cli("diff", f"hf://{REPO}@{hub.first}", f"hf://{REPO}", "--json")
    assert r.exit_code == 0, r.output
    r = run_cli("forward", f"hf://{REPO}", "--layers", "1", "--out", tmp_path / "h.npy")
    assert r.exit_code == 0, r.output
    r = run_cli("validate", sources / "seed0", "--checksums", "hub")
    assert r.exit_code == 2
    r = run_cli("validate", f"hf://{REPO}", "--deep")  # every byte: not on a remote source
    assert r.exit_code == 1 and r.stderr.startswith("Error: ") and "download" in r.stderr


def test_fake_hub_serves_what_hffilesystem_asks(hub, sources):
    """The endpoints HfFileSystem uses: tree listings (flat and recursive), paths-info,
    closed byte ranges with ETag and commit headers."""
    from huggingface_hub import HfFileSystem

    fs = HfFileSystem(endpoint=hub.url, token=False, skip_instance_cache=True)
    root = f"{REPO}@{hub.second}"
    listed = {e["name"].rsplit("/", 1)[-1]: e["size"] for e in fs.ls(root, detail=True)}
    local = {p.name: p.stat().st_size for p in (sources / "seed1").iterdir()}
    assert listed == local
    info = fs.info(f"{root}/config.json", refresh=True)  # asks paths-info
    assert info["size"] == local["config.json"] and info["type"] == "file"
    assert any("/paths-info/" in r.path and r.method == "POST" for r in hub.log)
    with fs.open(f"{root}/config.json", "rb", block_size=16) as f:
        f.seek(3)
        assert f.read(5) == (sources / "seed1" / "config.json").read_bytes()[3:8]
    assert any(r.range and "-" in r.range and not r.range.endswith("-") for r in hub.gets())


def test_remote_path_is_never_a_local_path(hub):
    root = as_path(f"hf://{REPO}")
    assert isinstance(root, RemotePath) and root.is_dir()
    assert (root / "config.json").is_file() and not (root / "nope.json").exists()
    assert [p.name for p in root.glob("*.json")] == [
        "config.json", "generation_config.json", "model.safetensors.index.json",
        "tokenizer_config.json"]
    with pytest.raises(TypeError):
        open(root / "config.json")
