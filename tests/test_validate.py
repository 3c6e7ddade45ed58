"""`ckpt validate`: a corpus of tiny checkpoints broken one way each. Every defect is
reported under its own code, with nothing else wrong, no traceback and exit 1; clean
checkpoints of every architecture pass."""

from __future__ import annotations

import json
import os
import shutil
import struct

import numpy as np
import pytest
from conftest import reindex

from ckpt_tools.inventory.checkpoint import Checkpoint
from ckpt_tools.errors import ConfigError, FormatError
from ckpt_tools.io.index import INDEX_FILE, SINGLE_FILE, read_index
from ckpt_tools.io.manifest import MANIFEST_FILE, read_manifest
from ckpt_tools.io.safetensors_io import SafetensorsReader, write_safetensors
from ckpt_tools.inventory.tensor_plan import SCALE_SUFFIX
from ckpt_tools.commands.tiny import make_tiny
from ckpt_tools.commands.validate import CODES, ValidationReport, validate


# -- fixtures and surgery ---------------------------------------------------------------
@pytest.fixture(scope="session")
def pristine(tmp_path_factory):
    """Clean tiny V3 checkpoints, built once; tests break copies of them."""
    root = tmp_path_factory.mktemp("pristine")
    return {layout: make_tiny(root / layout, "v3", fp8=layout == "fp8", shards=3).path
            for layout in ("bf16", "fp8")}


@pytest.fixture
def copy_of(pristine, tmp_path):
    def copy(layout: str):
        dst = tmp_path / f"ck-{layout}"
        shutil.copytree(pristine[layout], dst, symlinks=True)
        return dst

    return copy


def codes(report: ValidationReport, *severities: str) -> set[str]:
    severities = severities or ("error", "warning")
    return {f.code for f in report.findings if f.severity in severities}


def shard_of(ck, name):
    return ck / read_index(ck / INDEX_FILE).weight_map[name]


def load(path) -> dict[str, np.ndarray]:
    with SafetensorsReader(path) as r:
        return {n: np.array(r.get(n)) for n in r.names}


def edit_shard(path, fn) -> None:
    tensors = load(path)
    fn(tensors)
    write_safetensors(path, tensors)


def plan_of(ck):
    with Checkpoint(ck) as c:
        return c.plan


def first_fp8_weight(ck) -> str:
    return next(s.name for s in plan_of(ck).specs if s.scale_name)


def first_matrix(ck, component="attention") -> str:
    return next(s.name for s in plan_of(ck).specs
                if s.component == component and len(s.shape) == 2 and not s.scale_of)


def edit_index(ck, fn) -> None:
    doc = json.loads((ck / INDEX_FILE).read_text())
    fn(doc)
    (ck / INDEX_FILE).write_text(json.dumps(doc))


def edit_config(ck, fn) -> None:
    doc = json.loads((ck / "config.json").read_text())
    fn(doc)
    (ck / "config.json").write_text(json.dumps(doc))


# -- the corpus: (base layout, breakage, codes reported as errors/warnings, validate kwargs) --
def truncated_shard(ck):
    path = ck / read_index(ck / INDEX_FILE).shards[-1]
    os.truncate(path, path.stat().st_size - 100)


def garbage_header(ck):
    path = ck / read_index(ck / INDEX_FILE).shards[0]
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(b"\x00garbage{{{")


def missing_shard(ck):
    (ck / read_index(ck / INDEX_FILE).shards[1]).unlink()


def tensor_absent_from_its_shard(ck):
    name = first_matrix(ck)
    edit_shard(shard_of(ck, name), lambda t: t.pop(name))


def tensor_in_two_shards(ck):
    name = first_matrix(ck)
    value = load(shard_of(ck, name))[name]
    other = ck / read_index(ck / INDEX_FILE).shards[-1]
    edit_shard(other, lambda t: t.update({name: value}))


def wrong_total_size(ck):
    edit_index(ck, lambda d: d["metadata"].update(total_size=d["metadata"]["total_size"] + 2))


def path_traversal(ck):
    name = first_matrix(ck)
    edit_index(ck, lambda d: d["weight_map"].update({name: "../outside.safetensors"}))


def absolute_path(ck):
    name = first_matrix(ck)
    edit_index(ck, lambda d: d["weight_map"].update({name: "/etc/passwd"}))


def symlink_outside(ck):
    shard = read_index(ck / INDEX_FILE).shards[0]
    outside = ck.parent / "elsewhere.safetensors"
    shutil.move(ck / shard, outside)
    (ck / shard).symlink_to(outside)


