"""ckpt_tools: DeepSeek V2 / V2.5 / V3 / V4 checkpoint tools.

The public API is imported lazily (`ckpt_tools.make_tiny`, `ckpt_tools.TensorPlan`, ...)
so that `import ckpt_tools` stays cheap for the CLI. Calls named like their module are
imported from it: `from ckpt_tools.diff import diff`, `from ckpt_tools.validate import
validate`, `from ckpt_tools.verify import verify`, `from ckpt_tools.download import download`.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "parse_config": "ckpt_tools.config",
    "read_config_file": "ckpt_tools.config",
    "DeepseekV2Config": "ckpt_tools.config",
    "DeepseekV3Config": "ckpt_tools.config",
    "DeepseekV4Config": "ckpt_tools.config_v4",
    "V4TensorPlan": "ckpt_tools.tensor_plan_v4",
    "plan_for": "ckpt_tools.tensor_plan",
    "dequantize_fp4": "ckpt_tools.mx_formats",
    "dequantize_fp8": "ckpt_tools.mx_formats",
    "resolve_config": "ckpt_tools.sources",
    "TensorPlan": "ckpt_tools.tensor_plan",
    "Checkpoint": "ckpt_tools.checkpoint",
    "read_header": "ckpt_tools.safetensors_io",
    "SafetensorsReader": "ckpt_tools.safetensors_io",
    "SafetensorsWriter": "ckpt_tools.safetensors_io",
    "make_tiny": "ckpt_tools.tiny",
    "describe": "ckpt_tools.info",
    "upcast": "ckpt_tools.convert",
    "quantize": "ckpt_tools.convert",
    "reshard_by_size": "ckpt_tools.reshard",
    "to_deepseek_mp": "ckpt_tools.reshard",
    "from_deepseek_mp": "ckpt_tools.reshard",
    "forward": "ckpt_tools.verify",
    "open_tensor_source": "ckpt_tools.verify",
    "plan_download": "ckpt_tools.download",
    "CkptError": "ckpt_tools.errors",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ckpt_tools' has no attribute {name!r}")


__all__ = [*_EXPORTS, "__version__"]
