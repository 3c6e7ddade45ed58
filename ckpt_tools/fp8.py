"""DeepSeek's block FP8: e4m3 weights, one float32 `weight_scale_inv` per 128x128 block.

Dequantisation is exactly DeepSeek's `weight_dequant`: each element is
float32(w) * scale_inv[i // 128, j // 128], one float32 multiply, partial edge blocks
cropped; the BF16 result rounds that product to nearest-even (ml_dtypes' cast).
Quantisation is the inverse used to produce V3's checkpoints: scale_inv = amax / 448 per
block (or the power of two at or above it with `ue8m0`), values saturate at +-448.
"""

from __future__ import annotations

import numpy as np
import ml_dtypes

from .errors import ShapeMismatchError

FP8_E4M3 = np.dtype(ml_dtypes.float8_e4m3fn)
BF16 = np.dtype(ml_dtypes.bfloat16)
E4M3_MAX = 448.0
BLOCK = (128, 128)


def expected_scale_shape(shape: tuple[int, ...], block: tuple[int, int] = BLOCK) -> tuple[int, int]:
    return (-(-shape[0] // block[0]), -(-shape[1] // block[1]))


def check_scale(weight_shape, scale_shape, block=BLOCK, *, name: str = "weight") -> None:
    if len(weight_shape) != 2:
        raise ShapeMismatchError(f"tensor '{name}': FP8 weight must be 2-D, found shape "
                                 f"{list(weight_shape)}")
    want = expected_scale_shape(tuple(weight_shape), block)
    if tuple(scale_shape) != want:
        raise ShapeMismatchError(f"tensor '{name}': weight_scale_inv must be {list(want)} for "
                                 f"weight {list(weight_shape)}, found {list(scale_shape)}")


def dequantize(weight: np.ndarray, scale_inv: np.ndarray, block: tuple[int, int] = BLOCK,
               out_dtype=np.float32) -> np.ndarray:
    """float32(weight) * scale_inv per block, cast to `out_dtype` (RNE for BF16).

    Works one row-block at a time, so the float32 temporary is at most 128 rows.
    """
    check_scale(weight.shape, scale_inv.shape, block)
    rows, cols = weight.shape
    br, bc = block
    scale = np.asarray(scale_inv, dtype=np.float32)
    out = np.empty((rows, cols), dtype=out_dtype)
    for i in range(scale.shape[0]):
        r0, r1 = i * br, min((i + 1) * br, rows)
        row_scale = np.repeat(scale[i], bc)[:cols]  # [cols]
        product = weight[r0:r1].astype(np.float32) * row_scale  # one float32 rounding
        out[r0:r1] = product if out_dtype == np.float32 else product.astype(out_dtype)
    return out


def quantize(weight: np.ndarray, block: tuple[int, int] = BLOCK, *,
             scale_fmt: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Block-quantise a 2-D float weight to (float8_e4m3fn weight, float32 scale_inv).

    NaN stays NaN; +-inf and values beyond the range saturate to +-448 x scale.
    """
    if weight.ndim != 2:
        raise ShapeMismatchError(f"FP8 quantisation needs a 2-D weight, found {list(weight.shape)}")
    rows, cols = weight.shape
    br, bc = block
    nr, nc = expected_scale_shape(weight.shape, block)
    scale_inv = np.empty((nr, nc), dtype=np.float32)
    q = np.empty((rows, cols), dtype=FP8_E4M3)
    for i in range(nr):
        r0, r1 = i * br, min((i + 1) * br, rows)
        w = weight[r0:r1].astype(np.float32)
        pad = nc * bc - cols
        finite = np.where(np.isfinite(w), np.abs(w), 0.0)
        if pad:
            finite = np.pad(finite, ((0, 0), (0, pad)))
        amax = finite.reshape(r1 - r0, nc, bc).max(axis=(0, 2))  # [nc]
        if scale_fmt == "ue8m0":
            s = np.exp2(np.ceil(np.log2(np.maximum(amax, 1e-4) / E4M3_MAX))).astype(np.float32)
        else:
            s = np.where(amax > 0, amax / np.float32(E4M3_MAX), np.float32(1.0)).astype(np.float32)
        scale_inv[i] = s
        scaled = w / np.repeat(s, bc)[:cols]
        q[r0:r1] = np.clip(scaled, -E4M3_MAX, E4M3_MAX).astype(FP8_E4M3)
    return q, scale_inv
