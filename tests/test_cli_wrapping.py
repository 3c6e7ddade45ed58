"""Text output fitted to 80 and 100 columns: no tensor name cut inside (names break only
after a `.`, or sit on their own line), no line holding a lone word of a wrapped sentence,
no line wider than the terminal."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from ckpt_tools.cli import cli
from ckpt_tools.cli.render import table, wrap
from ckpt_tools.io.index import INDEX_FILE, read_index
from ckpt_tools.configs.sources import resolve_config
from ckpt_tools.inventory.tensor_plan import TensorPlan
from ckpt_tools.commands.tiny import make_tiny

_NUMBER = re.compile(r"[-+x]?\d[\d.,]*(e[-+]?\d+)?%?")
_LONE_WORD = re.compile(r"\s+[a-z][a-z'-]*[),.;:]?")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("wrapping")
    make_tiny(root / "fp8", "v3", fp8=True, shards=2)
    assert CliRunner().invoke(cli, ["upcast", str(root / "fp8"), str(root / "bf16")]).exit_code == 0
    names = list(read_index(root / "fp8" / INDEX_FILE).weight_map)
    families = [f for preset in ("v2.5", "v3", "v3.2")
                for f in TensorPlan(resolve_config(preset).config, "fp8").families]
    segments = {s for n in names + families for s in n.split(".")}
    return root, segments


def cut_names(text: str, segments: set[str]) -> list[str]:
    """Tokens that hold a piece of a tensor name and a piece that is no whole segment."""
    bad = []
    for token in text.split():
        token = token.strip("'\"(),:;[]")
        if "." not in token or _NUMBER.fullmatch(token):
            continue
        parts = [p for p in token.split(".") if p]
        if any(p in segments and not p.isdigit() for p in parts) and \
                not all(p in segments for p in parts):
            bad.append(token)
    return bad


def lone_words(text: str) -> list[str]:
    return [line for line in text.splitlines() if _LONE_WORD.fullmatch(line)]


def outputs(root, tmp_path) -> dict[str, list[str]]:
    return {
        "diff values": ["diff", str(root / "fp8"), str(root / "bf16"), "--values"],
        "diff presets": ["diff", "v2.5", "v3"],
        "diff v3.2": ["diff", "v3.1", "v3.2"],
        "info": ["info", str(root / "fp8")],
        "quantize": ["quantize", str(root / "bf16"), str(tmp_path / "q")],
    }


@pytest.mark.parametrize("columns", [80, 100])
def test_no_name_cut_no_lone_word_no_overflow(pair, tmp_path, columns):
    root, segments = pair
    for what, argv in outputs(root, tmp_path / str(columns)).items():
        r = CliRunner().invoke(cli, argv, env={"COLUMNS": str(columns)})
        assert r.exit_code == 0, (what, r.stderr)
        text = r.stdout + r.stderr
        assert not cut_names(text, segments), (what, cut_names(text, segments), text)
        assert not lone_words(text), (what, lone_words(text))
        wide = [ln for ln in text.splitlines() if len(ln) > columns]
        assert not wide, (what, wide)


@pytest.mark.parametrize("columns", [80, 100])
def test_validate_findings_keep_names_whole(pair, tmp_path, columns):
    root, segments = pair
    import json
    import shutil
    ckpt = tmp_path / "c"
    shutil.copytree(root / "bf16", ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["num_hidden_layers"] -= 1  # the MTP layer is then missing, its names listed
    (ckpt / "config.json").write_text(json.dumps(config))
    r = CliRunner().invoke(cli, ["validate", str(ckpt)], env={"COLUMNS": str(columns)})
    assert r.exit_code == 1 and "tensor 'model.layers." in r.stdout, r.stdout
    assert not cut_names(r.stdout, segments), cut_names(r.stdout, segments)
    assert not lone_words(r.stdout), lone_words(r.stdout)


def test_wrap_never_cuts_a_name_and_leaves_no_lone_word():
    name = "model.layers.3.mlp.shared_experts.gate_proj.weight"
    lines = wrap(name, 24)
    assert "".join(lines) == name and all(ln.endswith(".") for ln in lines[:-1])
    assert all(len(ln) <= 24 for ln in lines)
    assert wrap("no effect on inference", 15) == ["no effect", "on inference"]


def test_a_name_column_takes_what_it_needs_and_the_prose_wraps():
    name = "model.layers.3.self_attn.kv_a_proj_with_mqa.weight"
    prose = "the key and value down-projection with the rotary key part appended"
    text = table([[name, prose]], ["tensor", "meaning"], "ll", columns=80)
    assert all(len(ln) <= 80 for ln in text.splitlines())
    assert name in text and not lone_words(text)


def test_names_too_wide_for_their_row_go_on_their_own_line():
    names = [f"model.layers.{k}.mlp.experts.{k}.down_proj.weight" for k in range(3)]
    rows = [[n, "96x32", "F8_E4M3/BF16", "1.774e-03", "2.198e-03", "0.99999826"] for n in names]
    text = table(rows, ["tensor", "shape", "dtype", "max abs", "rel L2", "cosine"], "llllrr",
                 columns=80)
    assert all(n in text.splitlines() for n in names)
    assert all(len(ln) <= 80 for ln in text.splitlines())


# -- every command that prints a table ---------------------------------------------------
DIFF_PAIRS = [("v2-lite", "v2.5"), ("v3", "v3.2"), ("v3", "kimi-k2"), ("v3", "moonlight"),
              ("v3.2", "v4-flash"), ("v4-flash", "v4-pro"), ("v3", "glm-4.7-flash"),
              ("v3", "mistral-4"), ("glm-4.7-flash", "glm-5")]


def lone_words_of_wrapped_text(calls: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
    """(text, line) for each line after the first of a wrapped sentence that holds one
    word; a line continuing a name broken after its `.` or `/` is the name's, not a word."""
    found = []
    for text, lines in calls:
        if " " not in text.strip():
            continue  # a name or a number, broken only at its dots
        for before, line in zip(lines, lines[1:]):
            if len(line.split()) == 1 and not before.rstrip().endswith((".", "/")):
                found.append((text, line))
    return found


