"""Every float32 through the compiled e4m3 rounding against ml_dtypes' cast (about 2 minutes).

`formats/compiled._e4m3` rounds with the float adder (|x| + 2^(exponent + 20)) instead of
NumPy's clip and ml_dtypes' cast; the test suite checks ties, their neighbours and whole
blocks, this checks all 2^32 inputs: the code (as ml_dtypes casts clip(x, -448, 448), NaN
with its sign) and the float32 value of that code (what the round-trip error multiplies).
Prints the number of mismatches (0) and exits 1 when there is any.

Reproduce: python bench/e4m3_rounding.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numba  # noqa: E402
import numpy as np  # noqa: E402

from ckpt_tools.formats import compiled, fp8_block  # noqa: E402


@numba.njit(nogil=True)
def _round_all(bits, codes, values):
    for k in range(bits.shape[0]):
        codes[k], values[k] = compiled._e4m3_rounded(compiled._bits_f32(bits[k]))


def main() -> None:
    started, chunk, mismatches = time.monotonic(), 1 << 26, 0
    codes, values = np.empty(chunk, np.uint8), np.empty(chunk, np.float32)
    for first in range(0, 1 << 32, chunk):
        bits = np.arange(first, first + chunk, dtype=np.uint64).astype(np.uint32)
        x = bits.view(np.float32)
        _round_all(bits, codes, values)
        with np.errstate(invalid="ignore"):
            want = np.clip(x, -448, 448).astype(fp8_block.FP8_E4M3)
        mismatches += int(np.count_nonzero(codes != want.view(np.uint8)))
        number = ~np.isnan(x)
        want_values = want[number].astype(np.float32).view(np.uint32)
        mismatches += int(np.count_nonzero(values[number].view(np.uint32) != want_values))
    print(f"e4m3 rounding of all 2^32 float32 values: {mismatches} mismatches against "
          f"ml_dtypes ({time.monotonic() - started:.0f} s)")
    sys.exit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
