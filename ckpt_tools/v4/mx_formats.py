"""DeepSeek-V4's on-disk number formats: E8M0 scales, FP8 128x128 blocks, MXFP4 experts.

Definitions (docs/deepseek_v4.md, "Number formats"):
- E8M0 (F8_E8M0, ml_dtypes `float8_e8m0fnu`): byte b is 2^(b-127); b = 255 is NaN.
- FP8 dense weight: W[i, j] = e4m3(q[i, j]) * s[i // 128, j // 128] with E8M0 `s`.
- MXFP4 expert weight, I8 [out, in/2]: byte u holds two e2m1 codes along the input axis,
  low nibble = even element, high nibble = odd element; one E8M0 scale per 32 inputs:
  W[i, 2k] = E2M1[u & 15] * s[i, 2k // 32], W[i, 2k+1] = E2M1[u >> 4] * s[i, (2k+1) // 32].
Every product is taken in float32 (exact: at most 3 significant bits times a power of
two) and rounded once to the output dtype, as DeepSeek's converter and transformers do.

The FP4 path gathers both values of a byte from a (scale byte, packed byte) table, so it
touches each input byte once; memory is the output plus a fixed row-chunk index buffer.
"""

from __future__ import annotations

import functools

import ml_dtypes
import numpy as np

from ..errors import ShapeMismatchError
from ..fp8 import FP8_E4M3
from ..fp8 import dequantize as _dequantize_fp8
from ..fp8 import quantize as _quantize_fp8

E8M0 = np.dtype(ml_dtypes.float8_e8m0fnu)
FP4_E2M1 = np.dtype(ml_dtypes.float4_e2m1fn)
E8M0_NAN = 255
FP4_BLOCK = 32
FP8_BLOCK = (128, 128)
FP4_MAX = 6.0
E4M3_MAX = 448.0
# e2m1 code -> value; bit 3 is the sign
E2M1_VALUES = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6], np.float32)
_ROWS_PER_STEP = 64


def e8m0_to_float32(scale: np.ndarray) -> np.ndarray:
    """2^(b-127) per byte, NaN for 255 (exact in float32, 2^-127 being a subnormal)."""
    return np.asarray(scale).view(E8M0).astype(np.float32)


