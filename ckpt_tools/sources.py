"""Resolve what a user typed (a preset, a config.json, a checkpoint directory) to a config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config import Config, read_config_file
from .errors import ConfigError
from .index import CONFIG_FILE, INDEX_FILE
from .presets import Preset, all_presets, find_preset
from .remote.stores import as_path


@dataclass(frozen=True)
class ConfigSource:
    spec: str
    kind: Literal["preset", "config", "checkpoint"]
    config: Config
    path: Path | None = None  # the config.json, or the checkpoint directory
    preset: Preset | None = None

    @property
    def label(self) -> str:
        return self.preset.name if self.preset else self.spec


def resolve_config(spec: str | Path, *, lenient: bool = False) -> ConfigSource:
    """Accepts a preset name/alias, a path to a config.json, or a checkpoint directory (or
    its index file).

    With `lenient`, a config that parses but is inconsistent for routing (or uses another
    quantisation scheme) is returned with the problems in `config.reading.warnings`.

    Raises:
        ConfigError: when it is none of these, or the config is invalid.
    """
    text = str(spec)
    path = as_path(spec)  # local, or a remote URL's RemotePath
    if path.name == INDEX_FILE and path.is_file():  # an index stands for its checkpoint
        path = path.parent
    if path.is_dir():
        cfg_path = path / CONFIG_FILE
        if not cfg_path.is_file():
            raise ConfigError(f"{path}: directory has no {CONFIG_FILE}")
        return ConfigSource(text, "checkpoint", read_config_file(cfg_path, lenient=lenient), path)
    if path.is_file():
        return ConfigSource(text, "config", read_config_file(path, lenient=lenient), path)
    preset = find_preset(text)
    if preset is not None:
        return ConfigSource(text, "preset", preset.config, preset=preset)
    names = ", ".join(all_presets())
    if "/" in text or text.endswith(".json"):
        raise ConfigError(f"{text}: no such file or directory (and not a preset: {names})")
    raise ConfigError(f"{text}: not a preset ({names}), config.json or checkpoint directory")

