"""The compiled kernels (numba) give the NumPy path's bytes on every number format.

NumPy is the oracle: each case runs both backends through the public functions (chosen by
`CKPT_KERNELS`) and compares bytes, over random (hypothesis) and adversarial inputs: NaN
codes, subnormals, infinities, saturation, rounding ties, partial edge blocks, widths that
are and are not multiples of the compiled loops' 8-code words. Then whole conversions with
the compiled path on and off write identical checkpoints, one per format.
"""

from __future__ import annotations

import filecmp

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckpt_tools.errors import ArgumentError
from ckpt_tools.formats import E4M3_MAX, FP8_BLOCK, fp8_block, kernels, mxfp4
from ckpt_tools.formats.round_trip import RoundTripStats
from ckpt_tools.commands.tiny import make_tiny

pytest.importorskip("numba", reason="the compiled kernels need numba")
BF16 = np.dtype(ml_dtypes.bfloat16)
OUT_DTYPES = [np.dtype(np.float32), BF16, np.dtype(np.float16)]
# monkeypatch only sets CKPT_KERNELS, afresh on every call of `both`
FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def both(monkeypatch, fn):
    """fn() with the NumPy kernels, then with the compiled ones."""
    results = []
    for backend in ("numpy", "compiled"):
        monkeypatch.setenv(kernels.ENV, backend)
        results.append(fn())
    return results


def same_bytes(a, b) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


shapes = st.tuples(st.integers(1, 300), st.integers(1, 300))
seeds = st.integers(0, 2**32 - 1)


def adversarial_scales(rng, grid) -> np.ndarray:
    """Scales from subnormal to huge (products that overflow to inf), and ordinary ones."""
    picks = np.array([1e-3, 2.0**-126, 1e-45, 3e38, 1.0, 448.0, 2.0**-20, 7.3e-5], np.float32)
    scale = rng.choice(picks, grid).astype(np.float32)
    ordinary = rng.random(grid) < 0.5
    scale[ordinary] = rng.random(np.count_nonzero(ordinary)).astype(np.float32) * 1e-2
    return scale


@FAST
@given(shape=shapes, seed=seeds, fmt=st.sampled_from(["e4m3", "e5m2"]),
       block=st.sampled_from([FP8_BLOCK, (16, 24), (8, 8), (3, 5)]))
def test_fp8_dequantize_same_bytes(monkeypatch, shape, seed, fmt, block):
    rng = np.random.default_rng(seed)
    dtype = fp8_block.FP8_E4M3 if fmt == "e4m3" else fp8_block.FP8_E5M2
    codes = rng.integers(0, 256, shape, dtype=np.uint8).view(dtype)  # NaN / inf codes too
    scale = adversarial_scales(rng, fp8_block.block_grid(shape, block))
    for out_dtype in OUT_DTYPES:
        same_bytes(*both(monkeypatch, lambda: fp8_block.dequantize(codes, scale, block, out_dtype)))


