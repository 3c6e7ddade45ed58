"""`if report.ok:` is the one way to read a verdict, and it is false for every failing
report type (a method there would always be truthy: a pipeline would ship a broken
checkpoint)."""

import numpy as np

import ckpt_tools
from ckpt_tools.error_report import ErrorReport
from ckpt_tools.io.index import INDEX_FILE, read_index


def _truncate_a_shard(ckpt):
    shard = ckpt / sorted(set(read_index(ckpt / INDEX_FILE).weight_map.values()))[-1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])


def test_validation_of_a_truncated_checkpoint_is_not_ok(make_ckpt):
    ckpt = make_ckpt("v2-lite")
    assert ckpt_tools.validate(ckpt).ok
    _truncate_a_shard(ckpt)
    report = ckpt_tools.validate(ckpt)
    assert report.errors and not report.ok
    assert report.model_dump()["ok"] is False  # --json carries the same verdict


def test_strict_validation_counts_warnings(make_ckpt):
    ckpt = make_ckpt("v2-lite")
    shard = sorted(ckpt.glob("*.safetensors"))[0]
    (ckpt / "unlisted.safetensors").write_bytes(shard.read_bytes())  # shard-unreferenced
    lenient, strict = ckpt_tools.validate(ckpt), ckpt_tools.validate(ckpt, strict=True)
    assert lenient.warnings and not lenient.errors
    assert lenient.ok and not strict.ok


def test_verify_against_other_logits_is_not_ok(make_ckpt):
    ckpt = make_ckpt("v2-lite")
    tokens = [1, 2, 3]
    logits = ckpt_tools.forward(ckpt, tokens)
    assert ckpt_tools.verify(ckpt, logits, tokens).ok
    assert not ckpt_tools.verify(ckpt, logits + 1.0, tokens).ok


def test_a_plan_that_does_not_fit_is_not_ok():
    plan = ckpt_tools.DownloadPlan(
        repo_id="org/name", revision="main", commit="0" * 40, mode="full", destination="/x",
        files=[], total_bytes=10, lfs_bytes=10, download_bytes=10, repo_files=1, repo_bytes=10,
        free_bytes=5, fits=False)
    assert not plan.ok
    assert plan.model_copy(update={"fits": True}).ok


def test_a_download_with_a_corrupt_file_is_not_ok():
    plan = ckpt_tools.DownloadPlan(
        repo_id="org/name", revision="main", commit="0" * 40, mode="full", destination="/x",
        files=[], total_bytes=10, lfs_bytes=10, download_bytes=10, repo_files=1, repo_bytes=10,
        fits=True)
    from ckpt_tools.commands.download import FileResult

    good = FileResult(path="a", size=1, check="size", status="verified", transferred=1)
    bad = good.model_copy(update={"status": "corrupt"})
    report = ckpt_tools.DownloadReport(plan=plan, local_dir="/x", files=[good],
                                       transferred_bytes=1, verified=False, tensor_check=None,
                                       manifest=None)
    assert report.ok
    assert not report.model_copy(update={"files": [good, bad]}).ok


def test_a_reshard_without_complete_coverage_is_not_ok(make_ckpt, tmp_path):
    report = ckpt_tools.reshard(make_ckpt("v2-lite"), tmp_path / "out", max_shard_size="1MB")
    assert report.ok
    broken = report.coverage.model_copy(update={"complete": False})
    assert not report.model_copy(update={"coverage": broken}).ok


def test_an_error_document_is_not_ok():
    assert not ErrorReport.of("format", "x: not a safetensors file").ok


def test_forward_output_is_finite(make_ckpt):
    assert np.isfinite(ckpt_tools.forward(make_ckpt("v2-lite"), [0, 1])).all()