def tensor_missing_vs_plan(ck):
    name = first_matrix(ck)
    edit_shard(shard_of(ck, name), lambda t: t.pop(name))
    reindex(ck)


def unexpected_tensor(ck):
    first = read_index(ck / INDEX_FILE).shards[0]
    edit_shard(ck / first, lambda t: t.update({"model.extra.weight": np.ones((4, 4), np.float32)}))
    reindex(ck)


def wrong_shape(ck):
    name = first_matrix(ck)

    def fn(t):
        t[name] = np.ascontiguousarray(t[name][:-1])

    edit_shard(shard_of(ck, name), fn)
    reindex(ck)


def wrong_dtype(ck):
    name = first_matrix(ck)
    edit_shard(shard_of(ck, name), lambda t: t.update({name: t[name].view(np.int16)}))
    reindex(ck)


def other_float_dtype(ck):
    name = first_matrix(ck)
    edit_shard(shard_of(ck, name), lambda t: t.update({name: t[name].astype(np.float32)}))
    reindex(ck)


def missing_scale(ck):
    scale = first_fp8_weight(ck) + SCALE_SUFFIX
    edit_shard(shard_of(ck, scale), lambda t: t.pop(scale))
    reindex(ck)


def scale_wrong_shape(ck):
    scale = first_fp8_weight(ck) + SCALE_SUFFIX

    def fn(t):
        rows, cols = t[scale].shape
        t[scale] = np.ones((rows + 1, cols), np.float32)

    edit_shard(shard_of(ck, scale), fn)
    reindex(ck)


def orphan_scale(ck):
    norm = next(s.name for s in plan_of(ck).specs if s.component == "norm")
    edit_shard(shard_of(ck, norm),
               lambda t: t.update({norm + SCALE_SUFFIX: np.ones((1, 1), np.float32)}))
    reindex(ck)


def set_first_value(ck, name, value):
    def fn(t):
        flat = t[name].reshape(-1).copy()
        flat[0] = value
        t[name] = flat.reshape(t[name].shape)

    edit_shard(shard_of(ck, name), fn)


def nan_in_weight(ck):
    set_first_value(ck, first_matrix(ck), np.nan)


def inf_in_weight(ck):
    set_first_value(ck, first_matrix(ck), np.inf)


def fp8_nan_code(ck):
    name = first_fp8_weight(ck)
    set_first_value(ck, name, np.uint8(0x7F).view(load(shard_of(ck, name))[name].dtype))


def zero_scale(ck):
    set_first_value(ck, first_fp8_weight(ck) + SCALE_SUFFIX, 0.0)


def all_zero(ck):
    name = first_matrix(ck)
    edit_shard(shard_of(ck, name), lambda t: t.update({name: np.zeros_like(t[name])}))


def mtp_missing(ck):
    mtp = {s.name for s in plan_of(ck).specs if s.mtp}
    for shard in read_index(ck / INDEX_FILE).shards:
        kept = {n: v for n, v in load(ck / shard).items() if n not in mtp}
        if kept:
            write_safetensors(ck / shard, kept)
        else:  # the shard held only the MTP layer
            (ck / shard).unlink()
    edit_index(ck, lambda d: [d["weight_map"].pop(n) for n in mtp])
    reindex(ck)


def mtp_undeclared(ck):
    edit_config(ck, lambda c: c.update(num_nextn_predict_layers=0))


def stale_quantization_config(ck):
    edit_config(ck, lambda c: c.update(quantization_config={
        "quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
        "weight_block_size": [128, 128]}))


def fp8_without_quantization_config(ck):
    edit_config(ck, lambda c: c.pop("quantization_config"))


def unreferenced_shard(ck):
    shutil.copy(ck / read_index(ck / INDEX_FILE).shards[0], ck / "model-old.safetensors")


def index_missing(ck):
    (ck / INDEX_FILE).unlink()


def index_invalid(ck):
    (ck / INDEX_FILE).write_text('{"weight_map": ')


def config_missing(ck):
    (ck / "config.json").unlink()


def no_format_metadata(ck):
    shard = ck / read_index(ck / INDEX_FILE).shards[0]
    write_safetensors(shard, load(shard), metadata=None)


def tensor_not_indexed(ck):
    name = first_matrix(ck)
    edit_index(ck, lambda d: d["weight_map"].pop(name))


