"""Block FP8: dequantisation and quantisation (NumPy oracle; compiled kernels when chosen).

Dequantisation is exactly DeepSeek's `weight_dequant`: each element is
float32(w) * scale[i // 128, j // 128], one float32 multiply, partial edge blocks cropped;
a BF16/F16 result rounds that product to nearest-even (ml_dtypes' cast). A block holds at
most 256 distinct codes, so a table of out_dtype(float32(code) * scale) per block (the
very operations of the definition, hence bit-identical to it, NaN codes and subnormals
included) is built with NumPy and gathered from: by `np.take` here, by a compiled loop in
`compiled.gather_fp8`; both read the same table, so their bytes are the same.
Quantisation is the inverse that produced V3's checkpoints: scale = amax / 448 per block
(or the power of two at or above it with `ue8m0`), values saturate at +-448.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from ..io.dtypes import DTYPES
from ..errors import ShapeMismatchError
from . import E4M3_MAX, FP8_BLOCK, block_grid
from .kernels import compiled_for
from .round_trip import RoundTripStats

FP8_E4M3 = DTYPES["F8_E4M3"].numpy
FP8_E5M2 = DTYPES["F8_E5M2"].numpy
BF16 = DTYPES["BF16"].numpy
UINT_OF_SIZE = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_SMALLEST_F32 = np.finfo(np.float32).smallest_subnormal
# Rows gathered per NumPy step: the intp index buffer (rows x cols x 8 bytes) stays small.
_GATHER_ROWS = 32


def check_scale(weight_shape, grid_shape, block=FP8_BLOCK, *, name: str = "weight") -> None:
    """`dequantize`'s argument check (checkpoints are judged by the inventory)."""
    if len(weight_shape) != 2:
        raise ShapeMismatchError(f"tensor '{name}': FP8 weight must be 2-D, found shape "
                                 f"{list(weight_shape)}")
    want = block_grid(tuple(weight_shape), block)
    if tuple(grid_shape) != want:
        raise ShapeMismatchError(f"tensor '{name}': weight scale must be {list(want)} for "
                                 f"weight {list(weight_shape)}, found {list(grid_shape)}")


def output_array(shape: tuple[int, int], out_dtype: np.dtype, out: np.ndarray | None,
                 what: str) -> np.ndarray:
    """`out`, checked to be a C-contiguous array of `shape` and `out_dtype`, or a new one."""
    if out is None:
        return np.empty(shape, dtype=out_dtype)
    if out.shape != shape or out.dtype != out_dtype or not out.flags.c_contiguous:
        raise ShapeMismatchError(f"{what}: out must be a C-contiguous {out_dtype} array of "
                                 f"shape {list(shape)}, found {out.dtype} {list(out.shape)}")
    return out


@functools.cache
def decoded(dtype: np.dtype) -> np.ndarray:
    """float32 value of each of the 256 codes of a 1-byte float dtype (exact, NaN included)."""
    return np.arange(256, dtype=np.uint8).view(dtype).astype(np.float32)


def code_tables(dtype: np.dtype, scale: np.ndarray, out_dtype: np.dtype) -> np.ndarray:
    """[*scale.shape, 256] unsigned bits of out_dtype(float32(code) * scale)."""
    # a product beyond the float32 range is inf by definition, not a warning
    with np.errstate(over="ignore"):
        table = (decoded(dtype) * scale[..., None]).astype(out_dtype)
    return table.view(UINT_OF_SIZE[out_dtype.itemsize])


