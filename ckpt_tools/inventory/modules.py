"""The rows of the table-planned families (V2, V3, V3.2), merged, with their full names.

The rows themselves live with their families (`ckpt_tools.families`); this is the view the
shared V2/V3 machinery derives its name tables from (`mp_layout.MP_FAMILIES`,
`reference.weights.ROLES`): every row of every family that the generic `TensorPlan` plans,
by role, with its transformers and DeepSeek model-parallel name templates ({L} layer, {E}
routed expert). NumPy-free.
"""

from __future__ import annotations

from typing import NamedTuple

from ..families import FAMILIES
from ..families.base import COLUMN, EXPERT, ROW, Component, Row, Rule, Shape  # noqa: F401  (API)
from ..families.base import HF_EXPERT_PREFIX as EXPERT_PREFIX  # noqa: F401  (API)
from ..families.base import HF_LAYER_PREFIX as LAYER_PREFIX  # noqa: F401  (API)


class Module(NamedTuple):
    """One row of a table-planned family, with its scopes applied."""

    role: str
    section: str
    component: Component
    hf_template: str
    mp_template: str | None  # None: not in DeepSeek's model-parallel layout
    split: Rule
    fp8: bool
    f32: bool
    row: Row


def _table_modules() -> tuple[Module, ...]:
    out: dict[str, Module] = {}
    for family in FAMILIES.values():
        if not family.in_module_table:
            continue  # its own planner or layer layout: its own rows are its name tables
        for r in family.rows:
            out.setdefault(r.role, Module(r.role, r.section, r.component,
                                          family.template(r, "hf"), family.template(r, "mp"),
                                          r.split, r.fp8, r.f32, r))
    return tuple(out.values())


MODULES: tuple[Module, ...] = _table_modules()
# each section's scope: (HF prefix, DeepSeek model-parallel prefix)
SCOPES: dict[str, tuple[str, str]] = {
    m.section: (m.hf_template.removesuffix(m.row.hf), m.mp_template.removesuffix(m.row.mp))
    for m in MODULES if m.mp_template is not None}


def section(name: str) -> tuple[Module, ...]:
    return tuple(m for m in MODULES if m.section == name)


def roles() -> dict[str, str]:
    """role -> HF name template ({L} = layer, {E} = routed expert)."""
    return {m.role: m.hf_template for m in MODULES}
