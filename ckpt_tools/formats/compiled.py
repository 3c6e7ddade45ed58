"""numba-compiled loops for the formats' hot paths (chosen by `kernels`; NumPy is the oracle).

Every kernel computes the very operations of the NumPy path: the dequantisation gathers
read tables that NumPy built (so their bytes are NumPy's by construction); quantisation
divides in float32 as NumPy does and rounds to e4m3 by the IEEE rule on the bits (round
to nearest, ties to even; checked against ml_dtypes by tests/test_kernels.py). Kernels
are single-threaded (workers are processes), compiled on a machine's first call and cached
on disk (`cache=True`); later processes load the cached machine code (`_numba_load`).
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from ._numba_load import load_cached



def _compiled(**options):
    """numba.njit(nogil=True, cache=True, error_model="numpy", **options).

    error_model="numpy": a float division by zero gives IEEE's inf/NaN as NumPy does,
    without numba's check per division (no kernel divides an integer by zero). Where no
    cache directory is writable (beside this file, then the user's cache directory: numba
    raises RuntimeError when neither is), no disk cache: every process then compiles the
    kernels it calls (seconds), which on a large checkpoint still beats NumPy."""
    def decorate(func):
        try:
            return numba.njit(nogil=True, cache=True, error_model="numpy", **options)(func)
        except RuntimeError:
            return numba.njit(nogil=True, error_model="numpy", **options)(func)
    return decorate


_jit = _compiled()
_U32 = np.uint32
_WORD = 8  # codes read per 64-bit load


def _argument_kind(value) -> tuple | type:
    """What numba's type of an argument depends on, found 10x faster than numba.typeof."""
    if isinstance(value, np.ndarray):
        f = value.flags
        return value.dtype, value.ndim, f.c_contiguous, f.f_contiguous, f.writeable, f.aligned
    return type(value)


def _entry(kernel):
    """`kernel` as Python calls it: each signature's machine code loaded from numba's cache
    the fast way on its first call (`load_cached`), compiled by numba when not cached."""
    seen: set[tuple] = set()

    @functools.wraps(kernel.py_func)
    def call(*args):
        kinds = tuple(map(_argument_kind, args))
        if kinds not in seen:
            load_cached(kernel, args)
            seen.add(kinds)
        return kernel(*args)
    call.dispatcher = kernel
    return call


