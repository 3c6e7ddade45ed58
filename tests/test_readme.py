"""The README's quick tour is true: every command in it runs (in tmp_path, offline, in this
process) and every phrase its comment quotes appears in what the command printed."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from click.testing import CliRunner

from ckpt_tools.cli import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def tour() -> list[tuple[str, list[str]]]:
    """(command line, quoted claims) for each line of the quick tour's code block."""
    text = README.read_text()
    section = text[text.index("## Quick tour"):]
    block = section[section.index("```bash") + len("```bash"):]
    block = block[:block.index("```")]
    lines = []
    for line in block.strip().splitlines():
        command, _, comment = line.partition("#")
        lines.append((command.strip(), re.findall(r'"([^"]+)"', comment)))
    return lines


def test_the_quick_tour_runs_and_prints_what_its_comments_say(tmp_path):
    steps = tour()
    assert len(steps) >= 8 and all(command.startswith("ckpt ") for command, _ in steps)
    assert sum(bool(claims) for _, claims in steps) == len(steps)  # every line claims something
    for command, claims in steps:
        argv = shlex.split(command.replace("/tmp/", f"{tmp_path}/"))[1:]
        r = CliRunner().invoke(cli, argv, env={"COLUMNS": "100", "HF_HUB_OFFLINE": "1"})
        printed = " ".join((r.stdout + r.stderr).split())
        assert r.exit_code == 0, f"{command}: exit {r.exit_code}\n{r.stdout}\n{r.stderr}"
        for claim in claims:
            assert " ".join(claim.split()) in printed, f"{command}: {claim!r} not in\n{printed}"


def test_the_opening_lines_and_ckpt_help_name_every_family_the_registry_holds():
    from ckpt_tools.families import FAMILIES

    opening = " ".join(README.read_text().split("\n\n")[1].split()).replace("**", "")
    helptext = " ".join(CliRunner().invoke(cli, ["--help"]).stdout.split())
    for family in FAMILIES.values():
        # DeepSeek's own versions are listed as "V2, V2.5, ..."; the others by their title
        name = family.title.removeprefix("DeepSeek-")
        assert name in opening, (family.title, opening)
        assert name in helptext, (family.title, helptext)