CORPUS = {
    # structure
    "truncated shard": ("bf16", truncated_shard, {"shard-truncated"}, {}),
    "garbage header": ("bf16", garbage_header, {"header-invalid"}, {}),
    "missing shard": ("bf16", missing_shard, {"shard-missing"}, {}),
    "tensor absent from its shard": ("bf16", tensor_absent_from_its_shard,
                                     {"tensor-not-in-shard", "tensor-missing",
                                      "total-size-mismatch"}, {}),
    "tensor in two shards": ("bf16", tensor_in_two_shards, {"tensor-duplicate"}, {}),
    "tensor not indexed": ("bf16", tensor_not_indexed, {"tensor-not-indexed"}, {}),
    "wrong total_size": ("bf16", wrong_total_size, {"total-size-mismatch"}, {}),
    "path traversal": ("bf16", path_traversal, {"shard-path-unsafe"}, {}),
    "absolute path": ("bf16", absolute_path, {"shard-path-unsafe"}, {}),
    "symlink outside": ("bf16", symlink_outside, {"shard-path-unsafe"}, {}),
    "unreferenced shard": ("bf16", unreferenced_shard, {"shard-unreferenced"}, {}),
    "index missing": ("bf16", index_missing, {"index-missing"}, {}),
    "index invalid": ("bf16", index_invalid, {"index-invalid"}, {}),
    "no format metadata": ("bf16", no_format_metadata, {"shard-metadata"}, {}),
    # against the plan
    "config missing": ("bf16", config_missing, {"config-missing"}, {}),
    "tensor missing vs plan": ("bf16", tensor_missing_vs_plan, {"tensor-missing"}, {}),
    "unexpected tensor": ("bf16", unexpected_tensor, {"tensor-unexpected"}, {}),
    "wrong shape": ("bf16", wrong_shape, {"shape-mismatch"}, {}),
    "wrong dtype": ("bf16", wrong_dtype, {"dtype-mismatch"}, {}),
    "F32 instead of BF16": ("bf16", other_float_dtype, {"dtype-differs"}, {}),
    "MTP layer missing": ("bf16", mtp_missing, {"mtp-missing"}, {}),
    "MTP layer undeclared": ("bf16", mtp_undeclared, {"mtp-unexpected"}, {}),
    "stale quantization_config": ("bf16", stale_quantization_config, {"config-layout"}, {}),
    "FP8 without quantization_config": ("fp8", fp8_without_quantization_config,
                                        {"config-layout"}, {}),
    # FP8 pairing
    "missing scale": ("fp8", missing_scale, {"scale-missing"}, {}),
    "scale of wrong shape": ("fp8", scale_wrong_shape, {"scale-shape"}, {}),
    "orphan scale": ("fp8", orphan_scale, {"scale-orphan"}, {}),
    "orphan scale in BF16": ("bf16", orphan_scale, {"scale-orphan"}, {}),
    # values (--deep)
    "NaN in a weight": ("bf16", nan_in_weight, {"nan-values"}, {"deep": True}),
    "Inf in a weight": ("bf16", inf_in_weight, {"inf-values"}, {"deep": True}),
    "FP8 NaN code": ("fp8", fp8_nan_code, {"fp8-nan"}, {"deep": True}),
    "zero scale": ("fp8", zero_scale, {"scale-invalid"}, {"deep": True}),
    "all-zero weight": ("bf16", all_zero, {"all-zero"}, {"deep": True}),
}
assert {c for *_, want, _ in CORPUS.values() for c in want} <= set(CODES)


@pytest.mark.parametrize("case", list(CORPUS))
def test_each_defect_is_reported_under_its_own_code(copy_of, case):
    layout, breakage, want, kwargs = CORPUS[case]
    ck = copy_of(layout)
    breakage(ck)
    report = validate(ck, **kwargs)
    assert codes(report) == want, [f.message for f in report.findings]
    for finding in report.findings:
        assert "\n" not in finding.message and finding.message
    errors = any(CODES[c][0] == "error" for c in want)
    assert report.ok is not errors
    assert not report.model_copy(update={"strict": True}).ok


