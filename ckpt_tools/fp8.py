"""DeepSeek's block FP8: e4m3 weights, one float32 `weight_scale_inv` per 128x128 block.

Dequantisation is exactly DeepSeek's `weight_dequant`: each element is
float32(w) * scale_inv[i // 128, j // 128], one float32 multiply, partial edge blocks
cropped; the BF16 result rounds that product to nearest-even (ml_dtypes' cast).
Quantisation is the inverse used to produce V3's checkpoints: scale_inv = amax / 448 per
block (or the power of two at or above it with `ue8m0`), values saturate at +-448.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import ml_dtypes
import numpy as np

from .errors import ShapeMismatchError
from .tensor_plan import DEFAULT_BLOCK, scale_shape

FP8_E4M3 = np.dtype(ml_dtypes.float8_e4m3fn)
FP8_E5M2 = np.dtype(ml_dtypes.float8_e5m2)
BF16 = np.dtype(ml_dtypes.bfloat16)
E4M3_MAX = 448.0
BLOCK = DEFAULT_BLOCK
# config.json's `quantization_config` of V3's release (V3.1 adds "scale_fmt": "ue8m0").
FP8_QUANTIZATION_CONFIG = {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "weight_block_size": [128, 128],
}


def check_scale(weight_shape, grid_shape, block=BLOCK, *, name: str = "weight") -> None:
    """`dequantize`'s argument check (checkpoints are judged by the inventory)."""
    if len(weight_shape) != 2:
        raise ShapeMismatchError(f"tensor '{name}': FP8 weight must be 2-D, found shape "
                                 f"{list(weight_shape)}")
    want = scale_shape(tuple(weight_shape), block)
    if tuple(grid_shape) != want:
        raise ShapeMismatchError(f"tensor '{name}': weight_scale_inv must be {list(want)} for "
                                 f"weight {list(weight_shape)}, found {list(grid_shape)}")


# Rows gathered per step: the int index buffer (rows x cols x 8 bytes) stays cache-sized.
_GATHER_ROWS = 32
_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}
_SMALLEST_F32 = np.finfo(np.float32).smallest_subnormal


@functools.cache
def _decoded(dtype: np.dtype) -> np.ndarray:
    """float32 value of each of the 256 codes of a 1-byte float dtype (exact, NaN included)."""
    return np.arange(256, dtype=np.uint8).view(dtype).astype(np.float32)


def dequantize(weight: np.ndarray, scale_inv: np.ndarray, block: tuple[int, int] = BLOCK,
               out_dtype=np.float32, *, out: np.ndarray | None = None) -> np.ndarray:
    """float32(weight) * scale_inv per block, cast to `out_dtype` (RNE for BF16).

    A block holds at most 256 distinct codes, so each row of blocks builds a table of
    out_dtype(float32(code) * scale) for its scales (the very operations of the definition,
    hence bit-identical to it, NaN codes and subnormals included) and gathers from it.
    Memory: the output plus a 32-row index buffer.

    Args:
        weight: 2-D FP8 array (float8_e4m3fn or float8_e5m2), any row count.
        scale_inv: float32 [ceil(rows / block[0]), ceil(cols / block[1])].
        block: rows x columns one scale covers.
        out_dtype: float32, bfloat16 (ml_dtypes) or another float dtype.
        out: optional C-contiguous array of the output's shape and dtype to fill.

    Returns:
        The dequantised array (`out` when given).

    Raises:
        ShapeMismatchError: weight not 2-D, not FP8, or a scale grid of the wrong shape.
    """
    check_scale(weight.shape, scale_inv.shape, block)
    if weight.dtype.itemsize != 1 or weight.dtype not in (FP8_E4M3, FP8_E5M2):
        raise ShapeMismatchError(f"dequantize needs an FP8 weight, found dtype {weight.dtype}")
    out_dtype = np.dtype(out_dtype)
    rows, cols = weight.shape
    if out is None:
        out = np.empty((rows, cols), dtype=out_dtype)
    elif out.shape != (rows, cols) or out.dtype != out_dtype or not out.flags.c_contiguous:
        raise ShapeMismatchError(f"dequantize: out must be a C-contiguous {out_dtype} array "
                                 f"of shape {[rows, cols]}, found {out.dtype} {list(out.shape)}")
    if out.size == 0:
        return out
    br, bc = block
    codes = weight.view(np.uint8)
    bits = out.view(_UINT[out_dtype.itemsize])
    decoded = _decoded(weight.dtype)
    scale = np.asarray(scale_inv, dtype=np.float32)
    table_base = (np.arange(cols) // bc * 256).astype(np.intp)  # [cols]: column block j -> j*256
    index = np.empty((min(_GATHER_ROWS, rows), cols), dtype=np.intp)
    for i in range(scale.shape[0]):
        # table[j * 256 + code] = out_dtype(float32(code) * scale[i, j]); a product beyond
        # the float32 range is inf by definition, not a warning
        with np.errstate(over="ignore"):
            table = (decoded[None, :] * scale[i][:, None]).astype(out_dtype)
        table = table.view(bits.dtype).reshape(-1)
        for r0 in range(i * br, min((i + 1) * br, rows), _GATHER_ROWS):
            r1 = min(r0 + _GATHER_ROWS, (i + 1) * br, rows)
            idx = index[:r1 - r0]
            np.add(codes[r0:r1], table_base, out=idx)
            np.take(table, idx, out=bits[r0:r1], mode="clip")
    return out


def dequantize_rows(read_rows: Callable[[int, int], np.ndarray],
                    read_scale_rows: Callable[[int, int], np.ndarray], rows: int, start: int,
                    stop: int, block: tuple[int, int] = BLOCK) -> np.ndarray:
    """Rows [start, stop) of a dequantised FP8 weight of `rows` rows, in float32, read through
    `read_rows(lo, hi)` and `read_scale_rows(first, last)` (any layout's readers). Whole row
    blocks are read, so each scale row meets exactly the rows it was computed on."""
    first, last = start // block[0], -(-stop // block[0])
    lo, hi = first * block[0], min(last * block[0], rows)
    values = dequantize(read_rows(lo, hi), read_scale_rows(first, last), block)
    return values if (lo, hi) == (start, stop) else values[start - lo:stop - lo].copy()


def quantize(weight: np.ndarray, block: tuple[int, int] = BLOCK, *,
             scale_fmt: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Block-quantise a 2-D float weight to (float8_e4m3fn weight, float32 scale_inv).

    NaN stays NaN; +-inf and values beyond the range saturate to +-448 x scale; finite
    input never becomes NaN.
    """
    if weight.ndim != 2:
        raise ShapeMismatchError(f"FP8 quantisation needs a 2-D weight, found {list(weight.shape)}")
    rows, cols = weight.shape
    br, bc = block
    nr, nc = scale_shape(weight.shape, block)
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
            # amax below 448 x the smallest float32 would give a scale of 0, and 0 / 0 = NaN
            s = np.maximum(s, _SMALLEST_F32)
        scale_inv[i] = s
        scaled = w / np.repeat(s, bc)[:cols]
        q[r0:r1] = np.clip(scaled, -E4M3_MAX, E4M3_MAX).astype(FP8_E4M3)
    return q, scale_inv
