"""The names `ckpt_tools` promises to pipelines: each resolves, keeps its signature (pinned
in tests/data/public_api.txt: an API change is a visible diff), is documented, and every
report states its verdict as `report.ok`, never as a method. `import ckpt_tools` is cheap.

After an intended API change: `python tests/test_public_api.py` rewrites the list.
"""

import importlib
import inspect
import subprocess
import sys
import types
from pathlib import Path

import pytest
from pydantic import BaseModel

import ckpt_tools

API_FILE = Path(__file__).parent / "data" / "public_api.txt"
CALLS = ["validate", "diff", "upcast", "quantize", "reshard", "forward", "verify", "download",
         "info"]


def describe_api() -> str:
    """One line per public name: a call's signature, a model's fields, an error's bases."""
    lines = []
    for name in sorted(n for n in ckpt_tools.__all__ if n != "__version__"):
        obj = getattr(ckpt_tools, name)
        if name.endswith("Config") and isinstance(obj, type):  # fields: the config schema
            lines.append(f"{name}: config model (schemas/deepseek_config.schema.json)")
        elif isinstance(obj, type) and issubclass(obj, BaseModel):
            fields = [*obj.model_fields, *obj.model_computed_fields]
            lines.append(f"{name}: model({', '.join(fields)})")
        elif isinstance(obj, type) and issubclass(obj, BaseException):
            bases = ", ".join(b.__name__ for b in obj.__bases__)
            lines.append(f"{name}: error({bases}) code={obj.code}")
        elif isinstance(obj, type):
            methods = sorted(m for m in vars(obj) if not m.startswith("_")
                             and callable(getattr(obj, m)))
            lines.append(f"{name}: class{inspect.signature(obj)} [{', '.join(methods)}]")
        else:
            lines.append(f"{name}{inspect.signature(obj)}")
    return "\n".join(lines) + "\n"


def test_the_api_matches_the_committed_list():
    assert describe_api() == API_FILE.read_text(), (
        "the public API changed; if intended, run `python tests/test_public_api.py` and "
        "commit tests/data/public_api.txt")


def test_the_calls_the_readme_promises_import_from_the_package():
    from ckpt_tools import (diff, download, forward, info, quantize, reshard, upcast,  # noqa
                            validate, verify)
    for name in CALLS:
        assert name in dir(ckpt_tools), name
        assert callable(getattr(ckpt_tools, name)), name


def test_a_submodule_import_never_shadows_a_call():
    for name in ckpt_tools.__all__:
        if name == "__version__":
            continue
        first = getattr(ckpt_tools, name)
        importlib.import_module(f"ckpt_tools.{name}") if importlib.util.find_spec(
            f"ckpt_tools.{name}") else None
        assert first is getattr(ckpt_tools, name), name
        assert not isinstance(first, types.ModuleType), name
    from ckpt_tools.commands.validate import ValidationReport  # the module stays importable
    assert ValidationReport is ckpt_tools.ValidationReport


def test_every_public_call_and_class_has_a_docstring():
    for name in ckpt_tools.__all__:
        if name == "__version__":
            continue
        obj = getattr(ckpt_tools, name)
        assert (inspect.getdoc(obj) or "").strip(), f"{name} has no docstring"


def test_every_report_has_ok_as_a_field_or_property():
    reports = [getattr(ckpt_tools, n) for n in ckpt_tools.__all__
               if n.endswith(("Report", "Plan", "Info", "Checkpoint")) and n != "Checkpoint"
               and isinstance(getattr(ckpt_tools, n), type)
               and issubclass(getattr(ckpt_tools, n), BaseModel)]
    assert len(reports) >= 10
    for model in reports:
        assert "ok" in model.model_fields or "ok" in model.model_computed_fields, model
        # a field or property: `if report.ok` reads a bool, never a bound method
        assert not inspect.isfunction(vars(model).get("ok")), model


def test_import_does_not_pull_numpy():
    code = "import sys, ckpt_tools; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("size, expected", [("5GB", 5 * 10**9), ("500MiB", 500 * 2**20),
                                            (123, 123), ("1.5G", 1_500_000_000)])
def test_sizes_are_accepted_everywhere_in_one_spelling(size, expected):
    assert ckpt_tools.parse_size(size) == expected


def test_a_bad_size_is_a_ckpt_error_naming_the_argument(tmp_path):
    with pytest.raises(ckpt_tools.ArgumentError, match="max_shard_size"):
        ckpt_tools.reshard_by_size(tmp_path, tmp_path / "out", "lots")
    with pytest.raises(ckpt_tools.ArgumentError, match="max_shard_size"):
        ckpt_tools.reshard_by_size(tmp_path, tmp_path / "out", -1)


if __name__ == "__main__":
    API_FILE.write_text(describe_api())
    print(f"wrote {API_FILE}")
