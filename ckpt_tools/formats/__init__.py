"""The number formats of DeepSeek-architecture checkpoints, each fact defined once.

- Block FP8: float8 e4m3fn (or e5m2) weights with one scale per `FP8_BLOCK` (128 x 128)
  block; the scale is F32 (V2/V3 `weight_scale_inv`, `scale_fmt` absent or "float"; V3.1+
  `scale_fmt: ue8m0` keeps it F32 but a power of two) or a byte of E8M0 (DeepSeek-V4,
  `<module>.scale`). W[i, j] = float32(q[i, j]) * s[i // 128, j // 128].
- E8M0: byte b is 2^(b - 127); b = 255 is NaN.
- MXFP4 (DeepSeek-V4's routed experts): I8/U8 [out, in/2], two e2m1 codes per byte along
  the input axis (low nibble first), one E8M0 scale per `FP4_BLOCK` (32) inputs.
Definitions and sources: docs/deepseek_v4.md ("Number formats") and the README (`ckpt upcast`).

This module holds the constants and shape rules only and imports neither numpy nor
ml_dtypes (the tensor plan and `ckpt info` use it); the arithmetic is in `fp8_block`,
`mxfp4` and `e8m0` (NumPy, the oracle) and `compiled` (numba), chosen by `kernels`.
"""

from __future__ import annotations

from typing import Literal

FP8_BLOCK: tuple[int, int] = (128, 128)  # rows x columns one FP8 scale covers
FP4_BLOCK = 32  # inputs one MXFP4 scale covers
E4M3_MAX = 448.0  # largest finite float8_e4m3fn (it has no inf)
FP4_MAX = 6.0  # largest e2m1
E8M0_NAN = 255  # the one E8M0 byte that is not a power of two
E8M0_EXPONENTS = (-127, 127)  # 2^k held by E8M0 bytes 0..254
# e2m1 code -> value (bit 3 is the sign)
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
               -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)

# Where a weight's scale is stored: HF names (V2/V3) "x.weight" -> "x.weight_scale_inv";
# DeepSeek's own names (model-parallel files, V4 native) "x.weight" -> "x.scale".
SCALE_SUFFIX = "_scale_inv"
MP_SCALE_SUFFIX = ".scale"

ScaleFmt = Literal["float", "ue8m0"]  # F32 amax/448, or the power of two at or above it
# config.json's `quantization_config` of V3's release (V3.1 adds "scale_fmt": "ue8m0").
FP8_QUANTIZATION_CONFIG = {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "weight_block_size": list(FP8_BLOCK),
}


def block_grid(shape: tuple[int, int], block: tuple[int, int] = FP8_BLOCK) -> tuple[int, int]:
    """Scale grid of a 2-D FP8 weight: [ceil(rows / block[0]), ceil(cols / block[1])]
    (partial edge blocks have a scale of their own)."""
    rows, cols = shape
    return -(-rows // block[0]), -(-cols // block[1])


def fp4_scale_shape(packed_shape: tuple[int, ...]) -> tuple[int, int]:
    """Scale grid of an I8-packed [out, in/2] weight: [out, ceil(in / 32)]."""
    rows, half = packed_shape
    return rows, -(-(2 * half) // FP4_BLOCK)


def is_fp4_pair(weight_dtype: str, weight_shape, scale_shape) -> bool:
    """The FP4 layout is recognised from the tensors, not from the config's expert_dtype."""
    return (weight_dtype == "I8" and len(weight_shape) == 2
            and tuple(scale_shape) == fp4_scale_shape(tuple(weight_shape)))


def mp_scale_name(weight_name: str) -> str:
    """DeepSeek's own naming: "x.weight" -> "x.scale"."""
    return weight_name.removesuffix(".weight") + MP_SCALE_SUFFIX
