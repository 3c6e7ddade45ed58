"""One result contract: every report a public function returns derives from `results.Result`
and has `.ok`, and the functions' return annotations are true.

The models are found by walking the committed schemas (`ckpt_tools.schemas.PUBLIC_MODELS`)
and every model their fields reach, not by the exported names; the return annotations are
checked by calling each public function on tiny checkpoints of each architecture kind.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import pydantic
import pytest

import ckpt_tools
from ckpt_tools.configs.reading import ConfigReading
from ckpt_tools.results import Result
from ckpt_tools.schemas import CONFIG_MODELS, PUBLIC_MODELS, _load


def _models_in(annotation) -> list[type[pydantic.BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _reachable(roots) -> set[type[pydantic.BaseModel]]:
    seen: set[type[pydantic.BaseModel]] = set()
    todo = [m for root in roots for m in _models_in(root)]
    while todo:
        model = todo.pop()
        if model not in seen:
            seen.add(model)
            todo += [m for f in model.model_fields.values() for m in _models_in(f.annotation)]
    return seen


REPORTS = {stem: _load(target) for stem, target in PUBLIC_MODELS.items()
           if stem not in CONFIG_MODELS}
# How a config was read: the record a parsed config carries (filled in while reading it),
# printed inside reports; the config's, not a result
CONFIG_RECORDS = {ConfigReading}


def _has_ok(model: type[pydantic.BaseModel]) -> bool:
    return "ok" in model.model_computed_fields or "ok" in model.model_fields or isinstance(
        getattr(model, "ok", None), property)


@pytest.mark.parametrize("stem", sorted(REPORTS))
def test_every_report_in_the_schemas_is_a_result_with_ok(stem):
    report = REPORTS[stem]
    assert issubclass(report, Result), f"{report.__qualname__} does not derive from Result"
    assert _has_ok(report), f"{report.__qualname__} has no .ok"


@pytest.mark.parametrize("stem", sorted(REPORTS))
def test_every_model_a_report_holds_is_a_result(stem):
    loose = sorted(m.__qualname__ for m in _reachable([REPORTS[stem]]) - CONFIG_RECORDS
                   if not issubclass(m, Result))
    assert loose == []


def test_every_report_a_public_function_is_annotated_with_has_a_schema():
    documented = set(REPORTS.values())
    for name in ckpt_tools._EXPORTS:
        fn = getattr(ckpt_tools, name)
        if not inspect.isfunction(fn):
            continue
        for model in _models_in(typing.get_type_hints(fn).get("return")):
            if issubclass(model, Result):
                assert model in documented, f"{name} returns {model.__qualname__}: no schema"


# -- the annotations are true -------------------------------------------------------------------
# name -> (public function, call on the built checkpoints). Every public function returning
# a report is called here for V3 and V4 except download / plan_download (they need a hub:
# tests/test_download.py calls them against the fake one).
def _calls() -> dict[str, tuple[str, typing.Callable]]:
    from ckpt_tools import (
        diff, from_deepseek_mp, info, make_tiny, parse_config, quantize, read_config_file,
        reshard, reshard_by_size, to_deepseek_mp, upcast, validate, verify,
    )
    from ckpt_tools.presets import find_preset

    out = {}
    for kind in ("v3", "v4"):
        out |= {
            f"validate-{kind}": ("validate", lambda p, k=kind: validate(p[f"{k}-fp8"])),
            f"diff-presets-{kind}": ("diff", lambda p, k=kind: diff(
                "v3.2", "v4-flash" if k == "v4" else "v3.1")),
            f"diff-checkpoints-{kind}": ("diff", lambda p, k=kind: diff(
                p[f"{k}-fp8"], p[f"{k}-fp8"], values=True)),
            f"info-{kind}": ("info", lambda p, k=kind: info(p[f"{k}-fp8"])),
            f"upcast-{kind}": ("upcast", lambda p, k=kind: upcast(
                p[f"{k}-fp8"], p["out"] / f"up-{k}", workers=1)),
            f"quantize-{kind}": ("quantize", lambda p, k=kind: quantize(
                p[f"{k}-bf16"], p["out"] / f"q-{k}", workers=1)),
            f"reshard-size-{kind}": ("reshard", lambda p, k=kind: reshard(
                p[f"{k}-fp8"], p["out"] / f"sz-{k}", max_shard_size=1 << 20, workers=1)),
            f"reshard_by_size-{kind}": ("reshard_by_size", lambda p, k=kind: reshard_by_size(
                p[f"{k}-fp8"], p["out"] / f"bs-{k}", 1 << 20, workers=1)),
            f"reshard-to-mp-{kind}": ("reshard", lambda p, k=kind: reshard(
                p[f"{k}-fp8"], p["out"] / f"mp-{k}", to="deepseek-mp", model_parallel=1,
                workers=1)),
            f"reshard-to-hf-{kind}": ("reshard", lambda p, k=kind: (
                reshard(p[f"{k}-fp8"], p["out"] / f"mp2-{k}", to="deepseek-mp",
                        model_parallel=1, workers=1),
                reshard(p["out"] / f"mp2-{k}", p["out"] / f"hf-{k}", to="hf", workers=1))[1]),
            f"to_deepseek_mp-{kind}": ("to_deepseek_mp", lambda p, k=kind: to_deepseek_mp(
                p[f"{k}-fp8"], p["out"] / f"mp3-{k}", 1, workers=1)),
            f"from_deepseek_mp-{kind}": ("from_deepseek_mp", lambda p, k=kind: (
                reshard(p[f"{k}-fp8"], p["out"] / f"mp4-{k}", to="deepseek-mp",
                        model_parallel=1, workers=1),
                from_deepseek_mp(p["out"] / f"mp4-{k}", p["out"] / f"hf4-{k}", workers=1))[1]),
            f"verify-{kind}": ("verify", lambda p, k=kind: verify(p[f"{k}-fp8"], p[f"{k}-fp8"])),
            f"make_tiny-{kind}": ("make_tiny", lambda p, k=kind: make_tiny(
                p["out"] / f"t-{k}", "v4-flash" if k == "v4" else "v3")),
            f"parse_config-{kind}": ("parse_config", lambda p, k=kind: parse_config(
                find_preset("v4-flash" if k == "v4" else "v3").raw_config)),
            f"read_config_file-{kind}": ("read_config_file", lambda p, k=kind: read_config_file(
                p[f"{k}-fp8"] / "config.json")),
        }
    return out


CALLS = _calls()
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from ckpt_tools import make_tiny

    root = tmp_path_factory.mktemp("contract")
    paths: dict[str, Path] = {"out": root / "out"}
    for kind, preset in (("v3", "v3"), ("v4", "v4-flash")):
        for fp8 in (False, True):
            name = f"{kind}-{'fp8' if fp8 else 'bf16'}"
            make_tiny(root / name, preset, fp8=fp8)
            paths[name] = root / name
    return paths


@pytest.mark.parametrize("call", sorted(CALLS))
def test_public_functions_return_what_they_are_annotated_with(built, call):
    name, run = CALLS[call]
    fn = getattr(ckpt_tools, name)
    result = run(built)
    annotated = typing.get_type_hints(fn)["return"]
    assert isinstance(result, annotated), f"{name} returned {type(result).__qualname__}, " \
                                          f"annotated {annotated}"
    if isinstance(result, Result):
        assert _has_ok(type(result)) and isinstance(result.ok, bool)


def test_the_calls_cover_every_public_function_that_returns_a_report():
    called = {name for name, _ in CALLS.values()}
    for name in ckpt_tools._EXPORTS:
        fn = getattr(ckpt_tools, name)
        if not inspect.isfunction(fn) or name in ("download", "plan_download"):
            continue
        returns = _models_in(typing.get_type_hints(fn).get("return"))
        if any(issubclass(m, Result) for m in returns):  # (info and describe: one function)
            assert any(getattr(ckpt_tools, c) is fn for c in called), name
