"""Regenerate tests/data/fp8_golden.npz: an exhaustive table of DeepSeek's dequantisation.

For every e4m3fn code c (all 256) and a few float32 scales s, the golden value is
round_f32(decode(c) * s) and round_bf16(round_f32(decode(c) * s)): the definition in
docs/architecture.md §3, computed here in exact rational arithmetic (fractions) with a
hand-written round-to-nearest-even, so it shares no code with ckpt_tools, numpy or
ml_dtypes (numpy only stores the result). NaN codes (0x7F, 0xFF) give the quiet NaN with
the code's sign (f32 0x7FC00000 / 0xFFC00000, bf16 0x7FC0 / 0xFFC0), the convention
ckpt_tools documents. Run: python tests/data/make_fp8_golden.py
"""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

# float32 bit patterns of the scales: typical V3 scales, a power of two, subnormal results,
# an f32 subnormal scale, a scale whose products round to the edge of f32 range, overflow.
SCALE_BITS = [
    0x3F800000,  # 1.0
    0x3A1D4952,  # ~6.0e-4, a typical amax / 448
    0x3B03126F,  # ~2.0e-3
    0x39800000,  # 2**-12 (ue8m0 style)
    0x06000000,  # 2**-115: products of small codes are f32 subnormals
    0x00200000,  # 2**-129: an f32 subnormal scale
    0x7B000000,  # 2**119: 448 * s is near the top of the f32 range
    0x7C000000,  # 2**121: 448 * s overflows to inf
]


def decode_e4m3fn(code: int) -> tuple[int, Fraction | None]:
    """(sign, magnitude) of an e4m3fn code; magnitude None for NaN."""
    sign, e, m = code >> 7, (code >> 3) & 0xF, code & 7
    if e == 15 and m == 7:
        return sign, None
    if e == 0:
        return sign, Fraction(m, 8) * Fraction(1, 2**6)
    return sign, (1 + Fraction(m, 8)) * Fraction(2) ** (e - 7)


def decode_f32(bits: int) -> tuple[int, Fraction]:
    sign, e, m = bits >> 31, (bits >> 23) & 0xFF, bits & 0x7FFFFF
    assert e != 0xFF, "finite scales only"
    if e == 0:
        return sign, Fraction(m, 2**23) * Fraction(2) ** -126
    return sign, (1 + Fraction(m, 2**23)) * Fraction(2) ** (e - 127)


def round_even(sign: int, x: Fraction, mbits: int, ebits: int) -> int:
    """Bits of the binary float (mbits mantissa, ebits exponent) nearest to x, ties to even."""
    bias = 2 ** (ebits - 1) - 1
    top = sign << (mbits + ebits)
    if x == 0:
        return top
    e = x.numerator.bit_length() - x.denominator.bit_length()
    if Fraction(2) ** e > x:
        e -= 1
    e = max(e, 1 - bias)  # subnormals share the smallest exponent
    m = round(x / Fraction(2) ** (e - mbits))  # Fraction.__round__ rounds half to even
    if m == 2 ** (mbits + 1):
        e, m = e + 1, 2**mbits
    if e + bias >= 2**ebits - 1:
        return top | ((2**ebits - 1) << mbits)  # inf
    if m < 2**mbits:
        return top | m  # subnormal
    return top | ((e + bias) << mbits) | (m - 2**mbits)


def value_of(bits: int, mbits: int, ebits: int) -> Fraction:
    bias = 2 ** (ebits - 1) - 1
    e, m = (bits >> mbits) & (2**ebits - 1), bits & (2**mbits - 1)
    if e == 0:
        return Fraction(m, 2**mbits) * Fraction(2) ** (1 - bias)
    return (1 + Fraction(m, 2**mbits)) * Fraction(2) ** (e - bias)


def golden(code: int, scale_bits: int) -> tuple[int, int]:
    """(f32 bits, bf16 bits) of dequantising `code` with the scale."""
    csign, mag = decode_e4m3fn(code)
    ssign, smag = decode_f32(scale_bits)
    if mag is None:
        return 0x7FC00000 | csign << 31, 0x7FC0 | csign << 15
    sign = csign ^ ssign
    f32 = round_even(sign, mag * smag, 23, 8)
    if (f32 >> 23) & 0xFF == 0xFF:  # inf stays inf
        return f32, f32 >> 16
    return f32, round_even(sign, value_of(f32, 23, 8), 7, 8)


def main() -> None:
    import numpy as np

    f32 = [[golden(c, s)[0] for c in range(256)] for s in SCALE_BITS]
    bf16 = [[golden(c, s)[1] for c in range(256)] for s in SCALE_BITS]
    assert struct.unpack("<f", struct.pack("<I", SCALE_BITS[0]))[0] == 1.0
    out = Path(__file__).with_name("fp8_golden.npz")
    np.savez_compressed(out, scale_bits=np.array(SCALE_BITS, np.uint32),
                        f32_bits=np.array(f32, np.uint32), bf16_bits=np.array(bf16, np.uint16))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
