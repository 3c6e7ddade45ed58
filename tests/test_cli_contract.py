"""The CLI contract, the same for every command: each runs on one good and one bad input,
with and without --json, at COLUMNS 80 and 120, and with stdout closed after one line
(`| head -1`). Checked every time: the exit code (0 ok, 1 failure, 2 usage), exactly one
JSON document on stdout under --json (also on failure), no traceback, the result on stdout
and errors on stderr, no report line wider than COLUMNS, and a closed pipe ending quietly.

The one-line `Error: ...` on stderr is exempt from the width: it stays one line so that it
can be grepped, as the rest of the project promises.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fake_hub import FakeHub

from ckpt_tools.cli import COMMANDS, EXIT_PIPE_CLOSED, cli
from ckpt_tools.errors import ERROR_CODES
from ckpt_tools.io.index import INDEX_FILE, read_index
from ckpt_tools.commands.tiny import make_tiny

REPO = "org/tiny"
TOKENS = "0,1,2"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Inputs built once: BF16 and FP8 checkpoints, a truncated copy, reference logits, a
    text file named .safetensors, and a fake Hub serving the FP8 checkpoint."""
    root = tmp_path_factory.mktemp("contract")
    make_tiny(root / "bf16", "v2-lite", shards=2)
    make_tiny(root / "fp8", "v3", fp8=True, shards=2)
    shutil.copytree(root / "bf16", root / "truncated")
    shard = root / "truncated" / sorted(set(read_index(root / "bf16" / INDEX_FILE)
                                            .weight_map.values()))[-1]
    shard.write_bytes(shard.read_bytes()[:1000])
    from ckpt_tools import forward
    np.save(root / "ref.npy", forward(root / "bf16", [int(t) for t in TOKENS.split(",")]))
    (root / "notes.txt").write_text("just text")
    with FakeHub(root / "hub") as hub:
        hub.add_commit(REPO, root / "fp8")
        yield root, hub


def cases(root: Path, out: Path) -> dict[str, tuple[list, int, list, int]]:
    """command -> (good args, exit code, bad args, exit code); outputs go under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    return {
        "info": (["v3"], 0, [root / "nowhere"], 1),
        "presets": ([], 0, ["--no-such-option"], 2),
        "make-tiny": ([out / "t", "--preset", "v2-lite"], 0, [out / "u", "--preset", "nope"], 1),
        "schema": ([], 0, ["export", "--dir", root / "notes.txt"], 2),
        "diff": (["v2.5", "v3"], 0, ["v3", root / "nowhere"], 1),
        "validate": ([root / "bf16"], 0, [root / "truncated"], 1),
        "upcast": ([root / "fp8", out / "up"], 0, [root / "bf16", out / "up2"], 1),
        "quantize": ([root / "bf16", out / "q"], 0, [root / "fp8", out / "q2"], 1),
        "reshard": ([root / "bf16", out / "r", "--max-shard-size", "1MB"], 0,
                    [root / "notes.txt", out / "r2", "--max-shard-size", "1MB"], 1),
        "forward": ([root / "bf16", "--tokens", TOKENS, "--out", out / "f.npy"], 0,
                    [root / "nowhere", "--tokens", TOKENS, "--out", out / "g.npy"], 1),
        "verify": ([root / "bf16", "--logits", root / "ref.npy", "--tokens", TOKENS], 0,
                   [root / "truncated", "--logits", root / "ref.npy", "--tokens", TOKENS], 1),
        "download": ([REPO, "--dry-run", "--local-dir", out / "d"], 0,
                     ["not/a/repo", "--dry-run"], 2),
    }


def hub_env(hub, root: Path) -> dict[str, str]:
    return {"HF_ENDPOINT": hub.url, "HF_HOME": str(root / "hf-home"), "HF_TOKEN": "",
            "HF_HUB_OFFLINE": "", "NO_PROXY": "127.0.0.1,localhost",
            "HF_HUB_DISABLE_TELEMETRY": "1"}


def test_every_command_is_covered(world):
    root, _ = world
    assert set(cases(root, root)) == set(COMMANDS)


def _check(command: str, r_exit: int, stdout: str, stderr: str, want: int, as_json: bool,
           columns: int | None) -> None:
    where = f"{command}: exit {r_exit}\n--- stdout\n{stdout[-3000:]}\n--- stderr\n{stderr[-3000:]}"
    assert r_exit == want, where
    assert "Traceback" not in stdout + stderr, where
    if as_json:
        doc = json.loads(stdout)  # exactly one document, nothing around it
        if "error" in doc:
            assert want != 0 and set(doc) == {"error"}, where
            assert doc["error"]["code"] in ERROR_CODES and doc["error"]["message"], where
            assert stderr.strip().splitlines()[-1].startswith("Error: "), where
        else:
            assert doc.get("ok", True) is (want == 0), where  # a failed check: its report
    else:
        assert "Error:" not in stdout, where  # errors never on stdout
        if want == 0:
            assert stdout.strip(), where  # the result is on stdout
        elif want == 1 and not stdout.strip():
            errors = [ln for ln in stderr.splitlines() if ln.startswith("Error: ")]
            assert len(errors) == 1, where
    if columns is not None and not as_json:
        wide = [ln for ln in stdout.splitlines() + stderr.splitlines()
                if len(ln) > columns and not ln.startswith("Error: ")]
        assert not wide, f"{where}\nlines over {columns}: {wide}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_good_and_bad_input_with_and_without_json(world, tmp_path, command):
    root, hub = world
    runner = CliRunner()
    k = 0
    for which in ("good", "bad"):
        for as_json in (False, True):
            for columns in (80, 120):
                k += 1  # a fresh output directory per run: a second run must not resume
                good, good_exit, bad, bad_exit = cases(root, tmp_path / str(k))[command]
                args, want = (good, good_exit) if which == "good" else (bad, bad_exit)
                argv = [command, *map(str, args)] + (["--json"] if as_json else [])
                env = {**hub_env(hub, root), "COLUMNS": str(columns)}
                r = runner.invoke(cli, argv, env=env)
                _check(command, r.exit_code, r.stdout, r.stderr, want, as_json, columns)


class _HeadOne(io.StringIO):
    """stdout whose reader leaves after the first line, as `head -1` does."""

    def write(self, text: str) -> int:
        if "\n" in self.getvalue():
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        return super().write(text)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_closed_pipe_ends_quietly(world, tmp_path, command, monkeypatch, capsys):
    root, hub = world
    for which in ("good", "bad"):
        for as_json in (False, True):
            good, good_exit, bad, bad_exit = cases(root, tmp_path / f"{which}{as_json}")[command]
            args, want = (good, good_exit) if which == "good" else (bad, bad_exit)
            for name, value in hub_env(hub, root).items():
                monkeypatch.setenv(name, value)
            head = _HeadOne()
            monkeypatch.setattr(sys, "stdout", head)
            code = cli.main([command, *map(str, args)] + (["--json"] if as_json else []),
                            prog_name="ckpt", standalone_mode=False)
            monkeypatch.undo()
            err = capsys.readouterr().err
            assert code in (want, EXIT_PIPE_CLOSED), (command, args, code, err)
            assert "Broken pipe" not in err and "Traceback" not in err, (command, err)
            if code == EXIT_PIPE_CLOSED:
                assert "Error" not in err, (command, err)


@pytest.mark.parametrize("argv", [["info", "r1"], ["diff", "v2.5", "v3"]])
def test_real_head_minus_one(argv):
    """The issue's own examples, through a real pipe into `head -1`."""
    command = [sys.executable, "-m", "ckpt_tools", *argv]
    proc = subprocess.run(f"{' '.join(command)} | head -1; echo \"exit=${{PIPESTATUS[0]}}\" >&2",
                          shell=True, executable="/bin/bash", capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert len(proc.stdout.splitlines()) == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] in ("exit=0", f"exit={EXIT_PIPE_CLOSED}"), proc.stderr
    assert lines[:-1] == [], proc.stderr  # nothing else: no 'Broken pipe', no traceback


