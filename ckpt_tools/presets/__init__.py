"""Bundled configs of each DeepSeek release, with where every value came from.

Each `<name>.json` holds `title`, `hf_repo`, `aliases`, `provenance` (kind: verbatim or
reconstructed, and the source), optionally `published` (the total / activated parameter
counts the publisher gives, to the precision given, and where) and the `config` itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from ..configs.parse import Config, parse_config


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    hf_repo: str
    aliases: tuple[str, ...]
    provenance_kind: str  # "verbatim" or "reconstructed"
    provenance: str
    config_json: str  # kept as text: every caller gets its own copy to change
    # the publisher's figures: ("total", "1T"), ("activated", "32B"), ("source", ...)
    published: tuple[tuple[str, str], ...] = ()

    @property
    def raw_config(self) -> dict[str, Any]:
        """A fresh copy of the config.json mapping (callers may mutate it)."""
        return json.loads(self.config_json)

    @property
    def config(self) -> Config:
        return parse_config(self.raw_config, source=f"preset {self.name}")


@cache
def all_presets() -> dict[str, Preset]:
    presets = {}
    for entry in sorted(resources.files(__package__).iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".json"):
            continue
        data = json.loads(entry.read_text(encoding="utf-8"))
        presets[data["name"]] = Preset(
            name=data["name"],
            title=data["title"],
            hf_repo=data["hf_repo"],
            aliases=tuple(data["aliases"]),
            provenance_kind=data["provenance"]["kind"],
            provenance=data["provenance"]["source"],
            config_json=json.dumps(data["config"]),
            published=tuple(data.get("published", {}).items()),
        )
    return presets


@cache
def _lookup() -> dict[str, str]:
    table = {}
    for p in all_presets().values():
        for key in (p.name, p.hf_repo, p.hf_repo.split("/")[-1], *p.aliases):
            table[key.lower()] = p.name
    return table


def find_preset(name: str) -> Preset | None:
    """A preset by name, alias or hub repo id (case-insensitive), or None."""
    key = _lookup().get(name.lower())
    return all_presets()[key] if key else None
