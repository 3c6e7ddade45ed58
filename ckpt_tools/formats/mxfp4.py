"""MXFP4 (DeepSeek-V4's routed experts) and FP8 blocks with E8M0 scales (its dense weights).

MXFP4 expert weight, I8 [out, in/2]: byte u holds two e2m1 codes along the input axis,
low nibble = even element, high nibble = odd element; one E8M0 scale per 32 inputs:
W[i, 2k] = E2M1[u & 15] * s[i, 2k // 32], W[i, 2k+1] = E2M1[u >> 4] * s[i, (2k+1) // 32].
Every product is taken in float32 (exact: at most 3 significant bits times a power of
two) and rounded once to the output dtype, as DeepSeek's converter and transformers do.

Dequantisation gathers both values of a byte from a (scale byte, packed byte) table of
output pairs built with NumPy, so it touches each input byte once; `np.take` over a
row-chunk index, or the compiled `gather_fp4` over the same table (same bytes).
"""

from __future__ import annotations

import functools

import ml_dtypes
import numpy as np

from ..errors import ShapeMismatchError
from . import E2M1_VALUES, FP4_BLOCK, FP4_MAX, FP8_BLOCK, fp4_scale_shape
from .e8m0 import E8M0, e8m0_to_float32, pow2_at_least, to_e8m0
from .fp8_block import FP8_E4M3, UINT_OF_SIZE, output_array
from .fp8_block import dequantize as dequantize_fp8_f32_scales
from .fp8_block import quantize as quantize_fp8_f32_scales
from .kernels import compiled_for
from .round_trip import RoundTripStats

FP4_E2M1 = np.dtype(ml_dtypes.float4_e2m1fn)
E2M1 = np.array(E2M1_VALUES, np.float32)
_ROWS_PER_STEP = 64


def _check_fp4(weight: np.ndarray, scale: np.ndarray, name: str) -> None:
    if weight.ndim != 2 or weight.dtype.itemsize != 1 or weight.dtype.kind not in "iu":
        raise ShapeMismatchError(f"tensor '{name}': MXFP4 weight must be 2-D int8, found "
                                 f"{weight.dtype} {list(weight.shape)}")
    want = fp4_scale_shape(weight.shape)
    if tuple(scale.shape) != want:
        raise ShapeMismatchError(f"tensor '{name}': MXFP4 scale must be {list(want)} for packed "
                                 f"weight {list(weight.shape)}, found {list(scale.shape)}")


@functools.cache
def pair_table(out_dtype: np.dtype) -> np.ndarray:
    """[256 scale bytes, 256 packed bytes] of (low value, high value) bits, as one unsigned
    integer of twice out_dtype's size per pair (little-endian: low value first)."""
    scales = e8m0_to_float32(np.arange(256, dtype=np.uint8))
    byte = np.arange(256)
    pair = np.stack([E2M1[byte & 15], E2M1[byte >> 4]], axis=-1)  # [256, 2]
    with np.errstate(over="ignore", invalid="ignore"):  # products exact, or inf / NaN
        values = np.ascontiguousarray((scales[:, None, None] * pair[None]).astype(out_dtype))
    if 2 * out_dtype.itemsize in UINT_OF_SIZE:
        return values.view(UINT_OF_SIZE[2 * out_dtype.itemsize]).reshape(256, 256)
    return values.view(np.dtype((np.void, 2 * out_dtype.itemsize))).reshape(256, 256)


