"""Progress people can watch: bytes inside large tensors, not one step per shard; totals
that add up in-process and across worker processes; nothing drawn off a terminal."""

import importlib

import pytest

import ckpt_tools
from ckpt_tools.inventory.checkpoint import Checkpoint


class Recorder:
    def __init__(self):
        self.starts, self.steps, self.finished = [], [], 0

    def start(self, total, label):
        self.starts.append((total, label))

    def advance(self, amount):
        self.steps.append(amount)

    def finish(self):
        self.finished += 1


@pytest.fixture
def small_chunks(monkeypatch):
    """Writers and readers move 4 KB at a time, as they move 64 MB in a real checkpoint."""
    for module in ("ckpt_tools.io.safetensors_io", "ckpt_tools.commands.convert"):
        mod = importlib.import_module(module)
        if hasattr(mod, "CHUNK_BYTES"):
            monkeypatch.setattr(mod, "CHUNK_BYTES", 4096)


@pytest.mark.parametrize("workers", [1, 2])
def test_upcast_progress_moves_inside_shards_and_adds_up(make_ckpt, tmp_path, workers,
                                                         small_chunks):
    src = make_ckpt("v3", fp8=True, shards=2)
    progress = Recorder()
    report = ckpt_tools.upcast(src, tmp_path / "out", workers=workers, progress=progress)
    (total, label), = progress.starts
    assert label == "upcast" and total == sum((tmp_path / "out" / f).stat().st_size
                                              for f in report.files) - _headers(tmp_path / "out")
    assert sum(progress.steps) == total and progress.finished == 1
    if workers == 1:  # in this process every chunk shows: many steps per shard
        assert len(progress.steps) > 10 * len(report.files)


def test_reshard_progress_adds_up(make_ckpt, tmp_path, small_chunks):
    progress = Recorder()
    report = ckpt_tools.reshard(make_ckpt("v2-lite"), tmp_path / "r", max_shard_size="300KB",
                                workers=1, progress=progress)
    assert sum(progress.steps) == report.total_size == progress.starts[0][0]
    assert len(progress.steps) > len(report.files)


def test_make_tiny_reports_bytes_as_it_writes(tmp_path):
    progress = Recorder()
    result = ckpt_tools.make_tiny(tmp_path / "t", "v2-lite", progress=progress)
    assert progress.starts == [(result.total_bytes, "make-tiny v2-lite")]
    assert sum(progress.steps) == result.total_bytes and len(progress.steps) > result.tensors / 2


def test_no_bar_off_a_terminal_unless_asked(make_ckpt, tmp_path, run_cli, monkeypatch):
    src = make_ckpt("v3", fp8=True)
    monkeypatch.delenv("CKPT_PROGRESS", raising=False)
    r = run_cli("upcast", src, tmp_path / "a")
    assert r.exit_code == 0 and r.stderr == ""
    monkeypatch.setenv("CKPT_PROGRESS", "1")
    r = run_cli("upcast", src, tmp_path / "b")
    assert "upcast" in r.stderr and "100%" in r.stderr
    r = run_cli("upcast", src, tmp_path / "c", "-q")
    assert r.stderr == ""


def _headers(ckpt) -> int:
    with Checkpoint(ckpt) as ck:
        return sum(ck.header(s).data_offset for s in ck.shard_names)


def test_forward_and_verify_advance_layer_by_layer(make_ckpt):
    src = make_ckpt("v2-lite")
    layers = Checkpoint(src).config.num_hidden_layers
    progress = Recorder()
    logits = ckpt_tools.forward(src, [0, 1, 2], progress=progress)
    (total, label), = progress.starts
    assert label == "forward" and len(progress.steps) == layers
    assert sum(progress.steps) == total > 0 and progress.finished == 1
    progress = Recorder()
    assert ckpt_tools.verify(src, src, [0, 1, 2], progress=progress).ok
    assert len(progress.steps) == layers and sum(progress.steps) == progress.starts[0][0]
    progress = Recorder()
    assert ckpt_tools.verify(src, logits, [0, 1, 2], progress=progress).ok
    assert sum(progress.steps) == progress.starts[0][0] == total
