"""Re-exports of `ckpt_tools.formats` under their old names (DeepSeek-V4's E8M0 scales,
FP8 blocks with E8M0 scales, MXFP4 experts).

Kept while other modules still import `ckpt_tools.v4.mx_formats`; new code imports
`formats`.
"""

from __future__ import annotations

from ..formats import (
    E4M3_MAX,
    E8M0_NAN,
    FP4_BLOCK,
    FP4_MAX,
    FP8_BLOCK,
    fp4_scale_shape,
    is_fp4_pair,
)
from ..formats.e8m0 import E8M0, e8m0_to_float32
from ..formats.mxfp4 import (
    E2M1 as E2M1_VALUES,
)
from ..formats.mxfp4 import (
    FP4_E2M1,
    dequantize_fp4,
    dequantize_fp8,
    dequantize_pair,
    fp4_to_fp8,
    quantize_fp4,
    quantize_fp8,
)

__all__ = ["E2M1_VALUES", "E4M3_MAX", "E8M0", "E8M0_NAN", "FP4_BLOCK", "FP4_E2M1", "FP4_MAX",
           "FP8_BLOCK", "dequantize_fp4", "dequantize_fp8", "dequantize_pair", "e8m0_to_float32",
           "fp4_scale_shape", "fp4_to_fp8", "is_fp4_pair", "quantize_fp4", "quantize_fp8"]
