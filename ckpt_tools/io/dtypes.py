"""The one table of safetensors dtypes and their NumPy equivalents.

BF16 and the FP8 formats come from ml_dtypes, which gives NumPy real `bfloat16`,
`float8_e4m3fn` and `float8_e5m2` dtypes with IEEE round-to-nearest-even casts.

Sizes (`ITEMSIZES`, `itemsize`) need no NumPy, so the tensor plan and everything that
only counts bytes (`ckpt info`, `ckpt diff` of presets) starts without importing numpy
and ml_dtypes; `DTYPES` is built on first access.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# safetensors name -> (bytes per element, is a float type); the order is the table's order.
ITEMSIZES: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0"})
FP8_DTYPES = frozenset({"F8_E4M3", "F8_E5M2"})


@dataclass(frozen=True)
class DType:
    name: str  # the safetensors spelling, e.g. "BF16"
    numpy: Any  # np.dtype
    itemsize: int
    is_float: bool


def _build() -> tuple[dict[str, DType], dict]:
    import ml_dtypes
    import numpy as np

    numpy_types = {
        "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
        "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
        "F8_E8M0": ml_dtypes.float8_e8m0fnu, "I64": np.int64, "I32": np.int32,
        "I16": np.int16, "I8": np.int8, "U64": np.uint64, "U32": np.uint32, "U16": np.uint16,
        "U8": np.uint8, "BOOL": np.bool_,
    }
    table = {}
    for name in ITEMSIZES:
        dt = np.dtype(numpy_types[name])
        assert dt.itemsize == ITEMSIZES[name], name  # internal invariant of the two tables
        table[name] = DType(name, dt, dt.itemsize, name in FLOAT_DTYPES)
    return table, {d.numpy: d.name for d in table.values()}


def _tables() -> tuple[dict[str, DType], dict]:
    if "DTYPES" not in globals():
        globals()["DTYPES"], globals()["_BY_NUMPY"] = _build()
    return globals()["DTYPES"], globals()["_BY_NUMPY"]


def __getattr__(name: str):
    # PEP 562: `DTYPES` (and `from .dtypes import DTYPES`) builds the NumPy table lazily.
    if name == "DTYPES":
        return _tables()[0]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def dtype_name(array_dtype) -> str:
    """The safetensors name of a NumPy dtype (raises KeyError for unsupported ones)."""
    import numpy as np

    return _tables()[1][np.dtype(array_dtype)]


def itemsize(name: str) -> int:
    return ITEMSIZES[name]
