"""Work is split by tensor ranges, not by file (issue 26): a checkpoint of one shard is
written and scanned by many jobs, with the same bytes and findings as by one."""

from __future__ import annotations

import importlib

import pytest

from ckpt_tools.commands import convert, value_scan
from ckpt_tools import quantize, upcast, validate


def _files(root):
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file()}


def test_quantize_in_row_parts_writes_the_same_bytes(make_ckpt, tmp_path, monkeypatch):
    ck = make_ckpt("v3", shards=1)
    whole = quantize(ck, tmp_path / "whole", workers=1)
    monkeypatch.setattr(convert, "PART_BYTES", 4096)  # many parts per tensor
    parts = quantize(ck, tmp_path / "parts", workers=2)
    assert _files(tmp_path / "parts") == _files(tmp_path / "whole")
    assert parts.nodes[0].jobs > 4 * whole.nodes[0].jobs
    for a, b in zip(parts.errors, whole.errors, strict=True):
        assert (a.name, a.max_abs_error, a.nonfinite) == (b.name, b.max_abs_error, b.nonfinite)
        assert a.rel_l2_error == pytest.approx(b.rel_l2_error, rel=1e-12)


def test_upcast_of_one_shard_in_parts_writes_the_same_bytes(make_ckpt, tmp_path, monkeypatch):
    ck = make_ckpt("v3", fp8=True, shards=1)
    upcast(ck, tmp_path / "whole", workers=1)
    monkeypatch.setattr(convert, "PART_BYTES", 4096)
    report = upcast(ck, tmp_path / "parts", workers=2)
    assert _files(tmp_path / "parts") == _files(tmp_path / "whole")
    assert report.nodes[0].jobs > 4


def test_deep_scan_cuts_a_large_tensor_into_ranges(make_ckpt, monkeypatch):
    """One shard, jobs smaller than its tensors: every range counted once, same findings."""
    ck = make_ckpt("v3", shards=1)
    whole = validate(ck, deep=True, workers=1)
    monkeypatch.setattr(value_scan, "SCAN_PART_BYTES", 1000)
    parts = validate(ck, deep=True, workers=2)
    assert parts.findings == whole.findings
    assert parts.nodes[0].jobs > 10 * whole.nodes[0].jobs
    assert parts.nodes[0].bytes == whole.nodes[0].bytes


def test_split_pieces_covers_every_byte_once():
    tensors = [("a", 10), ("b", 4000), ("c", 7), ("d", 24)]
    jobs = value_scan.split_pieces(tensors, 1000)
    for name, nbytes in tensors:
        ranges = sorted((a, b) for job in jobs for n, a, b in job if n == name)
        assert ranges[0][0] == 0 and ranges[-1][1] == nbytes
        assert all(x[1] == y[0] for x, y in zip(ranges, ranges[1:]))
        assert all(a % 8 == 0 for a, _ in ranges)
    assert all(sum(b - a for _, a, b in job) <= 1000 for job in jobs)


@pytest.mark.parametrize("buffered", [False, True])
def test_reshard_in_parts_writes_the_same_bytes(make_ckpt, tmp_path, monkeypatch, buffered):
    """By size, to deepseek-mp (column slices) and back (rank pieces interleaved, replicas
    compared): many jobs per file, through the kernel or through buffers, same bytes."""
    reshard_mod = importlib.import_module("ckpt_tools.commands.reshard")
    from ckpt_tools.commands import reshard_write
    from ckpt_tools.commands.reshard import from_deepseek_mp, reshard_by_size, to_deepseek_mp

    ck = make_ckpt("v3", shards=1)
    runs = {"size": lambda d: reshard_by_size(ck, d, 10**9),
            "mp": lambda d: to_deepseek_mp(ck, d, 2),
            "back": lambda d: from_deepseek_mp(tmp_path / "whole-mp", d)}
    whole = {name: run(tmp_path / f"whole-{name}") for name, run in runs.items()}
    monkeypatch.setattr(reshard_mod, "PART_BYTES", 3000)
    if buffered:
        monkeypatch.setattr(reshard_write, "KERNEL_COPY_MIN_RUN", 10**12)
    for name, run in runs.items():
        report = run(tmp_path / f"parts-{name}") if name != "back" else \
            from_deepseek_mp(tmp_path / "parts-mp", tmp_path / "parts-back", workers=2)
        assert _files(tmp_path / f"parts-{name}") == _files(tmp_path / f"whole-{name}"), name
        assert report.nodes[0].jobs > 4 * len(report.files) >= 4 * whole[name].nodes[0].jobs
        assert report.coverage.complete


def test_reshard_parts_with_two_workers_write_the_same_bytes(make_ckpt, tmp_path, monkeypatch):
    reshard_mod = importlib.import_module("ckpt_tools.commands.reshard")
    from ckpt_tools.commands.reshard import to_deepseek_mp

    ck = make_ckpt("v3", shards=1)
    to_deepseek_mp(ck, tmp_path / "one", 2, workers=1)
    monkeypatch.setattr(reshard_mod, "PART_BYTES", 3000)
    report = to_deepseek_mp(ck, tmp_path / "two", 2, workers=2)
    assert _files(tmp_path / "two") == _files(tmp_path / "one")
    assert report.nodes[0].jobs > 8


def test_source_runs_of_any_range_are_the_runs_of_the_whole():
    """Bytes [a, b) of an output tensor map to the same source bytes as in the whole: a
    column slice (one run per row) and rank pieces of unequal runs interleaved."""
    from ckpt_tools.commands.reshard_plan import OutTensor, Part
    from ckpt_tools.commands.reshard_write import source_runs

    shapes = {"w": (6, 10), "p0": (6, 3), "p1": (6, 5)}
    column = OutTensor("c", "BF16", (6, 4), (Part("f", "w", 1, 3, 7),))
    pieces = OutTensor("i", "BF16", (6, 8), (Part("f", "p0"), Part("f", "p1")), dim=1)
    for t in (column, pieces):
        def flat(a, b):
            return [(r.part.tensor, r.start + k) for r in
                    source_runs(t, lambda p: shapes[p.tensor], a, b) for k in range(r.length)]
        whole = flat(0, t.nbytes)
        assert len(whole) == t.nbytes == len(set(whole))
        for a, b in [(0, 1), (3, 17), (16, 48), (47, t.nbytes), (20, 20)]:
            assert flat(a, b) == whole[a:b]
