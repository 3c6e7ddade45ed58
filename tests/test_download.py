"""`ckpt download` against a fake Hub on 127.0.0.1: the real huggingface_hub client, no network."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fake_hub import FakeHub, point_client_at

from ckpt_tools.commands.download import download, plan_download
from ckpt_tools.errors import HubError
from ckpt_tools.io.manifest import read_manifest
from ckpt_tools.io.safetensors_io import read_header
from ckpt_tools.commands.tiny import make_tiny

# ckpt_tools.download is the function
download_mod = importlib.import_module("ckpt_tools.commands.download")

REPO = "org/tiny-v3"
SHARDS = 5
SHARD = "model-{:05d}-of-{:05d}.safetensors".format


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Tiny checkpoints built once: FP8 V3 in 5 shards (two seeds) and a 16 MB one-shard
    V2-Lite (bigger than the client's 10 MB chunk, so a cut transfer can resume)."""
    root = tmp_path_factory.mktemp("sources")
    make_tiny(root / "v3-seed0", "v3", fp8=True, shards=SHARDS, seed=0)
    make_tiny(root / "v3-seed1", "v3", fp8=True, shards=SHARDS, seed=1)
    make_tiny(root / "big", "v2-lite", shards=1, overrides={"vocab_size": 40000})
    return root


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail any connection that is not to 127.0.0.1."""
    connect = socket.socket.connect

    def guarded(self, address):
        inet = self.family in (socket.AF_INET, socket.AF_INET6)
        if inet and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"test tried to reach {address}")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture
def hub(sources, tmp_path, monkeypatch):
    """A started fake Hub with REPO on main; the client is pointed at it and HF_HOME isolated."""
    with FakeHub(sources / "hub-store") as fake:
        fake.add_commit(REPO, sources / "v3-seed0")
        point_client_at(fake, monkeypatch, tmp_path / "hf-home")
        yield fake


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def files_of(d: Path) -> set[str]:
    return {p.relative_to(d).as_posix() for p in d.rglob("*")
            if p.is_file() and not p.relative_to(d).as_posix().startswith(".")}


def layer_of(name: str) -> int | None:
    """Layer number of a tensor name, parsed independently of the tensor plan."""
    parts = name.split(".")
    return int(parts[2]) if parts[:2] == ["model", "layers"] else None


def shards_holding(src: Path, layer: int) -> set[str]:
    return {p.name for p in src.glob("*.safetensors")
            if any(layer_of(n) == layer for n in read_header(p).entries)}


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]


# -- full, include, config-only -------------------------------------------------------------
def test_full_download_verifies_every_file_and_writes_manifest(hub, sources, tmp_path, run_cli,
                                                               monkeypatch):
    dst = tmp_path / "out"
    monkeypatch.setenv("CKPT_PROGRESS", "1")  # stderr is no terminal: ask for the bar
    r = run_cli("download", REPO, "--local-dir", dst, "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    src = sources / "v3-seed0"
    assert files_of(dst) == files_of(src) | {"ckpt-manifest.json"}
    for name in files_of(src):
        assert (dst / name).read_bytes() == (src / name).read_bytes(), name
    manifest = read_manifest(dst / "ckpt-manifest.json")
    assert manifest.repo_id == REPO and manifest.revision == hub.repos[REPO].refs["main"]
    assert {e.path: e.sha256 for e in manifest.files} == {n: sha256(src / n) for n in files_of(src)}
    assert {f["check"] for f in report["files"]} == {"lfs-sha256", "git-blob"}
    check = report["tensor_check"]
    assert check["method"] == "validate" and check["complete"] and not check["problems"]
    assert check["shards"] == SHARDS
    # each file crossed the wire exactly once
    gets = [g.path.rsplit("/", 1)[-1] for g in hub.gets()]
    assert sorted(gets) == sorted(files_of(src))
    assert "Traceback" not in r.stderr and "download" in r.stderr  # progress went to stderr
    # the manifest is what `ckpt validate --checksums` checks offline
    offline = run_cli("validate", dst, "--checksums", dst / "ckpt-manifest.json", "--strict")
    assert offline.exit_code == 0, offline.stdout + offline.stderr
    (dst / SHARD(1, SHARDS)).write_bytes(b"\0" * (dst / SHARD(1, SHARDS)).stat().st_size)
    assert run_cli("validate", dst, "--checksums", dst / "ckpt-manifest.json").exit_code == 1


def test_include_and_exclude_select_files(hub, tmp_path, run_cli):
    dst = tmp_path / "out"
    r = run_cli("download", REPO, "--local-dir", dst, "--include", "*.json",
                "--exclude", "generation_config.json")
    assert r.exit_code == 0, r.stderr
    expected = {"config.json", "model.safetensors.index.json", "tokenizer_config.json"}
    assert files_of(dst) == expected | {"ckpt-manifest.json"}
    assert hub.fetched() == expected


def test_config_only_fetches_no_weights(hub, tmp_path, run_cli):
    dst = tmp_path / "out"
    r = run_cli("download", REPO, "--local-dir", dst, "--config-only")
    assert r.exit_code == 0, r.stderr
    assert not any(name.endswith(".safetensors") for name in hub.fetched())
    assert {"config.json", "model.safetensors.index.json", "tokenizer_config.json"} <= files_of(dst)


def test_shared_cache_when_no_local_dir(hub, tmp_path, run_cli):
    r = run_cli("download", REPO, "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    commit = hub.repos[REPO].refs["main"]
    snapshot = tmp_path / "hf-home" / "hub" / "models--org--tiny-v3" / "snapshots" / commit
    assert Path(report["local_dir"]) == snapshot
    assert (snapshot / SHARD(3, SHARDS)).is_symlink()
    assert (snapshot / "ckpt-manifest.json").is_file()
    before = len(hub.gets())
    again = run_cli("download", REPO, "--json")
    assert again.exit_code == 0, again.stderr
    assert len(hub.gets()) == before  # cached at this commit: nothing fetched, all re-hashed
    assert json.loads(again.stdout)["transferred_bytes"] == 0
    assert json.loads(again.stdout)["verified"]


# -- layers ---------------------------------------------------------------------------------
def test_layers_fetch_only_the_shards_holding_them(hub, sources, tmp_path, run_cli):
    src = sources / "v3-seed0"
    # make-tiny opens shard 2 with a scale whose weight closes shard 1: pick that layer
    first = min(read_header(src / SHARD(2, SHARDS)).entries.values(), key=lambda e: e.start)
    assert first.name.endswith("_scale_inv")
    layer = layer_of(first.name)
    wanted = shards_holding(src, layer)
    assert len(wanted) >= 2 and len(wanted) < SHARDS  # the test can tell right from wrong

    dst = tmp_path / "out"
    r = run_cli("download", REPO, "--local-dir", dst, "--layers", f"{layer}-{layer}", "--json")
    assert r.exit_code == 0, r.stderr
    fetched_shards = {n for n in hub.fetched() if n.endswith(".safetensors")}
    assert fetched_shards == wanted
    requested = {r.path.rsplit("/", 1)[-1] for r in hub.log if "/resolve/" in r.path}
    assert not {n for n in requested if n.endswith(".safetensors")} - wanted  # not even a HEAD
    assert {"config.json", "model.safetensors.index.json", "tokenizer_config.json"} <= hub.fetched()
    report = json.loads(r.stdout)
    in_layer = sum(layer_of(n) == layer for p in src.glob("*.safetensors")
                   for n in read_header(p).entries)
    assert report["plan"]["tensors"] == report["tensor_check"]["expected"] == in_layer
    assert report["tensor_check"]["complete"]


def test_layers_of_a_single_file_checkpoint(hub, sources, tmp_path):
    single = tmp_path / "single"
    single.mkdir()
    for p in (sources / "big").iterdir():
        if p.name != "model.safetensors.index.json":
            single.joinpath(p.name).write_bytes(p.read_bytes())
    hub.add_commit("org/single", single)
    report = download("org/single", local_dir=tmp_path / "out", layers=(1, 1))
    assert "model.safetensors" in hub.fetched()
    in_layer = sum(layer_of(n) == 1 for n in read_header(single / "model.safetensors").entries)
    assert report.plan.tensors == report.tensor_check.expected == in_layer > 0
    assert report.tensor_check.complete


def test_layer_range_checks(hub, tmp_path, run_cli):
    r = run_cli("download", REPO, "--local-dir", tmp_path / "a", "--layers", "3-99")
    assert_one_line_error(r, "out of range", "0-4")  # 4 decoder layers + 1 MTP
    assert not any(n.endswith(".safetensors") for n in hub.fetched())
    assert run_cli("download", REPO, "--layers", "3-1").exit_code == 2
    assert run_cli("download", REPO, "--layers", "1", "--config-only").exit_code == 2


# -- dry run and disk space -----------------------------------------------------------------
def test_dry_run_prints_the_plan_and_downloads_nothing(hub, sources, tmp_path, run_cli):
    dst = tmp_path / "out"
    r = run_cli("download", REPO, "--local-dir", dst, "--dry-run", "--layers", "0-0")
    assert r.exit_code == 0, r.stderr
    for name in shards_holding(sources / "v3-seed0", 0):
        assert name in r.stdout
    assert "config.json" in r.stdout and "free" in r.stdout
    assert not dst.exists()
    assert not any(n.endswith(".safetensors") for n in hub.fetched())

    plan = plan_download(REPO, local_dir=dst)
    src = sources / "v3-seed0"
    assert plan.mode == "full" and len(plan.files) == plan.repo_files == len(files_of(src))
    assert plan.total_bytes == sum(p.stat().st_size for p in src.iterdir())
    assert plan.lfs_bytes == sum(p.stat().st_size for p in src.glob("*.safetensors"))
    assert plan.fits and not dst.exists()


def test_plan_that_does_not_fit_stops_before_downloading(hub, tmp_path, run_cli, monkeypatch):
    monkeypatch.setattr(importlib.import_module("ckpt_tools.commands.download_plan"),
                        "_free_bytes", lambda path: 1000)
    dst = tmp_path / "out"
    dry = run_cli("download", REPO, "--local-dir", dst, "--dry-run")
    assert "DOES NOT FIT" in dry.stdout
    assert_one_line_error(dry, "not enough disk space", "1,000 are free")
    r = run_cli("download", REPO, "--local-dir", dst)
    assert_one_line_error(r, "not enough disk space")
    assert not any(n.endswith(".safetensors") for n in hub.fetched())


# -- revisions ------------------------------------------------------------------------------
def test_pinned_revision_serves_old_bytes(hub, sources, tmp_path, run_cli):
    old = hub.repos[REPO].refs["main"]
    new = hub.add_commit(REPO, sources / "v3-seed1")
    assert new != old
    r = run_cli("download", REPO, "--revision", old, "--local-dir", tmp_path / "old")
    assert r.exit_code == 0, r.stderr
    r = run_cli("download", REPO, "--local-dir", tmp_path / "new")
    assert r.exit_code == 0, r.stderr
    shard = SHARD(2, SHARDS)
    assert sha256(tmp_path / "old" / shard) == sha256(sources / "v3-seed0" / shard)
    assert sha256(tmp_path / "new" / shard) == sha256(sources / "v3-seed1" / shard)
    assert sha256(sources / "v3-seed0" / shard) != sha256(sources / "v3-seed1" / shard)
    assert read_manifest(tmp_path / "old" / "ckpt-manifest.json").revision == old
    assert read_manifest(tmp_path / "new" / "ckpt-manifest.json").revision == new
    # every file of the pinned run was resolved at the old commit
    assert any(f"/resolve/{old}/" in g.path for g in hub.gets())


def test_unknown_revision(hub, run_cli):
    assert_one_line_error(run_cli("download", REPO, "--revision", "no-such-branch"),
                          "revision 'no-such-branch' not found")


# -- corruption -----------------------------------------------------------------------------
def test_wrong_bytes_are_detected_and_not_kept(hub, sources, tmp_path, run_cli):
    bad = SHARD(3, SHARDS)
    hub.corrupt(bad)
    dst = tmp_path / "out"
    r = run_cli("download", REPO, "--local-dir", dst)
    assert_one_line_error(r, bad, "SHA-256", "expected " + sha256(sources / "v3-seed0" / bad))
    assert not (dst / bad).exists()
    assert (dst / f".{bad}.corrupt").is_file()  # kept aside for inspection, not under its name
    assert not (dst / "ckpt-manifest.json").exists()
    assert len(hub.gets(bad)) == 1  # wrong bytes from the Hub itself are not fetched twice
    hub.serve_correctly(bad)
    again = run_cli("download", REPO, "--local-dir", dst)
    assert again.exit_code == 0, again.stderr
    assert sha256(dst / bad) == sha256(sources / "v3-seed0" / bad)


def test_wrong_config_bytes_stop_layer_planning(hub, tmp_path, run_cli):
    hub.corrupt("config.json")
    r = run_cli("download", REPO, "--local-dir", tmp_path / "out", "--layers", "1-2")
    assert_one_line_error(r, "config.json", "git blob id")
    assert not (tmp_path / "out" / "config.json").exists()
    assert not any(n.endswith(".safetensors") for n in hub.fetched())


def test_damaged_local_copy_is_fetched_again(hub, sources, tmp_path, run_cli):
    dst = tmp_path / "out"
    assert run_cli("download", REPO, "--local-dir", dst).exit_code == 0
    victim = dst / SHARD(4, SHARDS)
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF  # same size: only a hash can tell
    victim.write_bytes(bytes(data))
    r = run_cli("download", REPO, "--local-dir", dst)
    assert r.exit_code == 0, r.stderr
    assert sha256(victim) == sha256(sources / "v3-seed0" / victim.name)
    assert len(hub.gets(victim.name)) == 2


def test_checkpoint_that_does_not_match_its_config(hub, sources, tmp_path, run_cli):
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in (sources / "v3-seed0").iterdir():
        broken.joinpath(p.name).write_bytes(p.read_bytes())
    config = json.loads((broken / "config.json").read_text())
    config["moe_intermediate_size"] *= 2
    (broken / "config.json").write_text(json.dumps(config))
    hub.add_commit("org/broken", broken)
    full = run_cli("download", "org/broken", "--local-dir", tmp_path / "full")  # ckpt validate
    assert_one_line_error(full, "not the tensor plan", "experts.0.gate_proj.weight", "[512, 96]",
                          "[256, 96]", "[shape-mismatch]")
    layer = run_cli("download", "org/broken", "--local-dir", tmp_path / "layer", "--layers", "2-2")
    # the same judgement (the inventory's), hence the same words and code
    assert_one_line_error(layer, "not the tensor plan", "model.layers.2.mlp.experts.",
                          "expected shape [512, 96], found [256, 96] [shape-mismatch]")


def test_index_naming_a_missing_shard_fails_before_download(hub, sources, tmp_path, run_cli):
    partial = tmp_path / "partial"
    partial.mkdir()
    for p in (sources / "v3-seed0").iterdir():
        if p.name != SHARD(5, SHARDS):
            partial.joinpath(p.name).write_bytes(p.read_bytes())
    hub.add_commit("org/partial", partial)
    r = run_cli("download", "org/partial", "--local-dir", tmp_path / "out")
    assert_one_line_error(r, SHARD(5, SHARDS), "not in the repository")
    assert not any(n.endswith(".safetensors") for n in hub.fetched())


# -- errors ---------------------------------------------------------------------------------
def test_repo_not_found(hub, run_cli):
    assert_one_line_error(run_cli("download", "org/no-such-repo"), "org/no-such-repo",
                          "repository not found")


def test_gated_repo_needs_a_token(hub, sources, tmp_path, run_cli, monkeypatch):
    hub.add_commit("org/gated", sources / "v3-seed0", gated=True)
    r = run_cli("download", "org/gated", "--local-dir", tmp_path / "out")
    assert_one_line_error(r, "gated", "401", "HF_TOKEN")
    assert not any(n.endswith(".safetensors") for n in hub.fetched())
    monkeypatch.setenv("HF_TOKEN", hub.token)
    ok = run_cli("download", "org/gated", "--local-dir", tmp_path / "out")
    assert ok.exit_code == 0, ok.stderr
    assert all(g.authorized for g in hub.gets())


def test_disk_full_mid_download(hub, tmp_path):
    """Writes fail once a file passes 100 KB (RLIMIT_FSIZE, EFBIG; a full disk, ENOSPC, takes
    the same path): one clean line, no partial file, no manifest."""
    limit = 100_000
    code = ("import signal, resource; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
            "from ckpt_tools.cli import main; main()")
    dst = tmp_path / "out"
    r = subprocess.run([sys.executable, "-c", code, "download", REPO, "--local-dir", str(dst)],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    err = r.stderr.strip().splitlines()
    assert r.returncode == 1 and err[-1].startswith("Error:") and "disk full" in err[-1], r.stderr
    assert "Traceback" not in r.stderr
    assert not list(dst.rglob("*.incomplete")) and not (dst / "ckpt-manifest.json").exists()
    assert all(p.stat().st_size < limit for p in dst.rglob("*") if p.is_file())


def test_network_unreachable(hub, monkeypatch, run_cli):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert_one_line_error(run_cli("download", REPO), "cannot reach", f"127.0.0.1:{port}")


# -- interruption ---------------------------------------------------------------------------
def test_cut_transfer_resumes_with_a_range_request(hub, sources, tmp_path):
    hub.add_commit("org/big", sources / "big")
    size = (sources / "big" / "model.safetensors").stat().st_size
    hub.cut("model.safetensors", after=11 << 20)  # past the client's first 10 MB chunk
    report = download("org/big", local_dir=tmp_path / "out")
    got, source = tmp_path / "out" / "model.safetensors", sources / "big" / "model.safetensors"
    assert sha256(got) == sha256(source)
    ranges = [g.range for g in hub.gets("model.safetensors")]
    assert ranges[0] is None and len(ranges) == 2
    resumed_at = int(ranges[1].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at < size  # only the rest crossed the wire again
    assert report.verified and report.tensor_check.complete


class _InterruptAfter:
    """A progress sink that raises KeyboardInterrupt (Ctrl-C) once `limit` bytes went by."""

    def __init__(self, limit: int):
        self.limit, self.done = limit, 0

    def start(self, total, label):
        pass

    def advance(self, n):
        self.done += n
        if self.done > self.limit:
            raise KeyboardInterrupt

    def finish(self):
        pass


def test_interrupted_run_resumes_where_it_stopped(hub, sources, tmp_path):
    dst = tmp_path / "out"
    plan = plan_download(REPO, local_dir=dst)
    order = [f.path for f in plan.files]
    stop_in = order.index(SHARD(3, SHARDS))
    done_before = sum(f.size for f in plan.files[:stop_in]) * 2  # downloaded + hashed
    with pytest.raises(KeyboardInterrupt):
        download(REPO, local_dir=dst, workers=1, progress=_InterruptAfter(done_before))
    assert not (dst / SHARD(3, SHARDS)).exists() and not (dst / "ckpt-manifest.json").exists()
    assert not list(dst.rglob("*.incomplete"))
    finished = set(order[:stop_in])
    assert files_of(dst) == finished

    second_run = len(hub.log)
    report = download(REPO, local_dir=dst)
    for name in order:  # what finished before the interruption is not fetched again
        assert len(hub.gets(name, since=second_run)) == (name not in finished), name
    src = sources / "v3-seed0"
    manifest = read_manifest(dst / "ckpt-manifest.json")
    assert {e.path: e.sha256 for e in manifest.files} == {n: sha256(src / n) for n in files_of(src)}
    assert report.verified and report.tensor_check.complete


def test_library_errors_are_hub_errors(hub):
    with pytest.raises(HubError, match="repository not found"):
        plan_download("org/nothing-here")


def test_progress_sink_counts_xet_bytes_once():
    """Xet-backed repos on the real Hub build their progress bars from our tqdm stand-in:
    it must accept the reporter's calls and count each written byte once."""
    import logging
    from types import SimpleNamespace

    from huggingface_hub.utils._xet_progress_reporting import XetDownloadProgressReporter

    from ckpt_tools.io.hub import _byte_counter

    got: list[int] = []
    reporter = XetDownloadProgressReporter(reconstruction_desc="f", total=100,
                                           log_level=logging.INFO,
                                           tqdm_class=_byte_counter(got.append, None))
    for written, received in ((40, 30), (100, 80)):
        reporter.update_progress(SimpleNamespace(
            total_bytes_completed=written, total_transfer_bytes_completed=received, total_bytes=100,
            total_bytes_completion_rate=1.0, total_transfer_bytes_completion_rate=1.0))
    reporter.close()
    assert sum(got) == 100


def test_hf_flags_token_cache_dir_and_max_workers(hub, sources, tmp_path, run_cli):
    """`hf download`'s names: --token instead of HF_TOKEN, --cache-dir instead of
    HF_HUB_CACHE, --max-workers (and its alias --workers), -q."""
    hub.add_commit("org/gated2", sources / "v3-seed0", gated=True)
    cache = tmp_path / "my-cache"
    r = run_cli("download", "org/gated2", "--config-only", "--cache-dir", cache,
                "--token", hub.token, "--max-workers", "2", "-q")
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""  # -q: no notes, no bar
    assert all(g.authorized for g in hub.gets())
    snapshots = list(cache.glob("models--org--gated2/snapshots/*/config.json"))
    assert len(snapshots) == 1
    assert not (tmp_path / "hf-home" / "hub" / "models--org--gated2").exists()
    r = run_cli("download", "org/gated2", "--config-only", "--cache-dir", cache,
                "--token", hub.token, "--workers", "1", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"] is True
