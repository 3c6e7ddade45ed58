"""The one module table and the name tables derived from it."""

from __future__ import annotations

from ckpt_tools.families import family_of
from ckpt_tools.inventory.modules import MODULES, SCOPES, roles
from ckpt_tools.inventory.mp_layout import MP_FAMILIES
from ckpt_tools.presets import all_presets, find_preset
from ckpt_tools.reference.weights import ROLES
from ckpt_tools.inventory.tensor_plan import SCALE_SUFFIX, TensorPlan


def _families() -> set[str]:
    """Every family any V2/V3-architecture preset's plan has, in either layout (DeepSeek-V4's
    own table is tensor_plan_v4's; LongCat-Flash's layer repeats V3's roles under its own
    names, read off its rows), named as the language model's own (a wrapper's prefix left
    off)."""
    out: set[str] = set()
    for name in all_presets():
        config = find_preset(name).config
        if not family_of(config).in_module_table:
            continue
        for layout in ("bf16", "fp8"):
            out |= set(TensorPlan(config, layout, prefix="").families)
    return out


def test_every_row_is_used_and_every_family_has_a_row():
    families = _families()
    rows = {m.hf_template for m in MODULES}
    assert families == rows | {m.hf_template + SCALE_SUFFIX for m in MODULES if m.fp8}
    assert len(rows) == len(MODULES) and len({m.role for m in MODULES}) == len(MODULES)


def test_derived_tables_agree_with_the_rows():
    assert ROLES == roles() and set(ROLES.values()) <= _families()
    # rows DeepSeek's layout has no name for (a derived family's own) are not mapped
    unmapped = {m.hf_template for m in MODULES if m.mp_template is None}
    assert set(MP_FAMILIES) == _families() - unmapped
    demo = [name for name, _ in MP_FAMILIES.values()]
    assert len(demo) == len(set(demo))  # no two HF families share a DeepSeek name
    for m in MODULES:
        if m.mp_template is None:
            continue
        name, rule = MP_FAMILIES[m.hf_template]
        assert name.startswith(SCOPES[m.section][1]) and rule == m.split
        if m.fp8:  # the scale travels with its weight, named `scale`
            assert MP_FAMILIES[m.hf_template + SCALE_SUFFIX] == (
                name.removesuffix(".weight") + ".scale", rule)


def test_a_few_rows_say_what_deepseek_says():
    """Spot checks against DeepSeek's inference/convert.py mapping and model.py."""
    by_role = {m.role: m for m in MODULES}
    assert MP_FAMILIES["model.layers.{L}.self_attn.o_proj.weight"] == (
        "layers.{L}.attn.wo.weight", 1)
    assert MP_FAMILIES["model.layers.{L}.mlp.experts.{E}.up_proj.weight"] == (
        "layers.{L}.ffn.experts.{E}.w3.weight", "expert")
    assert MP_FAMILIES["model.layers.{L}.mlp.gate.e_score_correction_bias"] == (
        "layers.{L}.ffn.gate.bias", None)
    assert by_role["gate_bias"].f32 and not by_role["gate"].fp8 and not by_role["mtp.eh_proj"].fp8