def test_a_pipe_closed_before_any_output_is_exit_141_and_silent():
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.run([sys.executable, "-m", "ckpt_tools", "info", "v3"], stdout=write_end,
                          stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    os.close(write_end)
    assert proc.returncode == EXIT_PIPE_CLOSED and proc.stderr == ""


@pytest.mark.parametrize("no_color", ["", "1"])
def test_no_escape_sequences_for_colour(world, tmp_path, no_color):
    """Nothing is coloured (so NO_COLOR is honoured trivially), not even a forced bar."""
    root, _ = world
    r = CliRunner().invoke(cli, ["upcast", str(root / "fp8"), str(tmp_path / "out")],
                           env={"NO_COLOR": no_color, "CKPT_PROGRESS": "1", "COLUMNS": "80"})
    assert r.exit_code == 0, r.stderr
    assert "upcast" in r.stderr and "\x1b[" not in r.stdout + r.stderr


def _commands():
    """Every command and subcommand, by its full name."""
    import click

    ctx = click.Context(cli)

    def walk(command, name):
        yield name, command
        if isinstance(command, click.Group):
            for sub in command.list_commands(ctx):
                yield from walk(command.get_command(ctx, sub), f"{name} {sub}")

    for name in COMMANDS:
        yield from walk(cli.get_command(ctx, name), name)


@pytest.mark.parametrize("name", [name for name, _ in _commands()])
def test_every_help_has_an_example_and_every_option_says_what_it_does(name):
    """As `hf` and `git` do: one or two examples in every command's --help, each a real
    invocation of that command; no option without help text."""
    r = CliRunner().invoke(cli, [*name.split(), "--help"], env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    assert "Example" in r.output, r.output
    examples = r.output.partition("Example")[2].partition("Options:")[0]
    assert f"ckpt {name}" in examples, examples
    command = dict(_commands())[name]
    import click
    silent = [p.opts for p in command.params
              if isinstance(p, click.Option) and not p.help and not p.hidden]
    assert not silent, f"{name}: options without help: {silent}"


def test_top_level_help_names_every_supported_family():
    r = CliRunner().invoke(cli, ["--help"])
    for family in ("V2", "V2.5", "V3", "V3.1", "V3.2", "V4", "Kimi-K2", "Moonlight"):
        assert family in r.output, family
    assert "Example" in r.output
