"""DeepSeek-V4 number formats: E8M0 scales, FP8 128x128 blocks with E8M0, MXFP4 experts.

Checked bit for bit against the definitions written out here independently (see
docs/deepseek_v4.md) and against transformers' own dequantiser (`Fp8Dequantize`)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from ckpt_tools.io.dtypes import DTYPES, dtype_name
from ckpt_tools.errors import ShapeMismatchError
from ckpt_tools.formats import is_fp4_pair
from ckpt_tools.formats.e8m0 import E8M0, e8m0_to_float32
from ckpt_tools.formats.mxfp4 import (
    dequantize_fp4,
    dequantize_fp8,
    fp4_to_fp8,
    quantize_fp4,
    quantize_fp8,
)

BF16 = np.dtype(ml_dtypes.bfloat16)
# e2m1: sign bit 3, exponent bits 2-1 (bias 1), mantissa bit 0; code 1 is the subnormal 0.5
E2M1 = [(-1) ** (c >> 3) * ((c & 1) * 0.5 if not (c >> 1) & 3 else
                            2.0 ** (((c >> 1) & 3) - 1) * (1 + (c & 1) / 2)) for c in range(16)]


def definition_fp4(packed: np.ndarray, scale_bytes: np.ndarray) -> np.ndarray:
    """W[i, 2k] = E2M1[u & 15] 2^(s-127), W[i, 2k+1] = E2M1[u >> 4] 2^(s-127), in float32."""
    rows, half = packed.shape
    out = np.empty((rows, 2 * half), np.float32)
    u = packed.view(np.uint8)
    for i in range(rows):
        for k in range(half):
            for j, code in ((2 * k, u[i, k] & 15), (2 * k + 1, u[i, k] >> 4)):
                b = int(scale_bytes[i, j // 32])
                s = np.float32(np.nan) if b == 255 else np.float32(2.0 ** (b - 127))
                with np.errstate(over="ignore"):
                    out[i, j] = np.float32(E2M1[code]) * s
    return out


def test_e2m1_table_matches_ml_dtypes():
    codes = np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn)
    assert codes.astype(np.float32).tolist() == E2M1


def test_e8m0_bytes():
    v = e8m0_to_float32(np.array([0, 1, 126, 127, 128, 254, 255], np.uint8))
    assert v[:6].tolist() == [2.0 ** -127, 2.0 ** -126, 0.5, 1.0, 2.0, 2.0 ** 127]
    assert np.isnan(v[6])
    assert dtype_name(E8M0) == "F8_E8M0" and DTYPES["F8_E8M0"].itemsize == 1


@pytest.mark.parametrize("out_dtype", [np.float32, BF16])
def test_fp4_every_byte_and_scale_against_definition(out_dtype):
    rng = np.random.default_rng(1)
    packed = np.arange(256, dtype=np.uint8).reshape(4, 64).view(np.int8)  # every byte
    scale = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    scale[0, :] = [0, 1, 254, 255]  # extremes: subnormal 2^-127, inf products, NaN
    got = dequantize_fp4(packed, scale.view(E8M0), out_dtype)
    want = definition_fp4(packed, scale).astype(out_dtype)
    assert got.dtype == np.dtype(out_dtype)
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8))


def test_fp4_low_nibble_is_the_even_element():
    packed = np.array([[0x72]], np.uint8).view(np.int8)  # low 2 -> 1.0, high 7 -> 6.0
    scale = np.full((1, 1), 127, np.uint8).view(E8M0)
    assert dequantize_fp4(packed, scale).tolist() == [[1.0, 6.0]]


def test_fp4_shape_checks():
    with pytest.raises(ShapeMismatchError, match=r"\[4, 2\]"):
        dequantize_fp4(np.zeros((4, 32), np.int8), np.zeros((4, 3), np.uint8).view(E8M0))
    assert is_fp4_pair("I8", (4, 32), (4, 2)) and not is_fp4_pair("I8", (4, 32), (1, 1))
    assert not is_fp4_pair("F8_E4M3", (4, 32), (4, 2))


@pytest.mark.parametrize("out_dtype", [np.float32, BF16])
def test_fp8_with_e8m0_against_definition(out_dtype):
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 256, (256, 384), dtype=np.uint8)
    w = codes.view(ml_dtypes.float8_e4m3fn)
    scale = rng.integers(100, 150, (2, 3), dtype=np.uint8)
    got = dequantize_fp8(w, scale.view(E8M0), out_dtype)
    s = np.repeat(np.repeat(2.0 ** (scale.astype(np.float64) - 127), 128, 0), 128, 1)
    want = (w.astype(np.float32) * s.astype(np.float32)).astype(out_dtype)
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8))


def test_quantize_fp4_round_trip():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 96)).astype(np.float32)
    q, s = quantize_fp4(x)
    assert q.dtype == np.int8 and q.shape == (64, 48) and s.dtype == E8M0 and s.shape == (64, 3)
    back = dequantize_fp4(q, s)
    # e2m1 steps are at most 2 units of the block scale; amax/scale is in (3, 6]
    blocks = np.abs(x).reshape(64, 3, 32).max(-1)
    assert np.all(np.abs(back - x).reshape(64, 3, 32).max(-1) <= blocks / 3 + 1e-7)
    # values already on the grid come back exactly
    assert np.array_equal(dequantize_fp4(*quantize_fp4(back)), back)


def test_quantize_fp8_ue8m0_round_trip():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(256, 128)).astype(np.float32)
    q, s = quantize_fp8(x)
    assert s.dtype == E8M0 and s.shape == (2, 1)
    assert np.allclose(dequantize_fp8(q, s), x, rtol=0.07, atol=1e-3)


def test_fp4_to_fp8_repack_is_lossless():
    rng = np.random.default_rng(5)
    q, s = quantize_fp4(rng.normal(size=(256, 256)).astype(np.float32) *
                        np.exp2(rng.integers(-6, 6, (256, 1))).astype(np.float32))
    q8, s8 = fp4_to_fp8(q, s)
    assert q8.dtype == ml_dtypes.float8_e4m3fn and s8.shape == (2, 2)
    assert np.array_equal(dequantize_fp8(q8, s8), dequantize_fp4(q, s))


@pytest.mark.reference
def test_equal_to_transformers_dequantisation():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.integrations.finegrained_fp8 import Fp8Dequantize

    op = Fp8Dequantize(hf_quantizer=None)
    rng = np.random.default_rng(6)
    packed = rng.integers(-128, 128, (128, 128), dtype=np.int8)
    scale = rng.integers(110, 140, (128, 8), dtype=np.uint8)
    theirs = op._dequantize_one(torch.from_numpy(packed),
                                torch.from_numpy(scale).view(torch.float8_e8m0fnu), torch.bfloat16)
    ours = dequantize_fp4(packed, scale.view(E8M0), BF16)
    assert np.array_equal(theirs.view(torch.int16).numpy(), ours.view(np.int16))
    codes = rng.integers(0, 256, (256, 384), dtype=np.uint8)
    codes[codes & 0x7F == 0x7F] = 0  # NaN codes compare unequal
    fscale = rng.integers(110, 140, (2, 3), dtype=np.uint8)
    theirs = op._dequantize_one(torch.from_numpy(codes).view(torch.float8_e4m3fn),
                                torch.from_numpy(fscale).view(torch.float8_e8m0fnu), torch.bfloat16)
    ours = dequantize_fp8(codes.view(ml_dtypes.float8_e4m3fn), fscale.view(E8M0), BF16)
    assert np.array_equal(theirs.view(torch.int16).numpy(), ours.view(np.int16))
