"""Work is split by tensor ranges, not by file (issue 26): a checkpoint of one shard is
written and scanned by many jobs, with the same bytes and findings as by one."""

from __future__ import annotations

import pytest

from ckpt_tools import convert, quantize, upcast, validate, value_scan


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
