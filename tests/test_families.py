"""The family registry: recognition, derived rows, and the seams between families and commands."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

import ckpt_tools
from ckpt_tools.commands.convert import quantize, upcast
from ckpt_tools.errors import UnexpectedTensorError
from ckpt_tools.configs.layouts import family_for_raw
from ckpt_tools.families import FAMILIES, family_named, family_of
from ckpt_tools.families.base import derive
from ckpt_tools.presets import all_presets, find_preset
from ckpt_tools.commands.reshard import reshard
from ckpt_tools.commands.tiny import make_tiny
from ckpt_tools.commands.validate import validate

PACKAGE = Path(ckpt_tools.__file__).parent


def test_every_preset_belongs_to_the_family_that_lists_it():
    for name in all_presets():
        family = family_of(find_preset(name).config)
        assert name in family.presets or find_preset(name).name in family.presets, name
    listed = [p for f in FAMILIES.values() for p in f.presets]
    assert len(listed) == len(set(listed))


def test_recognition_from_a_raw_config():
    assert family_for_raw({"model_type": "deepseek_v4"}).name == "deepseek_v4"
    assert family_for_raw({"architectures": ["DeepseekV32ForCausalLM"]}).name == "deepseek_v32"
    assert family_for_raw({"model_type": "llama"}) is FAMILIES["deepseek_v3"]  # the default
    assert family_named("deepseek_v2").title == "DeepSeek-V2"


def test_derive_is_parent_rows_with_changes():
    parent = FAMILIES["deepseek_v3"].rows
    rows = derive(parent, drop=["wq"], change={"wo": {"hf": "self_attn.out.weight"}},
                  add_after={"wkv_b": [replace(parent[0], role="x")]})
    roles = [r.role for r in rows]
    assert "wq" not in roles and roles[roles.index("wkv_b") + 1] == "x"
    assert next(r for r in rows if r.role == "wo").hf == "self_attn.out.weight"
    with pytest.raises(KeyError):
        derive(parent, drop=["no_such_row"])
    # V3.2 is V3 plus its indexer, derived the same way
    v32 = [r.role for r in FAMILIES["deepseek_v32"].rows]
    assert [r for r in v32 if r not in {x.role for x in parent}] == [
        "indexer.wq_b", "indexer.wk", "indexer.k_norm", "indexer.k_norm_bias",
        "indexer.weights_proj"]


@pytest.fixture(scope="module")
def v4_hf(tmp_path_factory):
    """A tiny FP8/FP4 V4 checkpoint upcast to transformers' names."""
    root = tmp_path_factory.mktemp("v4hf")
    make_tiny(root / "src", "v4-flash", fp8=True)
    upcast(root / "src", root / "hf", layout="hf")
    return root


def test_v4_hf_layout_reshards_by_size(v4_hf, tmp_path):
    assert validate(v4_hf / "hf").ok
    report = reshard(v4_hf / "hf", tmp_path / "out", max_shard_size=1 << 20)
    assert len(report.files) > 2 and report.layout == "bf16"
    again = validate(tmp_path / "out")
    assert again.ok and again.tensors == validate(v4_hf / "hf").tensors


def test_v4_hf_layout_quantize_and_upcast_refuse_in_one_line_before_writing(v4_hf, tmp_path):
    with pytest.raises(UnexpectedTensorError) as e:
        quantize(v4_hf / "hf", tmp_path / "q")
    assert "transformers' names" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "q").exists()
    with pytest.raises(UnexpectedTensorError, match="nothing to dequantise"):
        upcast(v4_hf / "hf", tmp_path / "u")
    assert not (tmp_path / "u").exists()


def test_make_tiny_v4_reports_what_it_shrank(tmp_path):
    report = make_tiny(tmp_path / "t", "v4-flash")
    assert report.shrunk["hidden_size"] == (4096, 128)
    assert report.shrunk["num_hidden_layers"][1] == 5
    written = json.loads((tmp_path / "t" / "config.json").read_text())
    assert all(written[k] == tiny for k, (_, tiny) in report.shrunk.items()
               if not isinstance(written[k], list))


def test_v3_upcast_hf_layout_is_the_one_it_has_and_says_so(tmp_path):
    make_tiny(tmp_path / "src", "v3", fp8=True)
    report = upcast(tmp_path / "src", tmp_path / "out", layout="hf")
    assert report.layout == "hf" and any("transformers' names" in n for n in report.notes)
    plain = upcast(tmp_path / "src", tmp_path / "plain")
    assert plain.layout == "hf" and plain.notes == []
    assert validate(tmp_path / "out").ok


# -- no module outside the registry names a family ------------------------------------------
FAMILY_NAME = re.compile(r"deepseek_v4|looks_v4|_is_v4|\bV4[A-Z]\w*|(^|\.)v4(\.|$)")
# the registry, the config readers, and the family's own modules may name it
OWN = ("families/", "configs/parse.py", "configs/layouts.py", "configs/reading.py",
       "configs/defaults.py", "configs/v4.py", "reference/deepseek_v4.py",
       "reference/v4_checkpoint.py", "reference/v4_weights.py")
# Modules still naming DeepSeek-V4, each with why (shrink this list; never grow it silently)
ALLOWED: dict[str, str] = {}


def _named(path: Path) -> list[str]:
    """Identifiers, imports and non-docstring strings of a module that name a family."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                    ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr)
                  and isinstance(n.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        text = None
        if isinstance(node, ast.ImportFrom):
            text = node.module or ""
            found += [a.name for a in node.names if FAMILY_NAME.search(a.name)]
        elif isinstance(node, ast.Name):
            text = node.id
        elif isinstance(node, ast.Attribute):
            text = node.attr
        elif isinstance(node, ast.alias):
            text = node.name
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            text = node.value
        if text and FAMILY_NAME.search(text):
            found.append(text)
    return found


def test_no_module_outside_the_registry_names_a_family():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(OWN) or rel in OWN:
            continue
        named = _named(path)
        if named and rel not in ALLOWED:
            offenders[rel] = sorted(set(named))[:5]
    assert offenders == {}
    stale = [rel for rel in ALLOWED if not _named(PACKAGE / rel)]
    assert stale == [], "these no longer name a family: remove them from ALLOWED"


def test_a_derived_family_plans_its_parents_rows_with_its_changes():
    """What adding e.g. Mistral 4 (V3's attention and experts, V2's router) takes: the
    parent's rows without the aux-loss-free bias; every command then plans from them."""
    v3 = FAMILIES["deepseek_v3"]
    demo = replace(v3, name="demo", title="Demo", parent=v3.name,
                   rows=derive(v3.rows, drop=["gate_bias"]))
    config = find_preset("v3").config
    base, plan = v3.plan(config, "fp8"), demo.plan(config, "fp8")
    assert set(base.families) - set(plan.families) == {
        "model.layers.{L}.mlp.gate.e_score_correction_bias"}
    assert set(plan.families) < set(base.families) and plan.without_mtp().architecture is demo


def test_the_config_readers_recognise_what_each_family_declares():
    from ckpt_tools.configs.layouts import ARCHITECTURE_FAMILIES, SUPPORTED_MODEL_TYPES

    for family in FAMILIES.values():
        assert set(family.model_types) <= set(SUPPORTED_MODEL_TYPES), family.name
        assert {ARCHITECTURE_FAMILIES[a] for a in family.architectures} == {family.name}
        assert family_for_raw({"model_type": family.model_types[0]}) is family
    assert set(SUPPORTED_MODEL_TYPES) == {t for f in FAMILIES.values() for t in f.model_types}