@_entry
@_jit
def _gather_fp8_bytes(codes, tables, br, bc, out):
    rows, cols = codes.shape
    for r in range(rows):
        row_tables = tables[r // br]
        for jb in range(row_tables.shape[0]):
            table = row_tables[jb]
            for j in range(jb * bc, min(cols, (jb + 1) * bc)):
                out[r, j] = table[codes[r, j]]


@_compiled(inline="always")
def _gather_word(x, table, out, o):
    """out[o + b] = table[byte b of the 64-bit word x], b = 0..7 (unrolled: one load yields
    8 codes, and the loads, not the table reads, bound a loop over bytes)."""
    out[o] = table[x & 0xFF]
    out[o + 1] = table[(x >> 8) & 0xFF]
    out[o + 2] = table[(x >> 16) & 0xFF]
    out[o + 3] = table[(x >> 24) & 0xFF]
    out[o + 4] = table[(x >> 32) & 0xFF]
    out[o + 5] = table[(x >> 40) & 0xFF]
    out[o + 6] = table[(x >> 48) & 0xFF]
    out[o + 7] = table[(x >> 56) & 0xFF]


@_entry
@_jit
def _gather_fp8_words(words, tables, br, words_per_block, out):
    rows, width = words.shape
    for r in range(rows):
        row_tables = tables[r // br]
        row_words, row_out = words[r], out[r]
        for jb in range(row_tables.shape[0]):
            table = row_tables[jb]
            for k in range(jb * words_per_block, min(width, (jb + 1) * words_per_block)):
                _gather_word(row_words[k], table, row_out, k * _WORD)


def gather_fp8(codes: np.ndarray, tables: np.ndarray, br: int, bc: int, out: np.ndarray) -> None:
    """out[i, j] = tables[i // br, j // bc, codes[i, j]] (codes uint8, out the tables' dtype)."""
    rows, cols = codes.shape
    if cols % _WORD == 0 and bc % _WORD == 0:
        _gather_fp8_words(codes.view(np.uint64), tables, br, bc // _WORD, out)
    else:
        _gather_fp8_bytes(codes, tables, br, bc, out)


@_entry
@_jit
def _gather_fp4_bytes(codes, scale_bytes, table, per_scale, out):
    rows, half = codes.shape
    for r in range(rows):
        for k in range(half):
            out[r, k] = table[scale_bytes[r, k // per_scale], codes[r, k]]


@_entry
@_jit
def _gather_fp4_words(words, scale_bytes, table, words_per_scale, out):
    rows, width = words.shape
    for r in range(rows):
        row_words, row_out, row_scales = words[r], out[r], scale_bytes[r]
        for k in range(width):
            _gather_word(row_words[k], table[row_scales[k // words_per_scale]], row_out,
                         k * _WORD)


def gather_fp4(codes: np.ndarray, scale_bytes: np.ndarray, table: np.ndarray, per_scale: int,
               out: np.ndarray) -> None:
    """out[i, k] = table[scale_bytes[i, k // per_scale], codes[i, k]] (a pair of values per
    packed byte)."""
    if codes.shape[1] % _WORD == 0 and per_scale % _WORD == 0:
        _gather_fp4_words(codes.view(np.uint64), scale_bytes, table, per_scale // _WORD, out)
    else:
        _gather_fp4_bytes(codes, scale_bytes, table, per_scale, out)


@_entry
@_jit
def block_amax_bits(bits, br, bc, magnitude, inf, amax_bits):
    """amax_bits[i // br, j // bc] = max over the block of the finite |value|'s bits (0 when
    none): `bits` are F32 (uint32) or BF16 (uint16) bits, `magnitude` and `inf` their |x|
    mask and +inf in the same type. Non-negative floats order as their bits do, and an
    integer max vectorises where a float one with NaN rules does not."""
    rows, cols = bits.shape
    zero = magnitude ^ magnitude
    for r in range(rows):
        row, row_amax = bits[r], amax_bits[r // br]
        for jb in range(row_amax.shape[0]):
            # a slice indexed from 0: no negative-index wraparound, so the loop vectorises
            block = row[jb * bc:min(cols, (jb + 1) * bc)]
            m = row_amax[jb]
            for k in range(block.shape[0]):
                a = block[k] & magnitude
                m = max(m, a if a < inf else zero)
            row_amax[jb] = m


# fastmath without "contract" (no FMA: back - ref is rounded as NumPy rounds it): the sums
# may be reassociated (vectorised); no NaN or inf reaches them (a
# non-finite source value counts apart, and a finite one never quantises to NaN)
@_compiled(fastmath={"reassoc", "nnan", "ninf", "nsz"})
def _tile_errors(tile, tile_bits, codes, decoded, s, n):
    """Round-trip error sums of n values against decoded[codes] * s: (max |err|, sum err^2,
    sum ref^2, non-finite count); each err is |float32(back - ref)| in float64."""
    max_abs, sq_err, sq_ref, nonfinite = 0.0, 0.0, 0.0, 0
    for k in range(n):
        finite = (tile_bits[k] & _U32(0x7FFFFFFF)) < _U32(0x7F800000)
        v = tile[k] if finite else np.float32(0.0)
        err = np.float64(abs(np.float32(decoded[codes[k]] * s - v))) if finite else 0.0
        max_abs = max(max_abs, err)
        sq_err += err * err
        sq_ref += np.float64(v) * np.float64(v)
        nonfinite += 0 if finite else 1
    return max_abs, sq_err, sq_ref, nonfinite


@_entry
@_jit
def quantize_e4m3_bits(bits, scale, br, bc, decoded, q, want_errors):
    """q = e4m3(clip(value / scale, +-448)) per block (NaN stays NaN), from F32 or BF16 bits;
    with `want_errors`, the round-trip sums (max |err|, sum err^2, sum ref^2, non-finite)."""
    rows, cols = bits.shape
    scale_bits = scale.view(np.uint32)
    shift = 32 - 8 * bits.itemsize
    tile_bits = np.empty(bc, np.uint32)
    tile = tile_bits.view(np.float32)
    scaled = np.empty(bc, np.float32)
    scaled_bits = scaled.view(np.uint32)
    lo, hi, to_int = np.float32(-448.0), np.float32(448.0), np.float32(8388608.0)
    max_abs, sq_err, sq_ref, nonfinite = 0.0, 0.0, 0.0, 0
    for r in range(rows):
        row, row_scale, row_q = bits[r], scale[r // br], q[r]
        for jb in range(row_scale.shape[0]):
            s, j0 = row_scale[jb], jb * bc
            n = min(cols, j0 + bc) - j0
            # slices indexed from 0: no negative-index wraparound, so the loops vectorise
            src, dst = row[j0:j0 + n], row_q[j0:j0 + n]
            for k in range(n):  # float32 bits: F32 as they are, BF16 in the top half
                tile_bits[k] = _U32(src[k]) << shift
            if scale_bits[r // br, jb] & _U32(0x7FFFFF) == 0 and s >= np.float32(2.0 ** -126):
                # a power of two (ue8m0): times its exact inverse is exactly the division
                inverse = np.float32(1.0) / s
                for k in range(n):
                    scaled[k] = tile[k] * inverse
            else:
                for k in range(n):
                    scaled[k] = tile[k] / s
            for k in range(n):
                x = scaled[k]
                x = lo if x < lo else x  # NaN compares false: it stays NaN
                x = hi if x > hi else x
                scaled[k] = x
            for k in range(n):
                b = scaled_bits[k]
                a = b & _U32(0x7FFFFFFF)
                # |x| < 2^-6 is an e4m3 subnormal: k * 2^-9, k = |x| * 512 rounded half-even
                x = scaled[k]
                sub = np.float32((x if x >= 0 else -x) * np.float32(512.0) + to_int) - to_int
                # keep 3 of 23 mantissa bits, ties to even; re-bias the exponent 127 -> 7
                normal = ((a + _U32(0x7FFFF) + ((a >> _U32(20)) & _U32(1))) >> _U32(20)) - _U32(960)
                c = _U32(normal) if a >= _U32(0x3C800000) else _U32(sub)
                c = _U32(0x7F) if a > _U32(0x7F800000) else c
                dst[k] = np.uint8(c | ((b >> _U32(24)) & _U32(0x80)))
            if want_errors:
                m, e2, r2, bad = _tile_errors(tile, tile_bits, dst, decoded, s, n)
                max_abs, sq_err, sq_ref, nonfinite = (max(max_abs, m), sq_err + e2, sq_ref + r2,
                                                      nonfinite + bad)
    return max_abs, sq_err, sq_ref, nonfinite



@_entry
@_jit
def fp4_block_amax(bits, block, amax):
    """amax[i, j // block] = max |value| of F32 `bits` over each run of `block` inputs, with
    NaN as 0 and +-inf as the largest float32 (NumPy's nan_to_num before the max)."""
    rows, cols = bits.shape
    for r in range(rows):
        row, row_amax = bits[r], amax[r]
        for b in range(row_amax.shape[0]):
            m = _U32(0)
            for j in range(b * block, min(cols, (b + 1) * block)):
                a = row[j] & _U32(0x7FFFFFFF)
                a = _U32(0x7F7FFFFF) if a == _U32(0x7F800000) else a
                m = max(m, a if a < _U32(0x7F800000) else _U32(0))
            row_amax[b] = m


@_jit
def _e2m1(v, b, inverse):
    """e2m1 code of float32 `v` (bits `b`) * inverse: NaN as 0, +-inf as +-the largest
    float32, clipped to +-6, rounded to nearest, ties to even, over 0, .5, 1, 1.5, 2, 3, 4,
    6. `inverse` is 1 / a power-of-two scale, so the product is exactly NumPy's v / scale."""
    big = np.float32(3.4028234663852886e38)
    nan = v != v
    v = np.float32(0.0) if nan else v
    v = big if v > big else (-big if v < -big else v)
    a = abs(v * inverse)
    a = np.float32(6.0) if a > np.float32(6.0) else a
    mag = (_U32(a > np.float32(0.25)) + _U32(a >= np.float32(0.75)) + _U32(a > np.float32(1.25))
           + _U32(a >= np.float32(1.75)) + _U32(a > np.float32(2.5)) + _U32(a >= np.float32(3.5))
           + _U32(a > np.float32(5.0)))
    # the sign of v / s is v's (s > 0), -0.0 included; NaN became +0
    return mag | (_U32(0) if nan else (b >> _U32(28)) & _U32(8))


@_entry
@_jit
def quantize_e2m1_bits(values, bits, scale, block, packed):
    """packed[i, k] = e2m1 codes of inputs 2k (low nibble) and 2k+1 (high nibble) of float32
    `values` (and their `bits`), each divided by scale[i, input // block], a power of two."""
    rows, cols = values.shape
    codes = np.empty(block, np.uint32)
    for r in range(rows):
        row, row_bits, row_scale, row_out = values[r], bits[r], scale[r], packed[r]
        for b in range(row_scale.shape[0]):
            inverse = np.float32(1.0) / row_scale[b]  # exact: the scale is 2^k, |k| <= 127
            j0 = b * block
            n = min(cols, j0 + block) - j0
            for j in range(n):
                codes[j] = _e2m1(row[j0 + j], row_bits[j0 + j], inverse)
            for k in range(n // 2):
                row_out[j0 // 2 + k] = np.uint8(codes[2 * k] | (codes[2 * k + 1] << _U32(4)))