def fp4_scale_shape(packed_shape: tuple[int, ...]) -> tuple[int, int]:
    """Scale grid of an I8-packed [out, in/2] weight: [out, ceil(in / 32)]."""
    rows, half = packed_shape
    return rows, -(-(2 * half) // FP4_BLOCK)


def is_fp4_pair(weight_dtype: str, weight_shape, scale_shape) -> bool:
    """The FP4 layout is recognised from the tensors, not from the config's expert_dtype."""
    return (weight_dtype == "I8" and len(weight_shape) == 2
            and tuple(scale_shape) == fp4_scale_shape(tuple(weight_shape)))


def _check_fp4(weight: np.ndarray, scale: np.ndarray, name: str) -> None:
    if weight.ndim != 2 or weight.dtype.itemsize != 1 or weight.dtype.kind not in "iu":
        raise ShapeMismatchError(f"tensor '{name}': MXFP4 weight must be 2-D int8, found "
                                 f"{weight.dtype} {list(weight.shape)}")
    want = fp4_scale_shape(weight.shape)
    if tuple(scale.shape) != want:
        raise ShapeMismatchError(f"tensor '{name}': MXFP4 scale must be {list(want)} for packed "
                                 f"weight {list(weight.shape)}, found {list(scale.shape)}")


@functools.cache
def _pair_table(out_dtype: np.dtype) -> np.ndarray:
    """[256 scale bytes * 256 packed bytes, 2] of out_dtype: (low value, high value)."""
    scales = e8m0_to_float32(np.arange(256, dtype=np.uint8))
    byte = np.arange(256)
    pair = np.stack([E2M1_VALUES[byte & 15], E2M1_VALUES[byte >> 4]], axis=-1)  # [256, 2]
    with np.errstate(over="ignore", invalid="ignore"):
        table = scales[:, None, None] * pair[None]  # float32 products, exact or inf / NaN
    return np.ascontiguousarray(table.astype(out_dtype).reshape(256 * 256, 2))


def dequantize_fp4(weight: np.ndarray, scale: np.ndarray, out_dtype=np.float32, *,
                   out: np.ndarray | None = None, name: str = "weight") -> np.ndarray:
    """MXFP4 I8 [out, in/2] + E8M0 [out, in/32] -> out_dtype [out, in]."""
    _check_fp4(weight, scale, name)
    out_dtype = np.dtype(out_dtype)
    rows, half = weight.shape
    if out is None:
        out = np.empty((rows, 2 * half), dtype=out_dtype)
    elif out.shape != (rows, 2 * half) or out.dtype != out_dtype or not out.flags.c_contiguous:
        raise ShapeMismatchError(f"dequantize_fp4: out must be a C-contiguous {out_dtype} array of "
                                 f"shape {[rows, 2 * half]}, found {out.dtype} {list(out.shape)}")
    if out.size == 0:
        return out
    uint = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[out_dtype.itemsize]
    pair_bits = _pair_table(out_dtype).view(uint).copy().view(
        np.dtype((np.void, 2 * out_dtype.itemsize))).reshape(-1)
    out_pairs = out.view(np.dtype((np.void, 2 * out_dtype.itemsize))).reshape(rows, half)
    codes = np.asarray(weight).view(np.uint8)
    scale_bytes = np.asarray(scale).view(np.uint8)
    step = min(_ROWS_PER_STEP, rows)
    index = np.empty((step, half), dtype=np.intp)
    per_scale = FP4_BLOCK // 2  # packed bytes sharing one scale
    for r0 in range(0, rows, step):
        r1 = min(r0 + step, rows)
        idx = index[: r1 - r0]
        # index = scale byte * 256 + packed byte (np.left_shift keeps it in intp)
        np.left_shift(np.repeat(scale_bytes[r0:r1], per_scale, axis=1)[:, :half], 8, out=idx,
                      dtype=np.intp)
        idx += codes[r0:r1]
        np.take(pair_bits, idx, out=out_pairs[r0:r1])
    return out


def dequantize_fp8(weight: np.ndarray, scale: np.ndarray, out_dtype=np.float32, *,
                   out: np.ndarray | None = None) -> np.ndarray:
    """e4m3 weight with one E8M0 scale per 128x128 block (float32 product, one rounding)."""
    return _dequantize_fp8(weight, e8m0_to_float32(scale), FP8_BLOCK, out_dtype, out=out)


def dequantize_pair(weight: np.ndarray, scale: np.ndarray, out_dtype=np.float32, *,
                    name: str = "weight") -> np.ndarray:
    """Either format, told apart by the weight dtype and the scale shape."""
    if weight.dtype.kind in "iu" and weight.dtype.itemsize == 1:
        return dequantize_fp4(weight, scale, out_dtype, name=name)
    return dequantize_fp8(weight, scale, out_dtype)


def _pow2_at_least(x: np.ndarray) -> np.ndarray:
    """Smallest power of two >= x (float32, x > 0), clamped to E8M0's range."""
    e = np.ceil(np.log2(x.astype(np.float64)))
    return np.exp2(np.clip(e, -127, 127)).astype(np.float32)


def quantize_fp8(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float [out, in] -> (e4m3 weight, E8M0 scale [ceil(out/128), ceil(in/128)]).

    Scales are ue8m0: the power of two at or above amax / 448 per block, as V4 ships.
    """
    q, scale = _quantize_fp8(weight, FP8_BLOCK, scale_fmt="ue8m0")
    return q, np.clip(scale, 2.0 ** -127, 2.0 ** 127).astype(E8M0)


def quantize_fp4(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float [out, in] (in even) -> (I8 [out, in/2], E8M0 [out, ceil(in/32)]).

    Per 32 inputs the scale is the power of two at or above amax / 6; the scaled values
    round to nearest-even e2m1 (ml_dtypes' cast). NaN / inf input saturates to +-6 x scale.
    """
    if weight.ndim != 2 or weight.shape[1] % 2:
        raise ShapeMismatchError(f"MXFP4 quantisation needs a 2-D weight with an even number of "
                                 f"columns, found {list(weight.shape)}")
    rows, cols = weight.shape
    blocks = -(-cols // FP4_BLOCK)
    pad = blocks * FP4_BLOCK - cols
    big = np.finfo(np.float32).max
    w = np.nan_to_num(weight.astype(np.float32), nan=0.0, posinf=big, neginf=-big)
    padded = np.pad(w, ((0, 0), (0, pad))).reshape(rows, blocks, FP4_BLOCK)
    amax = np.abs(padded).max(axis=2)
    scale = _pow2_at_least(np.maximum(amax / FP4_MAX, 2.0 ** -127))
    scaled = np.clip(padded / scale[:, :, None], -FP4_MAX, FP4_MAX).reshape(rows, -1)[:, :cols]
    codes = scaled.astype(FP4_E2M1).view(np.uint8)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8).view(np.int8)
    return packed, scale.astype(E8M0)


def fp4_to_fp8(weight: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-pack an MXFP4 expert into FP8 128x128 blocks as DeepSeek's convert.py does.

    Per block the new scale is max(FP4 scales) / 2^6 and each value is multiplied by
    scale / new_scale (a power of two <= 64, so |value| <= 384 < 448). It is lossless when
    a block's FP4 scales span at most 2^15 (no e4m3 underflow); the caller checks that.
    """
    _check_fp4(weight, scale, "weight")
    rows, half = weight.shape
    cols = 2 * half
    values = dequantize_fp4(weight, np.full(scale.shape, 127, np.uint8).view(E8M0))  # 2^0: the codes
    s = e8m0_to_float32(scale)
    nr, nc = -(-rows // FP8_BLOCK[0]), -(-cols // FP8_BLOCK[1])
    q = np.empty((rows, cols), dtype=FP8_E4M3)
    new_scale = np.empty((nr, nc), dtype=np.float32)
    per = FP8_BLOCK[1] // FP4_BLOCK
    for i in range(nr):
        r0, r1 = i * FP8_BLOCK[0], min((i + 1) * FP8_BLOCK[0], rows)
        for j in range(nc):
            c0, c1 = j * FP8_BLOCK[1], min((j + 1) * FP8_BLOCK[1], cols)
            block_scales = s[r0:r1, j * per: j * per + -(-(c1 - c0) // FP4_BLOCK)]
            ns = np.float32(block_scales.max() / 64.0)
            new_scale[i, j] = ns
            factor = np.repeat(block_scales / ns, FP4_BLOCK, axis=1)[:, : c1 - c0]
            q[r0:r1, c0:c1] = (values[r0:r1, c0:c1] * factor).astype(FP8_E4M3)
    return q, new_scale.astype(E8M0)
