"""Re-exports of `ckpt_tools.formats` under their old names (block FP8 with F32 scales).

Kept while other modules still import `ckpt_tools.fp8`; new code imports `formats`.
"""

from __future__ import annotations

from .formats import E4M3_MAX, FP8_QUANTIZATION_CONFIG
from .formats import FP8_BLOCK as BLOCK
from .formats.fp8_block import (
    BF16,
    FP8_E4M3,
    FP8_E5M2,
    check_scale,
    dequantize,
    dequantize_rows,
    quantize,
)

__all__ = ["BF16", "BLOCK", "E4M3_MAX", "FP8_E4M3", "FP8_E5M2", "FP8_QUANTIZATION_CONFIG",
           "check_scale", "dequantize", "dequantize_rows", "quantize"]
