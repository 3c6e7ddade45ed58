"""Value statistics of a stored tensor, read once in bounded chunks.

Counts come from the raw bits (no float conversion, no temporary of the tensor's size):
NaN, Inf and zero for every float format, FP8 NaN codes (0x7F/0xFF in e4m3fn, which has no
Inf), and, for a `weight_scale_inv`, the entries that are not finite and > 0.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .dtypes import DTYPES
from .safetensors_io import SafetensorsReader

# bits view, |x| mask, |x| bits of +inf (None: no inf; then |x| == mask is NaN, as in e4m3fn)
FLOAT_BITS: dict[str, tuple[type, int, int | None]] = {
    "F64": (np.uint64, 0x7FFF_FFFF_FFFF_FFFF, 0x7FF0_0000_0000_0000),
    "F32": (np.uint32, 0x7FFF_FFFF, 0x7F80_0000),
    "F16": (np.uint16, 0x7FFF, 0x7C00),
    "BF16": (np.uint16, 0x7FFF, 0x7F80),
    "F8_E5M2": (np.uint8, 0x7F, 0x7C),
    "F8_E4M3": (np.uint8, 0x7F, None),
}
_F32_MAX_BITS = 0x7F7F_FFFF  # an F32 is finite and > 0 iff its bits are in [1, this]


class TensorValues(NamedTuple):
    numel: int
    nan: int = 0
    inf: int = 0
    zero: int = 0
    bad_scales: int = 0  # scales only: entries not finite and > 0


def value_counts(chunk: bytes, dtype: str) -> tuple[int, int, int]:
    """(NaN, Inf, zero) in a chunk of a tensor stored as `dtype` (a `FLOAT_BITS` key)."""
    view, mask, inf = FLOAT_BITS[dtype]
    bits = np.frombuffer(chunk, view) & view(mask)
    zero = bits.size - np.count_nonzero(bits)
    if inf is None:
        return int(np.count_nonzero(bits == mask)), 0, int(zero)
    return int(np.count_nonzero(bits > inf)), int(np.count_nonzero(bits == inf)), int(zero)


def bad_scale_count(chunk: bytes, dtype: str) -> int:
    """Entries of a scale chunk that are not finite and > 0."""
    if dtype == "F32":
        bits = np.frombuffer(chunk, np.uint32)
        return int(np.count_nonzero(bits - np.uint32(1) >= np.uint32(_F32_MAX_BITS)))
    values = np.frombuffer(chunk, DTYPES[dtype].numpy).astype(np.float32)
    return int(values.size - np.count_nonzero(np.isfinite(values) & (values > 0)))


def scannable(dtype: str, *, is_scale: bool = False) -> bool:
    return is_scale and DTYPES[dtype].is_float or dtype in FLOAT_BITS


def scan_tensor(reader: SafetensorsReader, name: str, *, is_scale: bool = False) -> TensorValues:
    """Read one tensor once with pread (memory: one chunk) and count its odd values.

    Raises:
        FormatError: the file ended early. OSError: the read failed.
    """
    e = reader.entry(name)
    nan = inf = zero = bad = 0
    for chunk in reader.iter_chunks(name):
        if is_scale:
            bad += bad_scale_count(chunk, e.dtype)
        else:
            n, i, z = value_counts(chunk, e.dtype)
            nan, inf, zero = nan + n, inf + i, zero + z
    return TensorValues(e.numel, nan, inf, zero, bad)
