"""The one table of safetensors dtypes and their NumPy equivalents.

BF16 and the FP8 formats come from ml_dtypes, which gives NumPy real `bfloat16`,
`float8_e4m3fn` and `float8_e5m2` dtypes with IEEE round-to-nearest-even casts.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np


@dataclass(frozen=True)
class DType:
    name: str  # the safetensors spelling, e.g. "BF16"
    numpy: np.dtype
    itemsize: int
    is_float: bool


def _entry(name: str, dtype, is_float: bool) -> DType:
    dt = np.dtype(dtype)
    return DType(name, dt, dt.itemsize, is_float)


DTYPES: dict[str, DType] = {
    d.name: d
    for d in (
        _entry("F64", np.float64, True),
        _entry("F32", np.float32, True),
        _entry("F16", np.float16, True),
        _entry("BF16", ml_dtypes.bfloat16, True),
        _entry("F8_E4M3", ml_dtypes.float8_e4m3fn, True),
        _entry("F8_E5M2", ml_dtypes.float8_e5m2, True),
        _entry("F8_E8M0", ml_dtypes.float8_e8m0fnu, True),
        _entry("I64", np.int64, False),
        _entry("I32", np.int32, False),
        _entry("I16", np.int16, False),
        _entry("I8", np.int8, False),
        _entry("U64", np.uint64, False),
        _entry("U32", np.uint32, False),
        _entry("U16", np.uint16, False),
        _entry("U8", np.uint8, False),
        _entry("BOOL", np.bool_, False),
    )
}

FP8_DTYPES = frozenset({"F8_E4M3", "F8_E5M2"})

_BY_NUMPY = {d.numpy: d.name for d in DTYPES.values()}


def dtype_name(array_dtype: np.dtype) -> str:
    """The safetensors name of a NumPy dtype (raises KeyError for unsupported ones)."""
    return _BY_NUMPY[np.dtype(array_dtype)]


def itemsize(name: str) -> int:
    return DTYPES[name].itemsize
