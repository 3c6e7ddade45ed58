"""E8M0 scales (ml_dtypes `float8_e8m0fnu`): byte b is 2^(b - 127), 255 is NaN."""

from __future__ import annotations

import numpy as np

from ..io.dtypes import DTYPES
from . import E8M0_EXPONENTS

E8M0 = DTYPES["F8_E8M0"].numpy


def e8m0_to_float32(scale: np.ndarray) -> np.ndarray:
    """2^(b-127) per byte, NaN for 255 (exact in float32, 2^-127 being a subnormal)."""
    return np.asarray(scale).view(E8M0).astype(np.float32)


def to_e8m0(scale: np.ndarray) -> np.ndarray:
    """Float powers of two -> E8M0, clamped to its range 2^-127 .. 2^127."""
    lo, hi = E8M0_EXPONENTS
    return np.clip(scale, 2.0 ** lo, 2.0 ** hi).astype(E8M0)


def pow2_at_least(x: np.ndarray) -> np.ndarray:
    """Smallest power of two >= x (float32, x > 0), clamped to E8M0's range."""
    e = np.ceil(np.log2(x.astype(np.float64)))
    return np.exp2(np.clip(e, *E8M0_EXPONENTS)).astype(np.float32)