@pytest.mark.parametrize("case", list(CORPUS))
def test_cli_exit_code_output_and_json(copy_of, run_cli, case):
    layout, breakage, want, kwargs = CORPUS[case]
    ck = copy_of(layout)
    breakage(ck)
    flags = ["--deep"] if kwargs.get("deep") else []
    errors = any(CODES[c][0] == "error" for c in want)
    r = run_cli("validate", ck, *flags)
    assert r.exit_code == (1 if errors else 0), r.output
    assert "Traceback" not in r.output and all(code in r.stdout for code in want)
    assert r.stdout.rstrip().splitlines()[-1].startswith("FAILED" if errors else "OK")
    j = run_cli("validate", ck, "--json", "--strict", *flags)
    assert j.exit_code == 1
    doc = json.loads(j.stdout)
    assert {f["code"] for f in doc["findings"] if f["severity"] != "info"} == want


def test_nan_is_only_found_by_deep(copy_of):
    ck = copy_of("bf16")
    nan_in_weight(ck)
    assert validate(ck).findings == []
    (finding,) = validate(ck, deep=True).findings
    name = first_matrix(ck)
    assert (finding.tensor, finding.file, finding.found) == (name, shard_of(ck, name).name, "1")


@pytest.mark.parametrize("preset", ["v2-lite", "v2", "v3"])
@pytest.mark.parametrize("fp8", [False, True])
def test_clean_checkpoints_pass(make_ckpt, run_cli, preset, fp8):
    ck = make_ckpt(preset, fp8=fp8, shards=3)
    report = validate(ck, deep=True)
    assert report.findings == [] and report.ok
    assert report.layout == ("fp8" if fp8 else "bf16")
    assert report.tensors == len(plan_of(ck)) and report.files == 3
    assert report.checks == ["structure", "pairing", "plan", "deep"]
    r = run_cli("validate", ck, "--strict")
    assert r.exit_code == 0 and r.stdout.rstrip().endswith("OK: 0 error(s), 0 warning(s)")


def test_keeps_going_after_the_first_defect(copy_of):
    ck = copy_of("fp8")
    orphan_scale(ck)
    missing_scale(ck)
    unreferenced_shard(ck)
    fp8_without_quantization_config(ck)
    truncated_shard(ck)
    assert codes(validate(ck)) == {"scale-orphan", "scale-missing", "shard-unreferenced",
                                   "config-layout", "shard-truncated"}


def test_checksums_catch_a_flipped_byte_missing_and_extra_files(copy_of, run_cli):
    ck = copy_of("bf16")
    report = validate(ck, write_manifest=True)
    assert report.manifest_written == str(ck / MANIFEST_FILE)
    manifest = read_manifest(ck / MANIFEST_FILE)
    assert sorted(e.path for e in manifest.files) == sorted(
        p.name for p in ck.iterdir() if p.name != MANIFEST_FILE)
    assert validate(ck, checksums=ck / MANIFEST_FILE).findings == []

    shard = ck / read_index(ck / INDEX_FILE).shards[0]
    with open(shard, "r+b") as f:  # same size, header intact: only a checksum can tell
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    assert validate(ck).findings == []
    report = validate(ck, checksums=ck / MANIFEST_FILE)
    assert codes(report) == {"checksum-mismatch"} and report.findings[0].file == shard.name

    (ck / "generation_config.json").unlink()
    (ck / "notes.txt").write_text("added later")
    with open(ck / "tokenizer_config.json", "a") as f:
        f.write(" ")
    r = run_cli("validate", ck, "--checksums", ck / MANIFEST_FILE, "--json")
    assert r.exit_code == 1
    found = {(x["code"], x["file"]) for x in json.loads(r.stdout)["findings"]}
    assert found == {("checksum-mismatch", shard.name),
                     ("checksum-file-missing", "generation_config.json"),
                     ("checksum-size-mismatch", "tokenizer_config.json"),
                     ("checksum-file-extra", "notes.txt")}


def test_manifest_paths_cannot_escape(copy_of, tmp_path):
    ck = copy_of("bf16")
    validate(ck, write_manifest=True)
    doc = json.loads((ck / MANIFEST_FILE).read_text())
    doc["files"][0]["path"] = "../elsewhere"
    (tmp_path / "m.json").write_text(json.dumps(doc))
    report = validate(ck, checksums=tmp_path / "m.json")
    assert "checksum-path-unsafe" in codes(report)


