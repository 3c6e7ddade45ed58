"""numba-compiled loops for the formats' hot paths (chosen by `kernels`; NumPy is the oracle).

Every kernel computes the very operations of the NumPy path: the dequantisation gathers
read tables that NumPy built (so their bytes are NumPy's by construction); quantisation
divides in float32 as NumPy does and rounds to e4m3 half-even with the float adder
(`_e4m3`: equal to ml_dtypes' cast for every one of the 2^32 float32 values, `python
bench/e4m3_rounding.py`; tests/test_kernels.py checks ties, neighbours and whole blocks). The
quantisation loops work on float32 bits in 32-bit lanes (`_f32_bits` / `_bits_f32` are
bitcasts), which LLVM vectorises 8 to an AVX2 register. Kernels
are single-threaded (workers are processes), compiled on a machine's first call and cached
on disk (`cache=True`); later processes load the cached machine code (`_numba_load`).
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from llvmlite import ir as llvm_ir
from numba.core import types
from numba.extending import intrinsic

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


@intrinsic
def _f32_bits(typingctx, value):
    """The uint32 bits of a float32 (a bitcast: vectorises, where a view of an array
    makes a round trip through memory)."""
    if value == types.float32:
        return types.uint32(value), lambda context, builder, sig, args: builder.bitcast(
            args[0], llvm_ir.IntType(32))
    return None


@intrinsic
def _bits_f32(typingctx, bits):
    """The float32 whose bits are the low 32 bits of an integer; BF16 bits (uint16) are
    the top half of their float32's (the exact widening)."""
    if isinstance(bits, types.Integer):
        def codegen(context, builder, sig, args):
            value, i32 = args[0], llvm_ir.IntType(32)
            if bits.bitwidth > 32:
                value = builder.trunc(value, i32)
            elif bits.bitwidth == 16:
                value = builder.shl(builder.zext(value, i32), i32(16))
            elif bits.bitwidth < 32:
                value = builder.zext(value, i32)
            return builder.bitcast(value, llvm_ir.FloatType())
        return types.float32(bits), codegen
    return None


# numba widens integer arithmetic to 64 bits: each step below is cast back to uint32 so
# that LLVM keeps 8 values per AVX2 register.
@_compiled(inline="always")
def _e4m3(x):
    """e4m3fn code of float32 `x`, as ml_dtypes casts clip(x, -448, 448): round to nearest,
    ties to even; NaN -> 0x7F (sign kept).

    The float adder rounds: |x| (clipped to 448, at least 2^-6's exponent: below it e4m3
    is subnormal, k * 2^-9) plus C = 2^(exponent + 20), whose float32 step is exactly
    e4m3's step at that exponent, is C + (|x| rounded half-even to a multiple of that
    step). Its low bits count those steps: with the exponent's code it is the code (mod
    256: the carry into the next binade and the subnormals come out right)."""
    return _e4m3_rounded(x)[0]


@_compiled(inline="always")
def _e4m3_rounded(x):
    """(`_e4m3(x)`, the float32 value of that code: what dequantisation multiplies)."""
    b = _f32_bits(x)
    a = min(_U32(b & _U32(0x7FFFFFFF)), _U32(0x43E00000))  # NaN too: it is chosen below
    exponent = max(_U32(a & _U32(0x7F800000)), _U32(0x3C800000))
    c = _bits_f32(_U32(exponent + _U32(20 << 23)))
    total = _bits_f32(a) + c
    steps = _f32_bits(total)
    code = _U32(_U32(steps + _U32(exponent >> _U32(20))) + _U32(56))  # 56 = -968 mod 256
    code = _U32(0x7F) if _U32(b & _U32(0x7FFFFFFF)) > _U32(0x7F800000) else code
    sign = _U32(b & _U32(0x80000000))
    value = _bits_f32(_U32(_f32_bits(total - c) | sign))  # exact: both are multiples of the step
    return np.uint8(_U32(code | _U32(sign >> _U32(24)))), value


# fastmath without "contract" (no FMA: each product is rounded as NumPy rounds it): the
# sums may be reassociated (vectorised). The largest error is an integer max on float32
# bits (non-negative floats order as their bits), so an inf error is no special case.
@_compiled(fastmath={"reassoc", "nsz"})
def _row_errors(src, rounded, s):
    """Round-trip error sums of one row, whose e4m3 values are `rounded`, against
    float32(rounded) * s (dequantize's product): (max |err| bits, sum err^2, sum ref^2,
    non-finite count), each err |float32(back - ref)| in float64, over the finite
    reference values."""
    max_bits, sq_err, sq_ref, nonfinite = _U32(0), 0.0, 0.0, _U32(0)
    for k in range(src.shape[0]):
        ref = _bits_f32(src[k])
        finite = _U32(_f32_bits(ref) & _U32(0x7FFFFFFF)) < _U32(0x7F800000)
        ref = ref if finite else np.float32(0.0)
        back = rounded[k] * s
        err = _U32(_f32_bits(back - ref) & _U32(0x7FFFFFFF)) if finite else _U32(0)
        max_bits = max(max_bits, err)
        wide = np.float64(_bits_f32(err))
        sq_err += wide * wide
        sq_ref += np.float64(ref) * np.float64(ref)
        nonfinite = _U32(nonfinite + (_U32(0) if finite else _U32(1)))
    return max_bits, sq_err, sq_ref, nonfinite


