"""ckpt_tools: DeepSeek V2 / V2.5 / V3 / V3.2 / V4 checkpoint tools.

The public API, the calls a conversion pipeline imports::

    from ckpt_tools import validate, diff, info, upcast, quantize, reshard, forward, verify
    from ckpt_tools import download, make_tiny, parse_size, CkptError

Every call returns a typed report whose verdict is `report.ok` (a field or property, never
a method), raises only `CkptError` subclasses for bad input, and never prints. Names are
imported lazily so that `import ckpt_tools` stays cheap for the CLI.

Several calls share their module's name (`ckpt_tools.validate` is the function; its module
is `ckpt_tools.validate` in `sys.modules`, reached with `from ckpt_tools.validate import
ValidationReport` or `importlib.import_module("ckpt_tools.validate")`). The package keeps
the function under that name even after the module is imported, which Python would
otherwise replace with the module.
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

# public name -> "module:attribute". The committed list in tests/data/public_api.txt pins
# every signature: changing one is a visible change.
_EXPORTS = {
    # the calls
    "validate": "ckpt_tools.validate:validate",
    "diff": "ckpt_tools.diff:diff",
    "info": "ckpt_tools.info:describe",
    "describe": "ckpt_tools.info:describe",
    "upcast": "ckpt_tools.convert:upcast",
    "quantize": "ckpt_tools.convert:quantize",
    "reshard": "ckpt_tools.reshard:reshard",
    "reshard_by_size": "ckpt_tools.reshard:reshard_by_size",
    "to_deepseek_mp": "ckpt_tools.reshard:to_deepseek_mp",
    "from_deepseek_mp": "ckpt_tools.reshard:from_deepseek_mp",
    "forward": "ckpt_tools.verify:forward",
    "verify": "ckpt_tools.verify:verify",
    "download": "ckpt_tools.download:download",
    "plan_download": "ckpt_tools.download:plan_download",
    "make_tiny": "ckpt_tools.tiny:make_tiny",
    "parse_size": "ckpt_tools.sizes:parse_size",
    # configs, plans and files
    "parse_config": "ckpt_tools.config:parse_config",
    "read_config_file": "ckpt_tools.config:read_config_file",
    "DeepseekV2Config": "ckpt_tools.config:DeepseekV2Config",
    "DeepseekV3Config": "ckpt_tools.config:DeepseekV3Config",
    "DeepseekV32Config": "ckpt_tools.config:DeepseekV32Config",
    "DeepseekV4Config": "ckpt_tools.config_v4:DeepseekV4Config",
    "V4TensorPlan": "ckpt_tools.families.deepseek_v4.tensor_plan:V4TensorPlan",
    "plan_for": "ckpt_tools.tensor_plan:plan_for",
    # the architectures as data (ckpt_tools.families)
    "family_of": "ckpt_tools.families:family_of",
    "family_named": "ckpt_tools.families:family_named",
    "Family": "ckpt_tools.families.base:Family",
    "Row": "ckpt_tools.families.base:Row",
    "derive": "ckpt_tools.families.base:derive",
    "dequantize_fp4": "ckpt_tools.formats.mxfp4:dequantize_fp4",
    "dequantize_fp8": "ckpt_tools.formats.mxfp4:dequantize_fp8",
    "resolve_config": "ckpt_tools.sources:resolve_config",
    "TensorPlan": "ckpt_tools.tensor_plan:TensorPlan",
    "Checkpoint": "ckpt_tools.checkpoint:Checkpoint",
    "inspect": "ckpt_tools.inventory:inspect",
    "open_checkpoint": "ckpt_tools.inventory:open_checkpoint",
    "Inspection": "ckpt_tools.inventory:Inspection",
    "read_header": "ckpt_tools.safetensors_io:read_header",
    "SafetensorsReader": "ckpt_tools.safetensors_io:SafetensorsReader",
    "SafetensorsWriter": "ckpt_tools.safetensors_io:SafetensorsWriter",
    "open_tensor_source": "ckpt_tools.verify:open_tensor_source",
    "Progress": "ckpt_tools.progress:Progress",
    # reports (each has `.ok`)
    "ValidationReport": "ckpt_tools.findings:ValidationReport",
    "DiffReport": "ckpt_tools.diff:DiffReport",
    "ModelInfo": "ckpt_tools.info:ModelInfo",
    "UpcastReport": "ckpt_tools.convert:UpcastReport",
    "QuantizeReport": "ckpt_tools.convert:QuantizeReport",
    "ReshardReport": "ckpt_tools.reshard:ReshardReport",
    "ForwardReport": "ckpt_tools.verify:ForwardReport",
    "VerifyReport": "ckpt_tools.verify:VerifyReport",
    "DownloadPlan": "ckpt_tools.download:DownloadPlan",
    "DownloadReport": "ckpt_tools.download:DownloadReport",
    "TinyCheckpoint": "ckpt_tools.tiny:TinyCheckpoint",
    # errors
    "CkptError": "ckpt_tools.errors:CkptError",
    "ArgumentError": "ckpt_tools.errors:ArgumentError",
    "ConfigError": "ckpt_tools.errors:ConfigError",
    "UnsupportedModelError": "ckpt_tools.errors:UnsupportedModelError",
    "FormatError": "ckpt_tools.errors:FormatError",
    "MissingTensorError": "ckpt_tools.errors:MissingTensorError",
    "UnexpectedTensorError": "ckpt_tools.errors:UnexpectedTensorError",
    "ShapeMismatchError": "ckpt_tools.errors:ShapeMismatchError",
    "OutputError": "ckpt_tools.errors:OutputError",
    "HubError": "ckpt_tools.errors:HubError",
    "OfflineError": "ckpt_tools.errors:OfflineError",
    "VerificationError": "ckpt_tools.errors:VerificationError",
    "WorkerError": "ckpt_tools.errors:WorkerError",
    "MissingDependencyError": "ckpt_tools.errors:MissingDependencyError",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        module, _, attr = _EXPORTS[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'ckpt_tools' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


class _Package(types.ModuleType):
    """Importing `ckpt_tools.validate` makes Python set the package's `validate` attribute
    to the module; for exported names the function wins (the module stays in sys.modules)."""

    def __setattr__(self, name: str, value) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [*_EXPORTS, "__version__"]