def test_write_manifest_option_forms_and_refusal(copy_of, run_cli, tmp_path):
    ck = copy_of("bf16")
    r = run_cli("validate", ck, "--write-manifest")
    assert r.exit_code == 0 and (ck / MANIFEST_FILE).is_file()
    out = tmp_path / "elsewhere.json"
    r = run_cli("validate", ck, "--write-manifest", out)
    assert r.exit_code == 0 and read_manifest(out).files == read_manifest(ck / MANIFEST_FILE).files
    # a broken checkpoint is not recorded as good
    (ck / MANIFEST_FILE).unlink()
    wrong_total_size(ck)
    r = run_cli("validate", ck, "--write-manifest", "--json")
    assert r.exit_code == 1 and not (ck / MANIFEST_FILE).exists()
    assert "manifest-not-written" in {f["code"] for f in json.loads(r.stdout)["findings"]}


def test_sources_are_not_modified(copy_of):
    ck = copy_of("fp8")
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in ck.iterdir()}
    validate(ck, deep=True, checksums=None)
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in ck.iterdir()} == before


def test_single_file_checkpoint(make_ckpt, run_cli):
    ck = make_ckpt("v2-lite", shards=1)
    (ck / INDEX_FILE).unlink()
    assert validate(ck).findings == []
    report = validate(ck / SINGLE_FILE)  # a file: its header, against the sibling config
    assert report.findings == [] and report.files == 1
    r = run_cli("validate", ck / SINGLE_FILE)
    assert r.exit_code == 0


def test_config_override_checks_against_another_plan(copy_of, run_cli):
    ck = copy_of("bf16")
    report = validate(ck, config="v2-lite")
    assert {"tensor-missing", "tensor-unexpected", "shape-mismatch"} <= codes(report)
    assert report.config == "v2-lite"
    r = run_cli("validate", ck, "--config", "v2-lite", "--show", "2")
    assert r.exit_code == 1 and "more like this" in r.stdout
    shown = [line for line in r.stdout.splitlines() if line.startswith("  ")
             and not line.startswith("   ")  # not a wrapped line's continuation
             and "more like this" not in line]
    groups = {f.code for f in report.findings}
    assert len(shown) <= 2 * len(groups)


def test_bad_arguments_are_one_line_errors(copy_of, run_cli, tmp_path):
    ck = copy_of("bf16")
    with pytest.raises(ConfigError):
        validate(ck, config="no-such-preset")
    with pytest.raises(FormatError):
        validate(tmp_path / "nowhere")
    for args in (["--config", "no-such-preset"], ["--checksums", tmp_path / "nowhere.json"]):
        r = run_cli("validate", ck, *args)
        assert r.exit_code == 1 and r.stderr.startswith("Error: ") and "Traceback" not in r.output
    r = run_cli("validate", tmp_path / "nowhere")
    assert r.exit_code == 1 and r.stderr.startswith("Error: ")


def test_hf_cache_snapshot_symlinks_are_allowed(copy_of, tmp_path):
    """`hf download` stores files as blobs and links them from snapshots/<rev>/."""
    ck = copy_of("bf16")
    repo = tmp_path / "models--org--name"
    snapshot = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for i, p in enumerate(sorted(ck.iterdir())):
        blob = repo / "blobs" / f"blob{i}"
        shutil.copy(p, blob)
        (snapshot / p.name).symlink_to(os.path.relpath(blob, snapshot))
    assert validate(snapshot).findings == []