@_compiled(inline="always")
def _finite_amax_bits(rows, j0, n):
    """The largest finite |value|'s float32 bits over columns [j0, j0 + n) of `rows` (0
    when none): non-negative floats order as their bits, and an integer max vectorises
    where a float one with NaN rules does not."""
    m = _U32(0)
    for r in range(rows.shape[0]):
        block = rows[r, j0:j0 + n]  # indexed from 0: the loop vectorises
        for k in range(n):
            a = _U32(_f32_bits(_bits_f32(block[k])) & _U32(0x7FFFFFFF))
            m = max(m, a if a < _U32(0x7F800000) else _U32(0))
    return m


@_entry
@_jit
def block_amax_bits(bits, br, bc, amax_bits):
    """amax_bits[i, j] = the float32 bits of block (i, j)'s largest finite |value| (0 when
    none), from F32 (uint32) or BF16 (uint16) `bits`: the amax ue8m0 scales are made from
    (quantize_e4m3_bits finds the float scales' amax itself)."""
    rows = bits.shape[0]
    for i in range(amax_bits.shape[0]):
        block_rows = bits[i * br:min(rows, (i + 1) * br)]
        for jb in range(amax_bits.shape[1]):
            j0 = jb * bc
            amax_bits[i, jb] = _finite_amax_bits(block_rows, j0, min(bits.shape[1], j0 + bc) - j0)


@_entry
@_jit
def quantize_e4m3_bits(bits, br, bc, scale, scale_from_amax, q, want_errors):
    """q = e4m3(clip(value / scale, +-448)) per br x bc block, from F32 (uint32) or BF16
    (uint16) `bits`. With `scale_from_amax` each block's F32 scale is computed here, while
    the block is in cache, and written to `scale` (block_scales' float rule: amax / 448, 1
    for a block with no finite non-zero value, at least the smallest float32); otherwise
    `scale` is read. With `want_errors`, returns the round-trip sums (max |err|, sum
    err^2, sum ref^2, non-finite)."""
    rows, cols = bits.shape
    rounded = np.empty(bc, np.float32)  # one row of a block's e4m3 values, for the errors
    max_bits, sq_err, sq_ref, nonfinite = _U32(0), 0.0, 0.0, 0
    for i in range(scale.shape[0]):
        block_rows = bits[i * br:min(rows, (i + 1) * br)]
        for jb in range(scale.shape[1]):
            j0 = jb * bc
            n = min(cols, j0 + bc) - j0
            if scale_from_amax:
                amax = _bits_f32(_finite_amax_bits(block_rows, j0, n))
                s = amax / np.float32(448.0) if amax > np.float32(0.0) else np.float32(1.0)
                scale[i, jb] = max(s, np.float32(2.0 ** -149))
            s = scale[i, jb]
            # a power of two (ue8m0): times its exact inverse is exactly the division
            power_of_two = _f32_bits(s) & _U32(0x7FFFFF) == 0 and s >= np.float32(2.0 ** -126)
            inverse = np.float32(1.0) / s
            for r in range(block_rows.shape[0]):
                src, dst = block_rows[r, j0:j0 + n], q[i * br + r, j0:j0 + n]
                if not want_errors:
                    if power_of_two:
                        for k in range(n):
                            dst[k] = _e4m3(_bits_f32(src[k]) * inverse)
                    else:
                        for k in range(n):
                            dst[k] = _e4m3(_bits_f32(src[k]) / s)
                    continue
                if power_of_two:
                    for k in range(n):
                        dst[k], rounded[k] = _e4m3_rounded(_bits_f32(src[k]) * inverse)
                else:
                    for k in range(n):
                        dst[k], rounded[k] = _e4m3_rounded(_bits_f32(src[k]) / s)
                row_max, row_err, row_ref, row_bad = _row_errors(src, rounded[:n], s)
                max_bits = max(max_bits, row_max)
                sq_err += row_err
                sq_ref += row_ref
                nonfinite += row_bad
    return _bits_f32(max_bits), sq_err, sq_ref, nonfinite


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
