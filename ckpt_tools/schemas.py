"""The public Pydantic models whose JSON Schema is committed under `schemas/`.

Each entry is `file stem -> "module:attribute"`, imported only when exporting: the shared
ones here, and the reports of a family's own hooks from its registry entry.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from .families import FAMILIES

PUBLIC_MODELS: dict[str, str] = {
    "deepseek_config": "ckpt_tools.configs.parse:DeepseekConfig",
    "model_info": "ckpt_tools.commands.info:ModelInfo",
    "validation_report": "ckpt_tools.inventory.findings:ValidationReport",
    "diff_report": "ckpt_tools.commands.diff:DiffReport",
    "arch_figures": "ckpt_tools.figures.arch_figures:ArchFigures",
    "download_plan": "ckpt_tools.commands.download:DownloadPlan",
    "download_report": "ckpt_tools.commands.download:DownloadReport",
    "verify_report": "ckpt_tools.commands.verify:VerifyReport",
    "forward_report": "ckpt_tools.commands.verify:ForwardReport",
    "upcast_report": "ckpt_tools.commands.convert:UpcastReport",
    "quantize_report": "ckpt_tools.commands.convert:QuantizeReport",
    "reshard_report": "ckpt_tools.commands.reshard:ReshardReport",
    "error_report": "ckpt_tools.error_report:ErrorReport",
    "tiny_checkpoint": "ckpt_tools.commands.tiny:TinyCheckpoint",
    **{stem: target for f in FAMILIES.values() for stem, target in f.report_schemas.items()},
}

INPUT_MODELS = {"deepseek_config"}
# what a config.json holds; every other public model is a result (`results.Result`, `.ok`)
CONFIG_MODELS = {"deepseek_config"}  # every family's config model, one discriminated union

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


def _load(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_schemas() -> dict[str, str]:
    """File name -> JSON text for every public model (deterministic)."""
    out = {}
    for stem, target in sorted(PUBLIC_MODELS.items()):
        # results are documented as printed (computed fields such as `ok` included); the
        # config models as accepted
        mode = "validation" if stem in INPUT_MODELS else "serialization"
        schema: dict[str, Any] = TypeAdapter(_load(target)).json_schema(mode=mode)
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                  "$id": f"ckpt_tools/{stem}.schema.json", "title": schema.get("title", stem),
                  **schema}
        out[f"{stem}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def export_schemas(directory: str | Path = SCHEMA_DIR) -> list[Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in build_schemas().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written