def every_family_segment() -> set[str]:
    """The pieces of every tensor family name of every preset, numbers, a glob's `*`."""
    from ckpt_tools.families import family_of
    from ckpt_tools.presets import all_presets

    segments = {"*"} | {str(k) for k in range(1000)}  # layer and expert numbers
    for preset in all_presets():
        config = resolve_config(preset).config
        plan = family_of(config).plan(config, "fp8")
        segments |= {s for f in plan.families for s in f.split(".")}
    return segments


def table_commands(root) -> dict[str, list[str]]:
    from ckpt_tools.presets import all_presets

    commands = {f"info {p}": ["info", p] for p in all_presets()}
    commands |= {f"diff {a} {b}": ["diff", a, b] for a, b in DIFF_PAIRS}
    commands["diff checkpoints"] = ["diff", str(root / "fp8"), str(root / "bf16")]
    commands["validate findings"] = ["validate", str(root / "broken")]
    return commands


@pytest.fixture(scope="module")
def broken(pair):
    """A checkpoint with findings of several kinds: a misspelt key, a missing MTP layer."""
    import json
    import shutil

    root, _ = pair
    shutil.copytree(root / "bf16", root / "broken")
    config = json.loads((root / "broken" / "config.json").read_text())
    config["num_hidden_layers"] -= 1
    config["norm_topk_prob_typo"] = True
    (root / "broken" / "config.json").write_text(json.dumps(config))
    return root


@pytest.mark.parametrize("columns", [80, 100])
def test_no_table_cell_ends_in_a_lone_word(broken, pair, monkeypatch, columns):
    """Every table the CLI prints (info on every preset, diff of families, validate's
    findings): no wrapped cell or sentence leaves a word alone, no name is cut, no line
    overflows."""
    from ckpt_tools.cli import render

    calls: list[tuple[str, list[str]]] = []
    real = render.wrap

    def recording(text, *args, **kwargs):
        lines = real(text, *args, **kwargs)
        calls.append((text, [ln.strip() for ln in lines]))
        return lines

    monkeypatch.setattr(render, "wrap", recording)
    segments = pair[1] | every_family_segment()
    wrapped = 0  # cells and sentences wrapped onto several lines: what the check looked at
    for what, argv in table_commands(broken).items():
        calls.clear()
        r = CliRunner().invoke(cli, argv, env={"COLUMNS": str(columns)})
        assert r.exit_code in (0, 1) and r.stdout, (what, r.stderr)
        text = r.stdout + r.stderr
        wrapped += sum(len(lines) > 1 for _, lines in calls)
        assert not lone_words_of_wrapped_text(calls), (what, lone_words_of_wrapped_text(calls))
        assert not cut_names(text, segments), (what, cut_names(text, segments))
        assert not [ln for ln in text.splitlines() if len(ln) > columns], what
    assert wrapped


def test_a_narrow_prose_column_takes_the_width_that_leaves_no_lone_word():
    rows = [["a.b", "no effect on inference", "x" * 28, "y" * 28]]  # 12 left for the prose
    text = table(rows, ["name", "meaning", "A", "B"], "llll", columns=80)
    assert "no effect" in text and "on inference" in text
    assert not lone_words(text) and all(len(ln) <= 80 for ln in text.splitlines())


def help_pages() -> list[str]:
    """Every command and subcommand by its full name (schema's too)."""
    import click

    from ckpt_tools.cli import COMMANDS

    ctx = click.Context(cli)
    names = []
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        names.append(name)
        if isinstance(command, click.Group):
            names += [f"{name} {sub}" for sub in command.list_commands(ctx)]
    return names


@pytest.mark.parametrize("columns", [80, 100])
def test_every_help_page_fits_and_leaves_no_lone_word(columns):
    """--help is wrapped as the reports are: an option's help or a paragraph never ends in
    a word alone on its line, and no line (examples included) is wider than the terminal."""
    for name in ["", *help_pages()]:
        r = CliRunner().invoke(cli, [*name.split(), "--help"], env={"COLUMNS": str(columns)})
        assert r.exit_code == 0, (name, r.output)
        assert not lone_words(r.output), (name, lone_words(r.output))
        assert not [ln for ln in r.output.splitlines() if len(ln) > columns], name
