"""upcast / quantize: exact against independent implementations, refuse before writing,
load as is, resume after SIGKILL with identical bytes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import NEEDS_REFERENCE

from ckpt_tools.inventory.checkpoint import Checkpoint
from ckpt_tools.commands.convert import plan_upcast, quantize, upcast
from ckpt_tools.errors import (
    FormatError,
    MissingTensorError,
    OutputError,
    ShapeMismatchError,
    UnexpectedTensorError,
)
from ckpt_tools.execution.fault_injection import ENV_VAR
from ckpt_tools.formats.fp8_block import BF16, FP8_E4M3, dequantize
from ckpt_tools.formats.fp8_block import quantize as quantize_array
from ckpt_tools.io.index import INDEX_FILE, read_index, write_index
from ckpt_tools.io.safetensors_io import SafetensorsReader, read_header, write_safetensors
from ckpt_tools.inventory.tensor_plan import SCALE_SUFFIX, TensorPlan

GOLDEN = Path(__file__).parent / "data" / "fp8_golden.npz"
BITS = {2: np.uint16, 4: np.uint32}


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(BITS[a.dtype.itemsize])


def same_bits_or_both_nan(a: np.ndarray, b: np.ndarray) -> bool:
    """Bitwise equal, except that NaN only has to meet NaN (implementations pick other NaN
    payloads: torch's AVX path writes 0xFFFF, its scalar path 0x7FC0)."""
    nan_a, nan_b = np.isnan(a.astype(np.float32)), np.isnan(b.astype(np.float32))
    return bool((nan_a == nan_b).all() and (bits(a)[~nan_a] == bits(b)[~nan_b]).all())


def definition(weight: np.ndarray, scale: np.ndarray, out_dtype, block=(128, 128)) -> np.ndarray:
    """docs/architecture.md §3 written plainly: expand the scale grid, crop, multiply, cast."""
    rows, cols = weight.shape
    full = np.repeat(np.repeat(scale, block[0], axis=0), block[1], axis=1)[:rows, :cols]
    product = weight.astype(np.float32) * full
    return product if np.dtype(out_dtype) == np.float32 else product.astype(out_dtype)


# -- the arithmetic ---------------------------------------------------------------------
def test_every_code_and_scale_matches_the_golden_table():
    g = np.load(GOLDEN)
    scales = g["scale_bits"].view(np.float32)
    codes = np.tile(np.arange(256, dtype=np.uint8), (len(scales), 1)).view(FP8_E4M3)
    block = (1, 256)  # one scale per row: the whole 256-code table per scale
    assert (bits(dequantize(codes, scales[:, None], block, BF16)) == g["bf16_bits"]).all()
    assert (bits(dequantize(codes, scales[:, None], block, np.float32)) == g["f32_bits"]).all()
    # the table covers what it claims: NaN codes, subnormal results, overflow to inf
    assert g["bf16_bits"][0, 0x7F] == 0x7FC0 and g["bf16_bits"][0, 0xFF] == 0xFFC0
    assert ((g["f32_bits"] & 0x7F800000) == 0).sum() > 100  # f32 subnormals (and zeros)
    assert (g["f32_bits"] == 0x7F800000).any()


@pytest.mark.parametrize("shape", [(300, 200), (128, 128), (1, 129), (576, 96)])
def test_block_layout_with_partial_blocks_matches_the_golden_table(shape):
    g = np.load(GOLDEN)
    rng = np.random.default_rng(sum(shape))
    rows, cols = shape
    codes = rng.integers(0, 256, shape, dtype=np.uint8)
    codes.reshape(-1)[:256] = np.arange(256)[:codes.size]  # every code, NaNs included
    grid = rng.integers(0, 6, (-(-rows // 128), -(-cols // 128)))  # finite, non-overflowing
    scale = g["scale_bits"].view(np.float32)[grid]
    # expected[i, j] = table[scale of block (i // 128, j // 128), code[i, j]]
    which = grid[np.arange(rows)[:, None] // 128, np.arange(cols)[None, :] // 128]
    for out_dtype, table in ((BF16, g["bf16_bits"]), (np.float32, g["f32_bits"])):
        got = dequantize(codes.view(FP8_E4M3), scale, (128, 128), out_dtype)
        assert (bits(got) == table[which, codes]).all()


def test_matches_torch_float8_e4m3fn():
    torch = pytest.importorskip("torch", reason=NEEDS_REFERENCE)
    rng = np.random.default_rng(7)
    rows, cols = 257, 390  # partial blocks on both axes
    codes = rng.integers(0, 256, (rows, cols), dtype=np.uint8)
    codes[0, :256] = np.arange(256)
    scale = (rng.random((3, 4)) * 2e-3).astype(np.float32)
    scale[0, 0] = 2.0**-120  # subnormal products
    w = torch.from_numpy(codes.copy()).view(torch.float8_e4m3fn)
    expanded = torch.from_numpy(scale).repeat_interleave(128, 0).repeat_interleave(128, 1)
    ref = w.to(torch.float32) * expanded[:rows, :cols]
    ref_bf16 = ref.to(torch.bfloat16).view(torch.int16).numpy().view(BF16)
    got = dequantize(codes.view(FP8_E4M3), scale, (128, 128), BF16)
    assert same_bits_or_both_nan(got, ref_bf16)
    assert same_bits_or_both_nan(dequantize(codes.view(FP8_E4M3), scale), ref.numpy())
    assert np.isnan(got.astype(np.float32)[0, [0x7F, 0xFF]]).all()


def test_quantize_saturates_and_never_makes_nan_from_finite_input():
    w = np.array([[1e38, -3e38, 1.0, 0.0, 2.0**-140, np.inf, -np.inf, np.nan]], np.float32)
    q, s = quantize_array(w)
    back = dequantize(q, s)
    assert not np.isnan(back[0, :7]).any() and np.isnan(back[0, 7])
    assert back[0, 5] == 448 * s[0, 0] and back[0, 6] == -448 * s[0, 0]
    tiny = np.zeros((2, 3), np.float32)
    tiny[0, 0] = 1e-45  # amax so small that amax / 448 underflows
    q, s = quantize_array(tiny)
    assert not np.isnan(q.astype(np.float32)).any() and (dequantize(q, s) == tiny).all()


# -- helpers for checkpoints ----------------------------------------------------------------
def edit_tensors(ckpt: Path, shard: str, edit) -> None:
    """Rewrite one shard (tiny: in memory) through `edit(dict) -> dict`; fix the index."""
    path = ckpt / shard
    with SafetensorsReader(path) as r:
        tensors = {n: np.array(r.get(n)) for n in r.names}
    tensors = edit(tensors)
    write_safetensors(path, tensors)
    index = read_index(ckpt / INDEX_FILE)
    index.weight_map = {n: s for n, s in index.weight_map.items() if s != shard or n in tensors}
    index.weight_map.update({n: shard for n in tensors})
    index.total_size = sum(e.nbytes for s in index.shards
                           for e in read_header(ckpt / s).entries.values())
    write_index(ckpt / INDEX_FILE, index)


def shard_of(ckpt: Path, name: str) -> str:
    return read_index(ckpt / INDEX_FILE).weight_map[name]


def cross_shard_weight(ckpt: Path) -> str:
    wm = read_index(ckpt / INDEX_FILE).weight_map
    return next(n.removesuffix(SCALE_SUFFIX) for n, s in wm.items()
                if n.endswith(SCALE_SUFFIX) and wm[n.removesuffix(SCALE_SUFFIX)] != s)


def files_of(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@pytest.fixture
def fp8_src(make_ckpt):
    src = make_ckpt("v3", fp8=True, shards=3)
    raw = json.loads((src / "config.json").read_text())
    raw["my_unknown_key"] = {"kept": [1, 2]}
    (src / "config.json").write_text(json.dumps(raw))
    (src / "tokenizer.json").write_text('{"model": "tiny"}')
    (src / "modeling_deepseek.py").write_text("# remote code\n")
    return src


# -- upcast ---------------------------------------------------------------------------------
def test_upcast_is_exact_and_loads_as_is(fp8_src, tmp_path):
    dst = tmp_path / "bf16"
    report = upcast(fp8_src, dst, workers=2)
    src_ck, out_ck = Checkpoint(fp8_src), Checkpoint(dst)
    # same tensors (names, shapes, dtypes) as the BF16 tensor plan, in the same shard files
    plan = TensorPlan(src_ck.config, "bf16")
    assert {n: (e.dtype, e.shape) for n, e in _entries(out_ck).items()} == \
        {s.name: (s.dtype, s.shape) for s in plan.specs}
    assert out_ck.shard_names == src_ck.shard_names == report.files
    for name, shard in out_ck.index.weight_map.items():
        assert shard == src_ck.index.weight_map[name]
    # every FP8 weight equals the plain definition, the cross-shard one included
    crossed = cross_shard_weight(fp8_src)
    assert shard_of(fp8_src, crossed) != shard_of(fp8_src, crossed + SCALE_SUFFIX)
    for spec in TensorPlan(src_ck.config, "fp8").specs:
        if spec.scale_of:
            continue
        got = out_ck.read(spec.name)
        if spec.scale_name:
            want = definition(src_ck.read(spec.name), src_ck.read(spec.scale_name), BF16)
            assert (bits(got) == bits(want)).all(), spec.name
        else:
            assert got.tobytes() == src_ck.read(spec.name).tobytes(), spec.name
    assert report.dequantized == report.scales_dropped > 0
    # index, metadata, config, side files
    total = sum(e.nbytes for e in _entries(out_ck).values())
    assert out_ck.index.total_size == total == report.total_size
    assert not any(n.endswith(SCALE_SUFFIX) for n in out_ck.index.weight_map)
    for shard in out_ck.shard_names:
        assert read_header(dst / shard).metadata == {"format": "pt"}
    src_raw, out_raw = src_ck.raw_config, out_ck.raw_config
    assert "quantization_config" not in out_raw and out_raw["torch_dtype"] == "bfloat16"
    assert {k: v for k, v in out_raw.items() if k != "torch_dtype"} == \
        {k: v for k, v in src_raw.items() if k not in ("torch_dtype", "quantization_config")}
    assert (dst / "tokenizer.json").read_bytes() == (fp8_src / "tokenizer.json").read_bytes()
    assert (dst / "modeling_deepseek.py").exists() and (dst / "generation_config.json").exists()
    assert sorted(p.name for p in dst.iterdir() if p.name.startswith(".")) == []


def test_output_opens_with_the_safetensors_package(fp8_src, tmp_path):
    from safetensors import safe_open

    up32 = tmp_path / "f32"
    upcast(fp8_src, up32, dtype="f32", workers=1)
    out = Checkpoint(up32)
    for shard in out.shard_names:  # numpy has no bfloat16; F32 output opens without torch
        with safe_open(str(up32 / shard), "np") as f:
            for name in f.keys():
                assert (f.get_tensor(name) == out.read(name)).all()
    torch = pytest.importorskip("torch", reason=NEEDS_REFERENCE)
    from safetensors.torch import load_file

    up16 = tmp_path / "bf16"
    upcast(fp8_src, up16, workers=1)
    for shard in Checkpoint(up16).shard_names:
        for name, t in load_file(str(up16 / shard)).items():
            assert t.dtype in (torch.bfloat16, torch.float32)
            # the F32 output is exactly the BF16 output widened (one rounding, no drift)
            wide = Checkpoint(up32).read(name)
            assert t.float().numpy().tobytes() == wide.astype(np.float32).astype(
                BF16 if t.dtype == torch.bfloat16 else np.float32).astype(np.float32).tobytes()


def test_f32_widens_everything_exactly(fp8_src, tmp_path):
    dst = tmp_path / "f32"
    report = upcast(fp8_src, dst, dtype="f32", workers=1)
    src_ck, out_ck = Checkpoint(fp8_src), Checkpoint(dst)
    assert {e.dtype for e in _entries(out_ck).values()} == {"F32"}
    assert out_ck.raw_config["torch_dtype"] == "float32"
    assert report.widened > 0 and report.copied > 0  # e_score_correction_bias: F32 already
    for name in out_ck.index.weight_map:
        assert (bits(out_ck.read(name)) == bits(src_ck.read_float32(name))).all(), name


def test_max_shard_size_reshards_in_plan_order(fp8_src, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    upcast(fp8_src, whole, workers=1)
    limit = 200_000
    report = upcast(fp8_src, split, workers=1, max_shard_size=limit)
    out = Checkpoint(split)
    assert len(report.files) > 3 and out.shard_names == report.files
    plan_order = [s.name for s in TensorPlan(out.config, "bf16").specs]
    assert list(out.index.weight_map) == plan_order
    for shard in out.shard_names:
        sizes = [e.nbytes for e in out.header(shard).entries.values()]
        assert sum(sizes) <= limit or len(sizes) == 1
    ref = Checkpoint(whole)
    for name in plan_order:
        assert out.read(name).tobytes() == ref.read(name).tobytes()


def _entries(ck: Checkpoint) -> dict:
    return {n: e for s in ck.shard_names for n, e in ck.header(s).entries.items()}


# -- refusals: nothing written --------------------------------------------------------------
def _drop_scale(src: Path) -> str:
    weight = cross_shard_weight(src)
    scale = weight + SCALE_SUFFIX
    edit_tensors(src, shard_of(src, scale), lambda t: {n: a for n, a in t.items() if n != scale})
    return weight


def _bad_scale_shape(src: Path) -> str:
    name = "model.layers.0.mlp.gate_proj.weight" + SCALE_SUFFIX
    ones = np.ones((1, 1), np.float32)
    edit_tensors(src, shard_of(src, name),
                 lambda t: {n: ones if n == name else a for n, a in t.items()})
    return name


def _nan_scale(src: Path) -> str:
    name = "model.layers.1.self_attn.o_proj.weight" + SCALE_SUFFIX

    def edit(t):
        t[name] = t[name].copy()
        t[name][0, 0] = np.nan
        return t

    edit_tensors(src, shard_of(src, name), edit)
    return name


def _fp8_router(src: Path) -> str:
    name = "model.layers.2.mlp.gate.weight"

    def edit(t):
        q, s = quantize_array(t[name].astype(np.float32))
        t[name] = q
        return t

    edit_tensors(src, shard_of(src, name), edit)
    return name


def _unknown_fp8(src: Path) -> str:
    name = "model.layers.0.mlp.extra_proj.weight"
    shard = shard_of(src, "model.norm.weight")
    edit_tensors(src, shard, lambda t: {**t, name: np.zeros((4, 4), FP8_E4M3)})
    return name


def _orphan_scale(src: Path) -> str:
    weight = "model.layers.0.mlp.up_proj.weight"
    shard = shard_of(src, weight)

    def edit(t):  # the weight is BF16 already, its scale was left behind
        t[weight] = np.zeros(t[weight].shape, BF16)
        return t

    edit_tensors(src, shard, edit)
    return weight + SCALE_SUFFIX


@pytest.mark.parametrize("damage, code, error", [
    (_drop_scale, "scale-missing", MissingTensorError),
    (_bad_scale_shape, "scale-shape", ShapeMismatchError),
    (_nan_scale, "scale-invalid", FormatError),
    (_fp8_router, "scale-missing", MissingTensorError),
    (_unknown_fp8, "scale-missing", MissingTensorError),
    (_orphan_scale, "scale-orphan", UnexpectedTensorError)])
def test_refuses_before_writing_anything(make_ckpt, tmp_path, run_cli, damage, code, error):
    """The refusal is validate's first error, under its code (values: the deep scan's)."""
    from ckpt_tools.commands.validate import validate

    src = make_ckpt("v3", fp8=True, shards=3)
    name = damage(src)
    dst = tmp_path / "out"
    with pytest.raises(error, match=name.replace(".", r"\.")) as refused:
        upcast(src, dst, workers=1)
    assert refused.value.finding == code and f"[{code}]" in str(refused.value)
    report = validate(src, deep=code == "scale-invalid")
    assert [f.code for f in report.findings if f.severity == "error"][0] == code
    assert not dst.exists()
    dst.mkdir()
    r = run_cli("upcast", src, dst)
    assert r.exit_code == 1 and name in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.startswith("Error: ") and len(r.stderr.strip().splitlines()) == 1
    assert list(dst.iterdir()) == []


def test_refuses_bad_destinations(fp8_src, tmp_path):
    with pytest.raises(OutputError):
        upcast(fp8_src, fp8_src, workers=1)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        upcast(fp8_src, busy, workers=1)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]


# -- resume after SIGKILL -------------------------------------------------------------------
@pytest.mark.parametrize("command", ["upcast", "quantize"])
def test_killed_run_resumes_to_identical_bytes(make_ckpt, tmp_path, command):
    src = make_ckpt("v3", fp8=command == "upcast", shards=3)
    run = upcast if command == "upcast" else quantize
    clean = tmp_path / "clean"
    clean_report = run(src, clean, workers=1)
    shards = clean_report.files
    # crash points: one per tensor written and one per file renamed; die 3 tensors into shard 2
    kill_at = len(read_header(clean / shards[0]).entries) + 1 + 3
    killed = tmp_path / "killed"
    p = subprocess.run([sys.executable, "-m", "ckpt_tools", command, str(src), str(killed),
                        "--workers", "1"], capture_output=True,
                       env={**os.environ, ENV_VAR: str(kill_at)})
    assert p.returncode == -9, p.stderr.decode()
    names = {q.name for q in killed.iterdir()}
    assert shards[0] in names and shards[1] not in names and shards[1] + ".partial" in names
    assert "config.json" not in names and INDEX_FILE not in names
    report = run(src, killed, workers=2)
    assert report.resumed_files == 1
    assert files_of(killed) == files_of(clean)
    if command == "quantize":  # the statistics of the kept shard survive in the journal
        assert report.errors == clean_report.errors


# -- quantize ---------------------------------------------------------------------------------
def test_quantize_follows_the_tensor_plan(make_ckpt, tmp_path):
    src = make_ckpt("v3", shards=2)
    dst = tmp_path / "fp8"
    report = quantize(src, dst, workers=1)
    out = Checkpoint(dst)
    plan = TensorPlan(out.config, "fp8")
    assert out.layout == "fp8" and out.config.is_fp8
    assert {n: (e.dtype, e.shape) for n, e in _entries(out).items()} == \
        {s.name: (s.dtype, s.shape) for s in plan.specs}
    assert report.quantized == sum(s.dtype == "F8_E4M3" for s in plan.specs)
    assert out.index.total_size == plan.total_bytes == report.total_size
    qc = out.raw_config["quantization_config"]
    assert qc["quant_method"] == "fp8" and qc["weight_block_size"] == [128, 128]
    assert "scale_fmt" not in qc
    src_ck = Checkpoint(src)
    for s in plan.specs:  # what is not quantised is copied byte for byte
        if s.dtype != "F8_E4M3" and s.scale_of is None:
            assert out.read(s.name).tobytes() == src_ck.read(s.name).tobytes()


def _e4m3_half_ulp(q: np.ndarray) -> np.ndarray:
    """Half the spacing of e4m3fn around each quantised value (3 mantissa bits, min
    normal 2**-6, subnormal step 2**-9)."""
    a = np.abs(q.astype(np.float32))
    exponent = np.floor(np.log2(np.maximum(a, 2.0**-6)))
    return 0.5 * np.exp2(exponent - 3)


@pytest.mark.parametrize("scale_fmt", ["float", "ue8m0"])
def test_round_trip_error_is_bounded_by_e4m3_rounding(make_ckpt, tmp_path, scale_fmt):
    src = make_ckpt("v3", shards=2)
    q_dir, back32, back16 = tmp_path / "q", tmp_path / "b32", tmp_path / "b16"
    report = quantize(src, q_dir, scale_fmt=scale_fmt, workers=1)
    upcast(q_dir, back32, dtype="f32", workers=1)
    upcast(q_dir, back16, workers=1)
    assert Checkpoint(q_dir).raw_config["quantization_config"].get("scale_fmt") == (
        "ue8m0" if scale_fmt == "ue8m0" else None)
    src_ck, q_ck, b32, b16 = (Checkpoint(p) for p in (src, q_dir, back32, back16))
    errors = {e.name: e for e in report.errors}
    assert len(errors) == report.quantized > 0
    for name, stats in errors.items():
        ref = src_ck.read(name).astype(np.float32)
        q, scale = q_ck.read(name), q_ck.read(name + SCALE_SUFFIX)
        if scale_fmt == "ue8m0":
            assert (np.exp2(np.round(np.log2(scale))) == scale).all()
        block = np.repeat(np.repeat(scale, 128, 0), 128, 1)[:ref.shape[0], :ref.shape[1]]
        # float32 arithmetic (w / s, q * s) adds a few float32 ulps of the value itself
        bound = _e4m3_half_ulp(q) * block + np.abs(ref) * 2.0**-21
        err32 = np.abs(b32.read(name) - ref)
        assert (err32 <= bound).all(), name
        # BF16 output adds its own rounding: at most half a BF16 ulp of the result
        out16 = b16.read(name).astype(np.float32)
        bf16_half_ulp = np.exp2(np.floor(np.log2(np.maximum(np.abs(out16), 2.0**-126))) - 8)
        assert (np.abs(out16 - ref) <= bound + bf16_half_ulp).all(), name
        assert (err32 > _e4m3_half_ulp(q) * block * 0.9).any()  # the bound is not slack
        # the report measured exactly this round trip
        assert stats.max_abs_error == pytest.approx(float(err32.max()), rel=1e-12, abs=1e-30)
        err64, ref64 = err32.astype(np.float64), ref.astype(np.float64)
        rel = math.sqrt(float(np.sum(err64**2) / np.sum(ref64**2)))
        assert stats.rel_l2_error == pytest.approx(rel, rel=1e-9)
    assert report.max_abs_error == max(e.max_abs_error for e in report.errors)


def test_quantize_refuses_an_fp8_source(make_ckpt, tmp_path):
    src = make_ckpt("v3", fp8=True, shards=2)
    with pytest.raises(UnexpectedTensorError, match="already quantised"):
        quantize(src, tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()


# -- CLI ----------------------------------------------------------------------------------------
def test_cli_json_on_stdout_progress_on_stderr(fp8_src, tmp_path, run_cli, monkeypatch):
    r = run_cli("upcast", fp8_src, tmp_path / "quiet-pipe", "--json", "--workers", "1")
    assert r.exit_code == 0 and r.stderr == ""  # stderr is no terminal: no bar unless asked
    monkeypatch.setenv("CKPT_PROGRESS", "1")
    r = run_cli("upcast", fp8_src, tmp_path / "out", "--json", "--workers", "1")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["dequantized"] > 0 and doc["files"] == Checkpoint(fp8_src).shard_names
    assert "upcast" in r.stderr and "100%" in r.stderr
    r = run_cli("quantize", tmp_path / "out", tmp_path / "q", "--scale-fmt", "ue8m0", "-q")
    assert r.exit_code == 0 and "round trip to F32" in r.stdout and r.stderr == ""
    assert run_cli("upcast", fp8_src, tmp_path / "x", "--dtype", "f16").exit_code == 2
    assert run_cli("upcast", fp8_src, tmp_path / "x", "--max-shard-size", "lots").exit_code == 2


def test_outputs_pass_validate(fp8_src, tmp_path):
    from ckpt_tools.commands.validate import validate

    up, q = tmp_path / "up", tmp_path / "q"
    upcast(fp8_src, up, workers=1)
    quantize(up, q, scale_fmt="ue8m0", workers=1)
    for out in (up, q):
        report = validate(out, deep=True)
        assert report.ok and not report.warnings, [f.message for f in report.findings]
    assert validate(q).layout == "fp8"


def test_plan_is_cheap_and_pairs_across_shards(fp8_src):
    plan = plan_upcast(fp8_src)
    crossed = cross_shard_weight(fp8_src)
    op = next(op for job in plan.jobs for op in job.ops if op.name == crossed)
    assert op.kind == "dequantize" and op.shard != op.scale_shard
    assert op.scale == crossed + SCALE_SUFFIX


@pytest.mark.parametrize("workers", [1, 2])
def test_upcast_in_parts_is_byte_identical(make_ckpt, tmp_path, monkeypatch, workers):
    """Each shard written by several jobs (row ranges of its tensors, pwritten into one
    .partial) gives the same bytes as one job per shard; a run that fails midway leaves no
    .partial and its rerun resumes to the same bytes."""
    from ckpt_tools.commands import convert
    from ckpt_tools.io import part_writer

    src = make_ckpt("v3", fp8=True, shards=3)
    whole = upcast(src, tmp_path / "whole", workers=1)
    monkeypatch.setattr(convert, "PART_BYTES", 20_000)
    parts = upcast(src, tmp_path / "parts", workers=workers)
    files = lambda d: {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}  # noqa: E731
    assert files(tmp_path / "parts") == files(tmp_path / "whole")
    assert sum(n.jobs for n in parts.nodes) > 3 * len(whole.files)

    real_write_at, calls = part_writer.write_at, []
    plan = convert.plan_upcast(src)
    pieces = sum(len(part) for j in plan.jobs
                 for part in convert.split_file(j, plan.block, convert.PART_BYTES))

    def fail_later(*args, **kwargs):  # the last piece of the last file fails
        calls.append(1)
        if len(calls) == pieces:
            raise OSError(28, "No space left on device")
        return real_write_at(*args, **kwargs)

    monkeypatch.setattr(part_writer, "write_at", fail_later)
    with pytest.raises(OSError):
        upcast(src, tmp_path / "again", workers=1)
    assert not list((tmp_path / "again").glob("*.partial"))
    assert 0 < len(list((tmp_path / "again").glob("*.safetensors"))) < len(whole.files)
    monkeypatch.setattr(part_writer, "write_at", real_write_at)
    resumed = upcast(src, tmp_path / "again", workers=1)
    assert resumed.resumed_files > 0
    assert files(tmp_path / "again") == files(tmp_path / "whole")
