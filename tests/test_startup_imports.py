"""Commands that touch no tensor data import nothing heavy (start-up, issue 26).

Each case runs the CLI in a fresh interpreter and lists the heavy modules it imported: the
start-up figure itself is bench/startup.py's (no timing assertions here).
"""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from ckpt_tools.cli import COMMANDS, SUMMARIES, cli

HEAVY = ("numpy", "ml_dtypes", "huggingface_hub", "fsspec", "torch", "ray")
# Local work needs neither the Hub glue nor thread or process pools (remote header
# prefetch, the executors)
REMOTE_ONLY = ("ckpt_tools.io.hub", "concurrent.futures")
PROBE = r"""
import contextlib, io, json, sys
from ckpt_tools.cli import cli
with contextlib.redirect_stdout(io.StringIO()):
    code = cli.main(sys.argv[1:], standalone_mode=False)
print(json.dumps([code, sorted(m for m in sys.modules if m.split(".")[0] in HEAVY
                               or m in REMOTE_ONLY)]))
"""


def _imported(*args: str) -> tuple[int, list[str]]:
    out = subprocess.run([sys.executable, "-c",
                          f"HEAVY = {HEAVY!r}\nREMOTE_ONLY = {REMOTE_ONLY!r}\n{PROBE}", *args],
                         capture_output=True, text=True, check=True).stdout
    code, heavy = json.loads(out.splitlines()[-1])
    return code, sorted({m if m in REMOTE_ONLY else m.split(".")[0] for m in heavy})


@pytest.mark.parametrize("args", [("--help",), ("info", "v3"), ("info", "v2-lite", "--json"),
                                  ("validate", "--help"), ("upcast", "--help"),
                                  ("reshard", "--help"), ("quantize", "--help"),
                                  ("diff", "--help"), ("download", "--help"),
                                  ("make-tiny", "--help"), ("forward", "--help"),
                                  ("verify", "--help")])
def test_light_commands_import_nothing_heavy(args):
    code, heavy = _imported(*args)
    assert code == 0
    assert heavy == []


def test_header_only_validate_imports_no_numpy(make_ckpt):
    """A header-only validate reads JSON headers: numpy and ml_dtypes stay out, and so
    does the remote machinery for a local directory."""
    code, heavy = _imported("validate", str(make_ckpt("v3", fp8=True)))
    assert code == 0
    assert heavy == []


def test_help_lists_every_command_by_its_own_first_sentence():
    """`ckpt --help` shows SUMMARIES without importing commands: each must be what its
    command says of itself."""
    ctx = click.Context(cli)
    for name in COMMANDS:
        assert cli.get_command(ctx, name).get_short_help_str(10**6) == SUMMARIES[name], name
    assert set(SUMMARIES) == set(COMMANDS)


PLUGIN_PROBE = r"""
import atexit, sys
def report():
    loader = sys.modules.get("pydantic.plugin._loader")
    print("scanned" if loader is not None and loader._plugins is not None else "not scanned",
          "importlib.metadata" in sys.modules)
atexit.register(report)
sys.argv = ["ckpt", "info", "v3", "--json"]
from ckpt_tools.cli import main
main()
"""


@pytest.mark.parametrize("setting,expected", [(None, "not scanned False"),
                                              ("1", "not scanned False"), ("", "scanned True")])
def test_cli_skips_pydantic_plugin_scan_unless_the_user_chose(setting, expected):
    """pydantic's plugin scan reads every installed distribution's entry points on the
    first model build; `ckpt` turns it off, unless PYDANTIC_DISABLE_PLUGINS is set, and
    then does not import importlib.metadata for it either."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    if setting is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = setting
    out = subprocess.run([sys.executable, "-c", PLUGIN_PROBE], capture_output=True, text=True,
                         env=env, check=True).stdout
    assert out.splitlines()[-1] == expected


READERS = ("ckpt_tools.io.source", "ckpt_tools.io.safetensors_io", "ckpt_tools.remote.stores",
           "ckpt_tools.execution.parallel")
MODULES_PROBE = r"""
import contextlib, io, json, sys
from ckpt_tools.cli import cli
with contextlib.redirect_stdout(io.StringIO()):
    code = cli.main(sys.argv[1:], standalone_mode=False)
print(json.dumps([code, sorted(sys.modules)]))
"""


@pytest.mark.parametrize("args", [("info", "v3"), ("info", "v4-flash", "--json"),
                                  ("upcast", "--help"), ("quantize", "--help")])
def test_info_of_a_preset_and_help_import_no_reader(args):
    """A preset is a config and nothing else, a command's help is text: no safetensors
    reader, no remote client, no executor is imported for them."""
    out = subprocess.run([sys.executable, "-c", MODULES_PROBE, *args], capture_output=True,
                         text=True, check=True).stdout
    code, modules = json.loads(out.splitlines()[-1])
    assert code == 0
    assert [m for m in READERS if m in modules] == []


BLAS_PROBE = r"""
import os, sys
import ckpt_tools.cli as c
c.cli = lambda **kw: print(os.environ.get("OPENBLAS_NUM_THREADS"))  # what a command sees
sys.argv = ["ckpt", *sys.argv[1:]]
c.main()
"""


@pytest.mark.parametrize("args,setting,expected", [
    (("validate", "DIR", "--deep"), None, "1"), (("upcast", "A", "B"), None, "1"),
    (("forward", "DIR"), None, "None"), (("verify", "A", "--against", "B"), None, "None"),
    (("upcast", "A", "B"), "4", "4")])
def test_only_the_numpy_model_gets_blas_threads(args, setting, expected):
    """OpenBLAS's threads spin on the workers' cores when numpy is imported; `ckpt` keeps
    one unless the command multiplies matrices (forward, verify) or the user chose."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if setting is not None:
        env["OPENBLAS_NUM_THREADS"] = setting
    out = subprocess.run([sys.executable, "-c", BLAS_PROBE, *args], capture_output=True,
                         text=True, env=env, check=True).stdout
    assert out.splitlines()[-1] == expected
