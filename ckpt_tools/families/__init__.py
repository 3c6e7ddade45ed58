"""The registry of architecture families: each one a module of rows and hooks (`base`).

Commands ask `family_of(config)` (a parsed config), `config_layouts.family_at(path)` (a
checkpoint directory or config file, read without judging it) or `family_of_tensors(entries)`
(no config) and then the family's rows and hooks; none of them names a family.

Adding a family: one module here (its rows, usually `derive(parent.ROWS, ...)`, its config
model, loader and defaults, and its `Family` entry), one line in `FAMILIES`, and its presets
in `ckpt_tools/presets/`. The config readers (`config_layouts`, `config`) read recognition
(model_types, architectures), the config model and the defaults off the entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import UnsupportedModelError
from .base import Block, Family, Row, derive  # noqa: F401  (re-exported)
from .deepseek_v2 import DEEPSEEK_V2
from .deepseek_v3 import DEEPSEEK_V3
from .deepseek_v4 import DEEPSEEK_V4
from .deepseek_v32 import DEEPSEEK_V32
from .glm4_moe_lite import GLM4_MOE_LITE
from .glm_moe_dsa import GLM_MOE_DSA
from .longcat_flash import LONGCAT_FLASH
from .mistral4 import MISTRAL4
from .mistral_large4 import MISTRAL_LARGE4

FAMILIES: dict[str, Family] = {f.name: f for f in (DEEPSEEK_V2, DEEPSEEK_V3, DEEPSEEK_V32,
                                                   DEEPSEEK_V4, GLM4_MOE_LITE, MISTRAL4,
                                                   GLM_MOE_DSA, MISTRAL_LARGE4, LONGCAT_FLASH)}
# what a command falls back to when nothing says which family it holds: the table-driven
# machinery, whose readers then say what is wrong in their words
DEFAULT = DEEPSEEK_V3


def family_named(name: str) -> Family:
    """The registered family of that name (UnsupportedModelError naming the known ones)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnsupportedModelError(f"no architecture family {name!r}; known: "
                                    f"{', '.join(FAMILIES)}") from None


def family_of(config: Any) -> Family:
    """The family of a parsed config (its `model_type` is the canonical family name)."""
    return family_named(getattr(config, "model_type", DEFAULT.name))


def family_of_tensors(entries: Mapping[str, Any]) -> Family:
    """The family a set of tensors looks like when no config says (each family's
    `looks_like` hook, in registry order); DEFAULT otherwise."""
    for family in FAMILIES.values():
        if family.has_hook("looks_like") and family.hook("looks_like")(entries):
            return family
    return DEFAULT


__all__ = ["FAMILIES", "DEFAULT", "Family", "Row", "Block", "derive", "family_named",
           "family_of", "family_of_tensors"]