def test_truncation_is_told_from_garbage(copy_of):
    ck = copy_of("bf16")
    shard = ck / read_index(ck / INDEX_FILE).shards[0]
    n = struct.unpack("<Q", shard.read_bytes()[:8])[0]
    os.truncate(shard, 8 + n // 2)  # cut inside the header
    assert codes(validate(ck)) == {"shard-truncated"}
    shard.write_bytes(b"")
    assert codes(validate(ck)) == {"shard-truncated"}


# -- DeepSeek's model-parallel layout (model{i}-mp{N}.safetensors) ----------------------
# widths whose FP8 blocks split evenly in two (tiny's 96/160 widths do not)
FP8_MP_WIDTHS = dict(num_attention_heads=16, num_key_value_heads=16, qk_nope_head_dim=16,
                     qk_rope_head_dim=16, v_head_dim=16, intermediate_size=256,
                     moe_intermediate_size=256)


@pytest.fixture(scope="session")
def pristine_mp(pristine, tmp_path_factory):
    from ckpt_tools.commands.reshard import to_deepseek_mp

    root = tmp_path_factory.mktemp("pristine-mp")
    fp8 = make_tiny(root / "fp8", "v3", fp8=True, overrides=FP8_MP_WIDTHS).path
    to_deepseek_mp(fp8, root / "mp2", 2)
    to_deepseek_mp(pristine["bf16"], root / "mp2-mtp", 2, keep_mtp=True)
    return root


@pytest.fixture
def mp_copy(pristine_mp, tmp_path):
    def copy(name="mp2"):
        dst = tmp_path / name
        shutil.copytree(pristine_mp / name, dst)
        return dst

    return copy


@pytest.mark.parametrize("name,layout", [("mp2", "fp8"), ("mp2-mtp", "bf16")])
def test_clean_model_parallel_checkpoints_pass(mp_copy, run_cli, name, layout):
    ck = mp_copy(name)
    report = validate(ck, deep=True)
    assert report.findings == [] and report.layout == layout
    assert report.files == 2 and report.checks == ["structure", "plan", "deep"]
    assert run_cli("validate", ck, "--strict").exit_code == 0


def mp_rank(ck, rank):
    return ck / f"model{rank}-mp2.safetensors"


def test_model_parallel_defects_name_the_rank_file(mp_copy):
    ck = mp_copy()
    rank1 = load(mp_rank(ck, 1))
    name = next(n for n, v in rank1.items() if v.ndim == 2 and v.dtype != np.float32)
    scale = next(n for n, v in rank1.items() if n.endswith(".scale"))
    rank1[name] = np.ascontiguousarray(rank1[name][:-1])
    rank1[scale] = np.zeros_like(rank1[scale])
    dropped = next(n for n in rank1 if n not in (name, scale))
    del rank1[dropped]
    write_safetensors(mp_rank(ck, 1), rank1)
    report = validate(ck, deep=True)
    found = {(f.code, f.file, f.tensor) for f in report.findings}
    assert found == {("shape-mismatch", mp_rank(ck, 1).name, name),
                     ("tensor-missing", mp_rank(ck, 1).name, dropped),
                     ("scale-invalid", mp_rank(ck, 1).name, scale)}


def test_model_parallel_missing_rank_and_stray_files(mp_copy):
    ck = mp_copy()
    shutil.copy(mp_rank(ck, 0), ck / "model0-mp4.safetensors")
    mp_rank(ck, 1).unlink()
    assert codes(validate(ck)) == {"shard-missing", "shard-unreferenced"}


# -- the value scan's bit arithmetic ----------------------------------------------------
@pytest.mark.parametrize("dtype", ["F64", "F32", "F16", "BF16", "F8_E5M2"])
def test_value_counts_on_raw_bits(dtype):
    from ckpt_tools.io.dtypes import DTYPES
    from ckpt_tools.commands.value_scan import value_counts

    x = np.array([0.0, -0.0, 1.5, -2.0, np.nan, -np.nan, np.inf, -np.inf, np.inf, 3.0], np.float32)
    assert value_counts(x.astype(DTYPES[dtype].numpy).tobytes(), dtype) == (2, 3, 2)


def test_value_counts_e4m3_nan_codes_and_scales():
    from ckpt_tools.commands.value_scan import bad_scale_count, value_counts

    codes_ = np.array([0x00, 0x80, 0x7F, 0xFF, 0x7E, 0xFE, 0x01], np.uint8)  # 0x7E = 448
    assert value_counts(codes_.tobytes(), "F8_E4M3") == (2, 0, 2)
    scales = np.array([1.0, 1e-45, 3e38, 0.0, -0.0, -1.0, np.nan, np.inf], np.float32)
    assert bad_scale_count(scales.tobytes(), "F32") == 5
    halves = np.array([1.0, 6e-8, 0.0, -0.0, -1.0, np.nan, np.inf], np.float16)  # 6e-8: subnormal
    assert bad_scale_count(halves.tobytes(), "F16") == 5


def test_deep_scan_in_parts_finds_the_same(copy_of, monkeypatch):
    """Shards are scanned in parts (jobs of about SCAN_PART_BYTES): the same findings, in
    the same order, as one job per shard; each shard is listed once per node."""
    from ckpt_tools.commands import value_scan

    ck = copy_of("bf16")
    nan_in_weight(ck)
    whole = validate(ck, deep=True, workers=1)
    monkeypatch.setattr(value_scan, "SCAN_PART_BYTES", 4096)
    parts = validate(ck, deep=True, workers=2)
    assert parts.findings == whole.findings and len(parts.findings) == 1
    (node,) = parts.nodes
    assert node.jobs > 2 * whole.nodes[0].jobs == 2 * len(node.files)
    assert node.bytes == whole.nodes[0].bytes
