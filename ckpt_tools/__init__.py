"""ckpt_tools: DeepSeek V2 / V2.5 / V3 / V3.2 / V4 checkpoint tools.

The public API, the calls a conversion pipeline imports::

    from ckpt_tools import validate, diff, info, upcast, quantize, reshard, forward, verify
    from ckpt_tools import download, make_tiny, parse_size, CkptError

Every call returns a typed report whose verdict is `report.ok` (a field or property, never
a method), raises only `CkptError` subclasses for bad input, and never prints. Names are
imported lazily so that `import ckpt_tools` stays cheap for the CLI.

The modules behind them live in one package per stage of the pipeline (configs, families,
formats, io, remote, inventory, execution, figures, commands, reference, cli: the README's
Architecture section); `ckpt_tools.validate` is the function, its module
`ckpt_tools.commands.validate`.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> "module:attribute". The committed list in tests/data/public_api.txt pins
# every signature: changing one is a visible change.
_EXPORTS = {
    # the calls
    "validate": "ckpt_tools.commands.validate:validate",
    "diff": "ckpt_tools.commands.diff:diff",
    "info": "ckpt_tools.commands.info:describe",
    "describe": "ckpt_tools.commands.info:describe",
    "upcast": "ckpt_tools.commands.convert:upcast",
    "quantize": "ckpt_tools.commands.convert:quantize",
    "reshard": "ckpt_tools.commands.reshard:reshard",
    "reshard_by_size": "ckpt_tools.commands.reshard:reshard_by_size",
    "to_deepseek_mp": "ckpt_tools.commands.reshard:to_deepseek_mp",
    "from_deepseek_mp": "ckpt_tools.commands.reshard:from_deepseek_mp",
    "forward": "ckpt_tools.commands.verify:forward",
    "verify": "ckpt_tools.commands.verify:verify",
    "download": "ckpt_tools.commands.download:download",
    "plan_download": "ckpt_tools.commands.download:plan_download",
    "make_tiny": "ckpt_tools.commands.tiny:make_tiny",
    "parse_size": "ckpt_tools.sizes:parse_size",
    # configs, plans and files
    "parse_config": "ckpt_tools.configs.parse:parse_config",
    "read_config_file": "ckpt_tools.configs.parse:read_config_file",
    "DeepseekV2Config": "ckpt_tools.configs.parse:DeepseekV2Config",
    "DeepseekV3Config": "ckpt_tools.configs.parse:DeepseekV3Config",
    "DeepseekV32Config": "ckpt_tools.configs.parse:DeepseekV32Config",
    "plan_for": "ckpt_tools.inventory.tensor_plan:plan_for",
    # the architectures as data (ckpt_tools.families)
    "family_of": "ckpt_tools.families:family_of",
    "family_named": "ckpt_tools.families:family_named",
    "Family": "ckpt_tools.families.base:Family",
    "Row": "ckpt_tools.families.base:Row",
    "derive": "ckpt_tools.families.base:derive",
    "dequantize_fp4": "ckpt_tools.formats.mxfp4:dequantize_fp4",
    "dequantize_fp8": "ckpt_tools.formats.mxfp4:dequantize_fp8",
    "resolve_config": "ckpt_tools.configs.sources:resolve_config",
    "TensorPlan": "ckpt_tools.inventory.tensor_plan:TensorPlan",
    "Checkpoint": "ckpt_tools.inventory.checkpoint:Checkpoint",
    "inspect": "ckpt_tools.inventory.inspect:inspect",
    "open_checkpoint": "ckpt_tools.inventory.inspect:open_checkpoint",
    "Inspection": "ckpt_tools.inventory.inspect:Inspection",
    "read_header": "ckpt_tools.io.safetensors_io:read_header",
    "SafetensorsReader": "ckpt_tools.io.safetensors_io:SafetensorsReader",
    "SafetensorsWriter": "ckpt_tools.io.safetensors_io:SafetensorsWriter",
    "open_tensor_source": "ckpt_tools.commands.verify:open_tensor_source",
    "Progress": "ckpt_tools.execution.progress:Progress",
    # reports (each has `.ok`)
    "ValidationReport": "ckpt_tools.inventory.findings:ValidationReport",
    "DiffReport": "ckpt_tools.commands.diff:DiffReport",
    "ModelInfo": "ckpt_tools.commands.info:ModelInfo",
    "UpcastReport": "ckpt_tools.commands.convert:UpcastReport",
    "QuantizeReport": "ckpt_tools.commands.convert:QuantizeReport",
    "ReshardReport": "ckpt_tools.commands.reshard:ReshardReport",
    "ForwardReport": "ckpt_tools.commands.verify:ForwardReport",
    "VerifyReport": "ckpt_tools.commands.verify:VerifyReport",
    "DownloadPlan": "ckpt_tools.commands.download:DownloadPlan",
    "DownloadReport": "ckpt_tools.commands.download:DownloadReport",
    "TinyCheckpoint": "ckpt_tools.commands.tiny:TinyCheckpoint",
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


__all__ = [*_EXPORTS, "__version__"]
