"""Resolve what a user typed (a preset, a config.json, a checkpoint directory) to a config."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .parse import Config, read_config_file
from ..errors import ConfigError, FormatError
from ..io.index import CONFIG_FILE, INDEX_FILE
from ..presets import Preset, all_presets, find_preset
from ..remote.path import is_remote


# `org/name` or `org/name@revision`, as the Hub spells a repository id
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?")


def not_found(path: str | Path) -> str:
    """The one message for a path that does not exist, whatever the command; a bare
    `org/name` gets how to read the Hub repository of that name instead."""
    text = str(path)
    if _REPO_ID.fullmatch(text) and not text.startswith((".", "/")):
        return (f"{text}: no such file or directory; to read the Hub repository, write "
                f"hf://{text}")
    return f"{text}: no such file or directory"


def no_such_path(path: str | Path) -> FormatError:
    return FormatError(not_found(path))


@dataclass(frozen=True)
class ConfigSource:
    spec: str
    kind: Literal["preset", "config", "checkpoint", "parsed"]
    config: Config
    path: Path | None = None  # the config.json, or the checkpoint directory
    preset: Preset | None = None

    @property
    def label(self) -> str:
        return self.preset.name if self.preset else self.spec

    @property
    def file(self) -> Path | None:
        """The config.json it was read from (None for a preset)."""
        if self.path is None:
            return None
        return self.path / CONFIG_FILE if self.kind == "checkpoint" else self.path

    def raw(self) -> dict:
        """The config as config.json keys, as a command writes it beside its output: the
        file's own keys, unknown ones included; a preset's config as config.json keys."""
        if self.file is None:
            return self.config.to_json_dict()
        return json.loads(self.file.read_text(encoding="utf-8"))


def given_config(config: str | Path | Config | ConfigSource | None) -> ConfigSource | None:
    """What a command's `config=` (the CLI's `--config`) names, resolved once: a preset, a
    config.json, a checkpoint directory or a parsed config; None when nothing was given."""
    if config is None or isinstance(config, ConfigSource):
        return config
    if isinstance(config, Config):
        return ConfigSource("given", "parsed", config)
    return resolve_config(config)


def resolve_config(spec: str | Path, *, lenient: bool = False) -> ConfigSource:
    """Accepts a preset name/alias, a path to a config.json, or a checkpoint directory (or
    its index file).

    With `lenient`, a config that parses but is inconsistent for routing (or uses another
    quantisation scheme) is returned with the problems in `config.reading.warnings`.

    Raises:
        ConfigError: when it is none of these, or the config is invalid.
    """
    text = str(spec)
    if isinstance(spec, str) and not is_remote(spec) and not Path(spec).exists():
        preset = find_preset(text)  # no such file: a preset, without importing the readers
        if preset is not None:
            return ConfigSource(text, "preset", preset.config, preset=preset)
    from ..io.source import locate  # here: as above

    path = locate(spec)  # what a user typed, resolved here: the boundary of a config spec
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
        raise ConfigError(f"{not_found(text)} (and not a preset: {names})")
    raise ConfigError(f"{text}: not a preset ({names}), config.json or checkpoint directory")