@FAST
@given(rows=st.integers(1, 70), half=st.integers(1, 100), seed=seeds)
def test_mxfp4_dequantize_same_bytes(monkeypatch, rows, half, seed):
    rng = np.random.default_rng(seed)
    packed = rng.integers(-128, 128, (rows, half), dtype=np.int8)
    scale = rng.choice(np.array([0, 1, 100, 127, 150, 254, 255], np.uint8),
                       (rows, -(-2 * half // 32))).view(mxfp4.E8M0)  # 255: NaN
    for out_dtype in OUT_DTYPES:
        same_bytes(*both(monkeypatch, lambda: mxfp4.dequantize_fp4(packed, scale, out_dtype)))


def adversarial_weights(rng, shape, dtype) -> np.ndarray:
    """Normal values spread over many magnitudes, with NaN, +-inf, +-0, float32 subnormals
    and values beyond 448 x any block scale sprinkled in."""
    w = (rng.standard_normal(shape) * 10.0 ** rng.integers(-8, 4, shape)).astype(np.float32)
    special = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -3e-39, 3e38,
                        -3e38, 448.0, 464.0, 480.0], np.float32)
    mask = rng.random(shape) < 0.05
    w[mask] = rng.choice(special, np.count_nonzero(mask))
    with np.errstate(over="ignore"):  # F16: beyond 65504 is inf, as wanted
        return w.astype(dtype)


@FAST
@given(shape=shapes, seed=seeds, scale_fmt=st.sampled_from([None, "ue8m0"]),
       dtype=st.sampled_from([np.float32, BF16, np.float16, np.float64]),
       block=st.sampled_from([FP8_BLOCK, (16, 24), (3, 5)]))
def test_fp8_quantize_same_bytes(monkeypatch, shape, seed, scale_fmt, dtype, block):
    w = adversarial_weights(np.random.default_rng(seed), shape, dtype)
    stats = [RoundTripStats(), RoundTripStats()]
    runs = iter(stats)
    (qa, sa), (qb, sb) = both(monkeypatch, lambda: fp8_block.quantize(
        w, block, scale_fmt=scale_fmt, errors=next(runs)))
    same_bytes(qa, qb)
    same_bytes(sa, sb)
    a, b = (s.result() for s in stats)
    assert a[0] == b[0] and a[2] == b[2]  # max |error| and non-finite count: exact
    assert a[1] == pytest.approx(b[1], rel=1e-9, abs=1e-300)  # a sum: order may differ


def adversarial_blocks(rng, shape, block) -> np.ndarray:
    """Each block one kind the scale and rounding rules single out: all (signed) zeros;
    no finite value (scale 1); float32 subnormals only (amax / 448 underflows to the
    smallest scale); amax at the float32 maximum (dequantised values overflow to inf);
    e4m3 midpoints and their neighbours (ties to even) and e4m3 subnormals relative to
    the block's amax; ordinary values."""
    w = (rng.standard_normal(shape) * 0.02).astype(np.float32)
    grid = fp8_block.block_grid(shape, block)
    e4m3 = fp8_block.decoded(fp8_block.FP8_E4M3)
    finite = np.unique(np.abs(e4m3[np.isfinite(e4m3)]))
    mids = (finite[:-1] + finite[1:]) / 2
    ties = np.concatenate([mids, np.nextafter(mids, 0), np.nextafter(mids, 1000),
                           finite[:16]]).astype(np.float32)
    for i in range(grid[0]):
        for j in range(grid[1]):
            tile = w[i * block[0]:(i + 1) * block[0], j * block[1]:(j + 1) * block[1]]
            kind = rng.integers(0, 6)
            if kind == 0:
                tile[:] = rng.choice(np.array([0.0, -0.0], np.float32), tile.shape)
            elif kind == 1:
                tile[:] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), tile.shape)
            elif kind == 2:
                tile[:] = rng.choice(np.array([1e-45, -1e-45, 0.0], np.float32), tile.shape)
                tile.flat[0] = rng.choice(np.array([1e-45, 3e-42], np.float32))
            elif kind == 3:
                tile[:] = np.float32(3.4028235e38) * rng.choice(np.array([1, -1, 0.5, 1e-9]),
                                                                 tile.shape)
                tile.flat[0] = np.float32(3.4028235e38)
            elif kind == 4:
                amax = np.float32(10.0) ** rng.integers(-30, 30)
                tile[:] = rng.choice(ties, tile.shape) * rng.choice([-1, 1], tile.shape)
                tile[:] *= amax / np.float32(E4M3_MAX)
                tile.flat[0] = amax
    return w


@FAST
@given(shape=shapes, seed=seeds, scale_fmt=st.sampled_from([None, "ue8m0"]),
       dtype=st.sampled_from([np.float32, BF16]),
       block=st.sampled_from([FP8_BLOCK, (4, 8), (3, 5)]))
def test_fp8_quantize_adversarial_blocks(monkeypatch, shape, seed, scale_fmt, dtype, block):
    """Scales computed inside the compiled kernel (F32) and by NumPy (ue8m0), partial edge
    blocks included: the same codes, scales and round-trip figures as NumPy's."""
    w = adversarial_blocks(np.random.default_rng(seed), shape, block).astype(dtype)
    stats = [RoundTripStats(), RoundTripStats()]
    runs = iter(stats)
    with np.errstate(over="ignore", invalid="ignore"):
        (qa, sa), (qb, sb) = both(monkeypatch, lambda: fp8_block.quantize(
            w, block, scale_fmt=scale_fmt, errors=next(runs)))
        a, b = (s.result() for s in stats)
    same_bytes(qa, qb)
    same_bytes(sa, sb)
    assert a[0] == b[0] and a[2] == b[2]
    assert a[1] == pytest.approx(b[1], rel=1e-9, abs=1e-300) or (np.isnan(a[1]) and np.isnan(b[1]))


@FAST
@given(rows=st.integers(1, 40), half=st.integers(1, 120), seed=seeds,
       dtype=st.sampled_from([np.float32, BF16]))
def test_mxfp4_quantize_same_bytes(monkeypatch, rows, half, seed, dtype):
    w = adversarial_weights(np.random.default_rng(seed), (rows, 2 * half), dtype)
    stats = [RoundTripStats(), RoundTripStats()]
    runs = iter(stats)
    (qa, sa), (qb, sb) = both(monkeypatch, lambda: mxfp4.quantize_fp4(w, errors=next(runs)))
    same_bytes(qa, qb)
    same_bytes(sa.view(np.uint8), sb.view(np.uint8))
    assert stats[0].result() == stats[1].result()  # both sums are NumPy's here