def dequantize_fp4(weight: np.ndarray, scale: np.ndarray, out_dtype=np.float32, *,
                   out: np.ndarray | None = None, name: str = "weight") -> np.ndarray:
    """MXFP4 I8 [out, in/2] + E8M0 [out, in/32] -> out_dtype [out, in]."""
    _check_fp4(weight, scale, name)
    out_dtype = np.dtype(out_dtype)
    rows, half = weight.shape
    out = output_array((rows, 2 * half), out_dtype, out, "dequantize_fp4")
    if out.size == 0:
        return out
    table = pair_table(out_dtype)
    out_pairs = out.view(table.dtype).reshape(rows, half)
    codes = np.ascontiguousarray(weight).view(np.uint8)
    scale_bytes = np.ascontiguousarray(scale).view(np.uint8)
    kernels = compiled_for(out.size)
    if kernels is not None and table.dtype.kind == "u":
        kernels.gather_fp4(codes, scale_bytes, table, FP4_BLOCK // 2, out_pairs)
        return out
    flat = table.reshape(-1)
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
        np.take(flat, idx, out=out_pairs[r0:r1])
    return out


def dequantize_fp8(weight: np.ndarray, scale: np.ndarray, out_dtype=np.float32, *,
                   out: np.ndarray | None = None) -> np.ndarray:
    """e4m3 weight with one E8M0 scale per 128x128 block (float32 product, one rounding)."""
    return dequantize_fp8_f32_scales(weight, e8m0_to_float32(scale), FP8_BLOCK, out_dtype,
                                     out=out)


def dequantize_pair(weight: np.ndarray, scale: np.ndarray, out_dtype=np.float32, *,
                    name: str = "weight") -> np.ndarray:
    """Either format, told apart by the weight dtype and the scale shape."""
    if weight.dtype.kind in "iu" and weight.dtype.itemsize == 1:
        return dequantize_fp4(weight, scale, out_dtype, name=name)
    return dequantize_fp8(weight, scale, out_dtype)


def quantize_fp8(weight: np.ndarray, *, errors: RoundTripStats | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Float [out, in] -> (e4m3 weight, E8M0 scale [ceil(out/128), ceil(in/128)]).

    Scales are ue8m0: the power of two at or above amax / 448 per block, as V4 ships.
    """
    q, scale = quantize_fp8_f32_scales(weight, FP8_BLOCK, scale_fmt="ue8m0", errors=errors)
    return q, to_e8m0(scale)


def quantize_fp4(weight: np.ndarray, *, errors: RoundTripStats | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Float [out, in] (in even) -> (I8 [out, in/2], E8M0 [out, ceil(in/32)]).

    Per 32 inputs the scale is the power of two at or above amax / 6; the scaled values
    round to nearest-even e2m1 (ml_dtypes' cast). NaN / inf input saturates to +-6 x scale.
    `errors` accumulates the round-trip error against the float32 weight.
    """
    if weight.ndim != 2 or weight.shape[1] % 2:
        raise ShapeMismatchError(f"MXFP4 quantisation needs a 2-D weight with an even number of "
                                 f"columns, found {list(weight.shape)}")
    rows, cols = weight.shape
    ref = np.ascontiguousarray(weight, dtype=np.float32)
    kernels = compiled_for(ref.size)
    if kernels is not None:
        bits = ref.view(np.uint32)
        amax_bits = np.empty(fp4_scale_shape((rows, cols // 2)), np.uint32)
        kernels.fp4_block_amax(bits, FP4_BLOCK, amax_bits)
        scale = pow2_at_least(np.maximum(amax_bits.view(np.float32) / FP4_MAX, 2.0 ** -127))
        packed = np.empty((rows, cols // 2), np.uint8)
        kernels.quantize_e2m1_bits(ref, bits, scale, FP4_BLOCK, packed)
        return _packed_result(ref, packed.view(np.int8), scale.astype(E8M0), errors)
    blocks = -(-cols // FP4_BLOCK)
    pad = blocks * FP4_BLOCK - cols
    big = np.finfo(np.float32).max
    w = np.nan_to_num(ref, nan=0.0, posinf=big, neginf=-big)
    padded = np.pad(w, ((0, 0), (0, pad))).reshape(rows, blocks, FP4_BLOCK)
    amax = np.abs(padded).max(axis=2)
    scale = pow2_at_least(np.maximum(amax / FP4_MAX, 2.0 ** -127))
    scaled = np.clip(padded / scale[:, :, None], -FP4_MAX, FP4_MAX).reshape(rows, -1)[:, :cols]
    codes = scaled.astype(FP4_E2M1).view(np.uint8)
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8).view(np.int8)
    return _packed_result(ref, packed, scale.astype(E8M0), errors)


def _packed_result(ref: np.ndarray, packed: np.ndarray, scale: np.ndarray,
                   errors: RoundTripStats | None) -> tuple[np.ndarray, np.ndarray]:
    if errors is not None:
        errors.add(ref, dequantize_fp4(packed, scale))
    return packed, scale


def fp4_to_fp8(weight: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-pack an MXFP4 expert into FP8 128x128 blocks as DeepSeek's convert.py does.

    Per block the new scale is max(FP4 scales) / 2^6 and each value is multiplied by
    scale / new_scale (a power of two <= 64, so |value| <= 384 < 448). It is lossless when
    a block's FP4 scales span at most 2^15 (no e4m3 underflow); the caller checks that.
    """
    _check_fp4(weight, scale, "weight")
    rows, half = weight.shape
    cols = 2 * half
    # 2^0: the codes
    values = dequantize_fp4(weight, np.full(scale.shape, 127, np.uint8).view(E8M0))
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


def decode_rows(rows, scale_rows, dtype: str, start: int, stop: int, total: int,
                name: str) -> np.ndarray:
    """Rows [start, stop) of a stored tensor as float32. `rows(a, b)` reads its stored rows,
    `scale_rows(a, b)` its scale's rows (None: not quantised); `total` is its row count.
    MXFP4 (I8) rows come with their own scale rows; FP8 is read in whole 128-row blocks,
    so each scale row meets the rows it was computed on."""
    if scale_rows is None:
        return rows(start, stop).astype(np.float32)
    if dtype == "I8":  # MXFP4, decoded a bounded number of rows at a time
        return dequantize_fp4(rows(start, stop), scale_rows(start, stop), name=name)
    block_rows = FP8_BLOCK[0]
    first, last = start // block_rows, -(-stop // block_rows)
    r0, r1 = first * block_rows, min(last * block_rows, total)
    weight, scales = rows(r0, r1), scale_rows(first, last)
    if scales.dtype == E8M0:
        values = dequantize_fp8(weight, scales)
    else:  # float scales (weight_scale_inv)
        values = dequantize_fp8_f32_scales(weight, scales.astype(np.float32), FP8_BLOCK)
    return values if (r0, r1) == (start, stop) else values[start - r0:stop - r0].copy()