def dequantize(weight: np.ndarray, scale_inv: np.ndarray, block: tuple[int, int] = FP8_BLOCK,
               out_dtype=np.float32, *, out: np.ndarray | None = None) -> np.ndarray:
    """float32(weight) * scale_inv per block, cast to `out_dtype` (RNE for BF16).

    Memory: the output, the per-block tables (1/64 of the output) and, on NumPy, a
    32-row index buffer.

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
    out = output_array(weight.shape, out_dtype, out, "dequantize")
    if out.size == 0:
        return out
    tables = code_tables(weight.dtype, np.asarray(scale_inv, dtype=np.float32), out_dtype)
    codes = np.ascontiguousarray(weight).view(np.uint8)
    bits = out.view(tables.dtype)
    kernels = compiled_for(out.size)
    if kernels is not None:
        kernels.gather_fp8(codes, tables, block[0], block[1], bits)
        return out
    rows, cols = weight.shape
    table_base = (np.arange(cols) // block[1] * 256).astype(np.intp)  # column block j -> j*256
    index = np.empty((min(_GATHER_ROWS, rows), cols), dtype=np.intp)
    for i in range(tables.shape[0]):
        table = tables[i].reshape(-1)
        for r0 in range(i * block[0], min((i + 1) * block[0], rows), _GATHER_ROWS):
            r1 = min(r0 + _GATHER_ROWS, (i + 1) * block[0], rows)
            idx = index[:r1 - r0]
            np.add(codes[r0:r1], table_base, out=idx)
            np.take(table, idx, out=bits[r0:r1], mode="clip")
    return out


def dequantize_rows(read_rows: Callable[[int, int], np.ndarray],
                    read_scale_rows: Callable[[int, int], np.ndarray], rows: int, start: int,
                    stop: int, block: tuple[int, int] = FP8_BLOCK) -> np.ndarray:
    """Rows [start, stop) of a dequantised FP8 weight of `rows` rows, in float32, read through
    `read_rows(lo, hi)` and `read_scale_rows(first, last)` (any layout's readers). Whole row
    blocks are read, so each scale row meets exactly the rows it was computed on."""
    first, last = start // block[0], -(-stop // block[0])
    lo, hi = first * block[0], min(last * block[0], rows)
    values = dequantize(read_rows(lo, hi), read_scale_rows(first, last), block)
    return values if (lo, hi) == (start, stop) else values[start - lo:stop - lo].copy()


def block_scales(amax: np.ndarray, scale_fmt: str | None) -> np.ndarray:
    """float32 scale per block from its largest finite |value|: amax / 448 (1 for an all-zero
    block), or with `ue8m0` the power of two at or above it."""
    if scale_fmt == "ue8m0":
        return np.exp2(np.ceil(np.log2(np.maximum(amax, 1e-4) / E4M3_MAX))).astype(np.float32)
    s = np.where(amax > 0, amax / np.float32(E4M3_MAX), np.float32(1.0)).astype(np.float32)
    # amax below 448 x the smallest float32 would give a scale of 0, and 0 / 0 = NaN
    return np.maximum(s, _SMALLEST_F32)


def _block_amax(w: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """[row blocks, column blocks] of the largest finite |value| (0 when none)."""
    rows, cols = w.shape
    br, bc = block
    nr, nc = block_grid(w.shape, block)
    amax = np.empty((nr, nc), np.float32)
    for i in range(nr):
        r0, r1 = i * br, min((i + 1) * br, rows)
        finite = np.where(np.isfinite(w[r0:r1]), np.abs(w[r0:r1]), np.float32(0.0))
        finite = np.pad(finite, ((0, 0), (0, nc * bc - cols)))
        amax[i] = finite.reshape(r1 - r0, nc, bc).max(axis=(0, 2))
    return amax


def quantize(weight: np.ndarray, block: tuple[int, int] = FP8_BLOCK, *,
             scale_fmt: str | None = None, errors: RoundTripStats | None = None,
             out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Block-quantise a 2-D float weight to (float8_e4m3fn weight, float32 scale).

    NaN stays NaN; +-inf and values beyond the range saturate to +-448 x scale; finite
    input never becomes NaN. `errors`, when given, accumulates the round-trip error of the
    result against the weight (what `dequantize(q, s)` in float32 gives back). `out`, a
    C-contiguous float8_e4m3fn array of the weight's shape, receives the codes (a
    streaming job reuses one buffer for every step).
    """
    if weight.ndim != 2:
        raise ShapeMismatchError(f"FP8 quantisation needs a 2-D weight, found {list(weight.shape)}")
    rows, cols = weight.shape
    br, bc = block
    q = output_array((rows, cols), np.dtype(FP8_E4M3), out, "quantize")
    kernels = compiled_for(weight.size)
    if kernels is not None:
        # the kernels read F32 or BF16 bits (BF16 widens exactly), other floats as F32
        w = np.ascontiguousarray(weight, dtype=BF16 if weight.dtype == BF16 else np.float32)
        bits = w.view(np.uint16 if w.dtype == BF16 else np.uint32)
        scale = np.empty(block_grid(w.shape, block), np.float32)
        if scale_fmt == "ue8m0":  # NumPy's log2 / exp2 make the scales: amax first
            amax_bits = np.empty(scale.shape, np.uint32)
            kernels.block_amax_bits(bits, br, bc, amax_bits)
            scale = block_scales(amax_bits.view(np.float32), scale_fmt)
        sums = kernels.quantize_e4m3_bits(bits, br, bc, scale, scale_fmt != "ue8m0",
                                          q.view(np.uint8), errors is not None)
        if errors is not None:
            errors.add_sums(*sums)
        return q, scale
    w = np.ascontiguousarray(weight, dtype=np.float32)
    scale = block_scales(_block_amax(w, block), scale_fmt)
    for i in range(scale.shape[0]):
        r0, r1 = i * br, min((i + 1) * br, rows)
        scaled = w[r0:r1] / np.repeat(scale[i], bc)[:cols]
        q[r0:r1] = np.clip(scaled, -E4M3_MAX, E4M3_MAX).astype(FP8_E4M3)
    if errors is not None:
        errors.add(w, dequantize(q, scale, block))
    return q, scale