def test_e2m1_rounding_ties_and_neighbours(monkeypatch):
    """Every e2m1 value, every midpoint (ties to even) and the float32 either side, both
    signs, in a block whose scale is 1 (its largest value is 6)."""
    grid = np.unique(np.abs(mxfp4.E2M1))
    mids = (grid[:-1] + grid[1:]) / 2
    probes = np.concatenate([grid, mids, np.nextafter(mids, 0), np.nextafter(mids, 7)])
    probes = np.concatenate([probes, -probes]).astype(np.float32)
    for k in range(0, probes.size, 30):
        w = np.zeros((1, 32), np.float32)
        w[0, 0] = 6.0
        chunk = probes[k:k + 30]
        w[0, 1:1 + chunk.size] = chunk
        (qa, sa), (qb, sb) = both(monkeypatch, lambda: mxfp4.quantize_fp4(w))
        assert sa.view(np.uint8)[0, 0] == 127  # 2^0
        same_bytes(qa, qb)


def test_e4m3_rounding_ties_and_neighbours(monkeypatch):
    """Every e4m3 value, every midpoint between neighbours (ties to even) and the float32
    just either side of it, both signs, with a scale of 1: what ml_dtypes' cast gives."""
    values = fp8_block.decoded(fp8_block.FP8_E4M3)
    finite = np.unique(np.abs(values[np.isfinite(values)]))
    mids = (finite[:-1] + finite[1:]) / 2
    probes = np.concatenate([finite, mids, np.nextafter(mids, 0), np.nextafter(mids, 1000),
                             np.nextafter(finite, 0), [E4M3_MAX, 1e-45, 2.0**-10, 3 * 2.0**-10]])
    probes = np.concatenate([probes, -probes]).astype(np.float32)
    w = np.zeros((1, 128), np.float32)
    w[0, 0] = E4M3_MAX  # the block's scale is then exactly 1
    for k in range(0, probes.size, 127):
        chunk = probes[k:k + 127]
        w[0, 1:1 + chunk.size] = chunk
        w[0, 1 + chunk.size:] = 0
        (qa, sa), (qb, sb) = both(monkeypatch, lambda: fp8_block.quantize(w))
        assert sa[0, 0] == 1.0
        same_bytes(qa, qb)
        same_bytes(qa, w.astype(fp8_block.FP8_E4M3))


def test_choice_and_errors(monkeypatch):
    monkeypatch.setenv(kernels.ENV, "numpy")
    assert kernels.compiled_for(1 << 30) is None
    monkeypatch.setenv(kernels.ENV, "auto")
    assert kernels.compiled_for(kernels.MIN_COMPILED_ELEMENTS - 1) is None
    assert kernels.compiled_for(kernels.MIN_COMPILED_ELEMENTS) is not None
    monkeypatch.setenv(kernels.ENV, "gpu")
    with pytest.raises(ArgumentError, match="CKPT_KERNELS='gpu'"):
        kernels.compiled_for(1)


def same_tree(a, b) -> None:
    files = sorted(p.name for p in a.iterdir() if p.suffix == ".safetensors")
    assert files and files == sorted(p.name for p in b.iterdir() if p.suffix == ".safetensors")
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert not mismatch and not errors


@pytest.mark.parametrize("preset,kwargs", [("v3", {}), ("v4-flash", {}),
                                           ("v4-flash", {"expert_dtype": "fp8"})])
def test_conversions_identical_with_compiled_on_and_off(tmp_path, monkeypatch, preset, kwargs):
    """upcast (BF16 and F32) and quantize of one checkpoint per format, NumPy vs compiled."""
    from ckpt_tools.commands.convert import quantize, upcast

    src = make_tiny(tmp_path / "src", preset, fp8=True, **kwargs).path
    outs = {}
    for backend in ("numpy", "compiled"):
        monkeypatch.setenv(kernels.ENV, backend)
        d = tmp_path / backend
        upcast(src, d / "bf16")
        upcast(src, d / "f32", dtype="f32")
        quantize(d / "bf16", d / "q", **({"scale_fmt": "ue8m0"} if preset == "v3" else {}))
        outs[backend] = d
    for sub in ("bf16", "f32", "q"):
        same_tree(outs["numpy"] / sub, outs["compiled"] / sub)


def test_format_constants_and_conversion_imports_stay_light():
    """The constants import neither numpy nor ml_dtypes (the tensor plan and `ckpt info` use
    them), and the NumPy kernels do not import numba: only a compiled call does."""
    import subprocess
    import sys

    code = ("import sys, ckpt_tools.formats; assert 'numpy' not in sys.modules; "
            "assert 'ml_dtypes' not in sys.modules; import ckpt_tools.formats.mxfp4, "
            "ckpt_tools.commands.convert; assert 'numba' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


FRESH_PROCESS_KERNELS = r"""
import json, os, sys
import ml_dtypes, numpy as np
from ckpt_tools.formats import fp8_block, mxfp4
from ckpt_tools.formats.round_trip import RoundTripStats

def outputs():
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 256, (200, 264), dtype=np.uint8).view(fp8_block.FP8_E4M3)
    scale = rng.random((2, 3)).astype(np.float32)
    packed = rng.integers(-128, 128, (70, 128), dtype=np.int8)
    e8m0 = rng.integers(100, 256, (70, 8), dtype=np.uint8).view(mxfp4.E8M0)
    w = (rng.standard_normal((200, 264)) * 50).astype(np.float32)
    w[0, :3] = [np.nan, np.inf, -np.inf]
    out = [fp8_block.dequantize(codes, scale, out_dtype=ml_dtypes.bfloat16),  # 8-code words
           fp8_block.dequantize(codes[:, :259].copy(), scale[:, :3]),  # byte loop
           mxfp4.dequantize_fp4(packed, e8m0, ml_dtypes.bfloat16),
           mxfp4.dequantize_fp4(packed[:, :100].copy(), e8m0[:, :7]),
           *fp8_block.quantize(w.astype(ml_dtypes.bfloat16), errors=RoundTripStats()),
           *fp8_block.quantize(w, scale_fmt="ue8m0"), *mxfp4.quantize_fp4(w)]
    return [a.tobytes().hex() for a in out]

compiled = outputs()
modules = sorted(sys.modules)
os.environ["CKPT_KERNELS"] = "numpy"
print(json.dumps({"same": compiled == outputs(), "modules": modules}))
"""


def test_fresh_process_loads_cached_kernels_without_numba_registries():
    """A process after the first loads the cached machine code (formats/_numba_load.py):
    the same bytes as NumPy, without numba's registry refresh (numba.np.random is one of
    the registries it imports, scipy.linalg its BLAS probe's import)."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, CKPT_KERNELS="compiled")
    run = [sys.executable, "-c", FRESH_PROCESS_KERNELS]
    subprocess.run(run, env=env, check=True, capture_output=True)  # fills numba's cache
    report = json.loads(subprocess.run(run, env=env, check=True, capture_output=True,
                                       text=True).stdout)
    assert report["same"]
    assert "numba" in report["modules"] and "numba.np.random" not in report["modules"]
    assert "scipy.linalg" not in report["modules"]


def test_kernels_run_uncached_where_no_cache_directory_is_writable():
    """numba raises RuntimeError at decoration when no cache directory is writable (as a
    read-only install with a read-only home would be): the kernels compile per process
    instead, and give NumPy's bytes."""
    import os
    import subprocess
    import sys

    code = r"""
import numba.core.caching
def read_only(self):
    raise PermissionError("read-only file system")
numba.core.caching._CacheLocator.ensure_cache_path = read_only
import os, numpy as np
from ckpt_tools.formats import compiled, fp8_block
assert type(compiled._gather_fp8_words.dispatcher._cache).__name__ == "NullCache"
rng = np.random.default_rng(3)
codes = rng.integers(0, 256, (130, 136), dtype=np.uint8).view(fp8_block.FP8_E4M3)
scale = rng.random((2, 2)).astype(np.float32)
fast = fp8_block.dequantize(codes, scale)
os.environ["CKPT_KERNELS"] = "numpy"
assert fast.tobytes() == fp8_block.dequantize(codes, scale).tobytes()
"""
    subprocess.run([sys.executable, "-c", code], check=True,
                   env=dict(os.environ, CKPT_KERNELS="compiled"))


@pytest.mark.parametrize("backend", ["numpy", "compiled"])
def test_fp8_quantize_into_out(monkeypatch, backend):
    """`out` receives the very codes quantize returns otherwise; a wrong buffer is refused."""
    from ckpt_tools.errors import ShapeMismatchError

    monkeypatch.setenv(kernels.ENV, backend)
    w = adversarial_weights(np.random.default_rng(3), (130, 260), BF16)
    q, s = fp8_block.quantize(w)
    buf = np.full((200, 260), 0x55, np.uint8).view(fp8_block.FP8_E4M3)
    q2, s2 = fp8_block.quantize(w, out=buf[:130])
    assert q2.base is not None and np.shares_memory(q2, buf)
    same_bytes(q, q2)
    same_bytes(s, s2)
    assert (buf[130:].view(np.uint8) == 0x55).all()
    with pytest.raises(ShapeMismatchError, match="quantize: out must be"):
        fp8_block.quantize(w, out=np.empty((130, 260), np.uint8))
