"""Charts of the verify, diff, diff --values and info reports (`ckpt_tools.commands.plot`,
`--plot`).

Figures are built from real reports of tiny checkpoints and presets; their content is
checked through the figure's artists and the saved SVG text, not only that a file exists.
Without matplotlib the figure tests skip and the missing-extra message is still checked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import flip_sign_on_disk

from ckpt_tools.commands.diff import diff
from ckpt_tools.errors import MissingDependencyError, OutputError
from ckpt_tools.commands.info import describe
from ckpt_tools.commands.verify import verify

REPO = Path(__file__).resolve().parent.parent
IDS = [0, 15, 3, 7, 100, 200, 5, 9]
CORRUPTED_LAYER = 2


@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not "
                                                    "installed: pip install 'ckpt-tools[plot]'")


@pytest.fixture
def good_and_bad(make_ckpt, tmp_path):
    """A tiny V3 and a copy whose layer-2 attention output projection is negated."""
    good = make_ckpt("v3")
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    flip_sign_on_disk(bad, f"model.layers.{CORRUPTED_LAYER}.self_attn.o_proj.weight")
    return good, bad


def _by_gid(fig, gid):
    found = fig.findobj(lambda artist: artist.get_gid() == gid)
    assert found, f"no artist with gid {gid!r}"
    return found


def _save_both(fig, tmp_path, stem):
    from ckpt_tools.commands.plot import save_figure

    png = save_figure(fig, tmp_path / f"{stem}.png")
    svg = save_figure(fig, tmp_path / f"{stem}.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.partial"))
    return svg.read_text()


def _tick_labels(axis) -> list[str]:
    return [t.get_text() for t in axis.get_ticklabels()]


# -- verify ----------------------------------------------------------------------------------
def test_verify_figure_shows_errors_per_layer_tolerance_and_first_divergence(mpl, good_and_bad,
                                                                             tmp_path):
    from ckpt_tools.commands.plot import verify_figure

    good, bad = good_and_bad
    report = verify(bad, good, IDS)
    assert not report.ok and report.first_divergence.layer == CORRUPTED_LAYER
    fig = verify_figure(report)
    ax = fig.axes[0]
    layers = describe(good).architecture.num_hidden_layers
    assert _tick_labels(ax.xaxis) == [str(i) for i in range(layers)] + ["output"]
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "after decoder layer" and "error" in ax.get_ylabel()
    # one line per statistic, drawn from the report's numbers
    (rel,) = _by_gid(fig, "series-max-relative-error")
    (abs_,) = _by_gid(fig, "series-max-abs-error")
    low, _ = ax.get_ylim()
    for line, errors in ((rel, [s.max_rel_error for s in report.stages]),
                         (abs_, [s.max_abs_error for s in report.stages])):
        assert errors[:CORRUPTED_LAYER] == [0.0] * CORRUPTED_LAYER  # layers before: exact
        drawn = list(line.get_ydata())
        assert drawn[CORRUPTED_LAYER:] == errors[CORRUPTED_LAYER:]
        # exact zeros sit on the floor of the log axis, visibly below every real error
        assert all(low < y < min(errors[CORRUPTED_LAYER:]) for y in drawn[:CORRUPTED_LAYER])
    (tolerance,) = _by_gid(fig, "tolerance")
    assert list(tolerance.get_ydata()) == [report.rtol, report.rtol]
    (divergence,) = _by_gid(fig, "first-divergence")
    assert list(divergence.get_xdata()) == [CORRUPTED_LAYER, CORRUPTED_LAYER]
    assert f"top-1 agreement {report.top1_agreement:.0%}" in ax.get_title()
    assert "FAILED" in ax.get_title()

    svg = _save_both(fig, tmp_path, "verify")
    assert 'id="tolerance"' in svg and 'id="first-divergence"' in svg
    assert "after decoder layer" in svg and "exactly 0" in svg
    assert f"first divergence: layer {CORRUPTED_LAYER}, position " in svg


def test_exact_agreement_is_drawn_on_the_log_axis_floor(mpl, make_ckpt, tmp_path):
    from ckpt_tools.commands.plot import verify_figure

    ckpt = make_ckpt("v2-lite")
    report = verify(ckpt, ckpt, IDS, layers=1)
    assert report.ok and report.max_abs_error == 0
    fig = verify_figure(report)
    (rel,) = _by_gid(fig, "series-max-relative-error")
    low, _ = fig.axes[0].get_ylim()
    assert 0 < low < rel.get_ydata()[0] < report.rtol  # visible, below the tolerance
    assert not fig.findobj(lambda a: a.get_gid() == "first-divergence")
    svg = _save_both(fig, tmp_path, "exact")
    assert "exactly 0" in svg and "hidden states after 1 layer(s)" in svg


# -- diff ------------------------------------------------------------------------------------
def test_diff_figure_has_one_bar_group_per_component_and_the_other_panels(mpl, tmp_path):
    from ckpt_tools.commands.plot import COMPONENTS, diff_figure

    report = diff("v2.5", "v3")
    fig = diff_figure(report)
    params, dtypes, kv = fig.axes
    groups = _tick_labels(params.xaxis)
    # neither side has V3.2's indexer nor V4's parts: no empty group for them
    keys = [key for key in COMPONENTS if key not in ("indexer", "compressor", "hyper_connection")]
    assert groups[:len(keys)] == [COMPONENTS[key][0] for key in keys]
    assert fig.findobj(lambda artist: artist.get_gid() == "component-indexer-A") == []
    assert [g.replace("\n", " ") for g in groups[len(keys):]] == [
        "total (main model)", "activated per token"]
    assert params.get_yscale() == "log" and "parameters" in params.get_ylabel()
    for side, figures in (("A", report.figures_a), ("B", report.figures_b)):
        p = figures.parameters
        for key in keys:
            (bar,) = _by_gid(fig, f"component-{key}-{side}")
            expected = p.mtp if key == "mtp" else p.by_component.get(key, 0)
            assert bar.get_height() == expected
        assert _by_gid(fig, f"component-total-{side}")[0].get_height() == p.main
        assert _by_gid(fig, f"component-activated-{side}")[0].get_height() == p.activated
    # V3 adds MTP, V2.5 has none
    with_indexer = diff_figure(diff("v3.1", "v3.2"))
    assert COMPONENTS["indexer"][0] in _tick_labels(with_indexer.axes[0].xaxis)
    assert _by_gid(with_indexer, "component-indexer-A")[0].get_height() == 0
    assert _by_gid(fig, "component-mtp-A")[0].get_height() == 0
    assert _by_gid(fig, "component-mtp-B")[0].get_height() == report.figures_b.parameters.mtp

    # bytes by dtype: both layouts of both sides, stacks adding up to each layout's total
    columns = _tick_labels(dtypes.xaxis)
    assert len(columns) == 4 and sum("as stored" in c for c in columns) == 2
    stacks = [0.0] * 4
    for container in dtypes.containers:
        for i, bar in enumerate(container):
            stacks[i] += bar.get_height()
    totals = [w.total_bytes for f in (report.figures_a, report.figures_b) for w in f.weights]
    assert np.allclose(stacks, [t / 1e9 for t in totals])
    assert "GB" in dtypes.get_ylabel()

    # KV cache per token: MLA next to plain MHA for A and B
    mla = [b.get_height() for b in _by_gid(fig, "kv-mla")]
    mha = [b.get_height() for b in _by_gid(fig, "kv-mha")]
    assert np.allclose(mla, [f.kv_cache.mla_per_token / 1e6
                             for f in (report.figures_a, report.figures_b)])
    assert all(h > m for h, m in zip(mha, mla))

    svg = _save_both(fig, tmp_path, "diff")
    for text in ("routed experts", "shared experts", "dense MLP", "KV cache per token",
                 "F8_E4M3", "A: v2.5", "B: v3"):
        assert text in svg


def test_diff_figure_of_two_tiny_checkpoints(mpl, make_ckpt, tmp_path):
    from ckpt_tools.commands.plot import diff_figure

    report = diff(make_ckpt("v2-lite"), make_ckpt("v3"))
    svg = _save_both(diff_figure(report), tmp_path, "tiny")
    assert "KB" in svg  # tiny models are drawn in a unit that fits them


# -- diff --values ---------------------------------------------------------------------------
@pytest.fixture
def fp8_and_upcast(make_ckpt, tmp_path):
    from ckpt_tools.commands.convert import upcast

    fp8 = make_ckpt("v3", fp8=True)
    upcast(fp8, tmp_path / "upcast", workers=1)
    return fp8, tmp_path / "upcast"


def test_value_diff_report_names_family_and_layer_of_each_tensor(fp8_and_upcast):
    report = diff(*fp8_and_upcast, values=True)
    by_name = {t.name: t for t in report.values.tensors}
    expert = by_name["model.layers.3.mlp.experts.5.down_proj.weight"]
    assert (expert.family, expert.layer) == ("model.layers.{L}.mlp.experts.{E}.down_proj.weight", 3)
    head = by_name["lm_head.weight"]
    assert (head.family, head.layer) == ("lm_head.weight", None)


def test_value_heat_map_is_layer_by_family_with_the_worst_tensors_named(mpl, fp8_and_upcast,
                                                                        tmp_path):
    from ckpt_tools.commands.plot import _family_label, value_diff_figure

    report = diff(*fp8_and_upcast, values=True)
    values = report.values
    fig = value_diff_figure(report)
    ax = fig.axes[0]
    layers = report.figures_a.experts.dense_layers + report.figures_a.experts.moe_layers
    assert _tick_labels(ax.yaxis) == ["global", *map(str, range(layers)), f"MTP {layers}"]
    families = _tick_labels(ax.xaxis)
    assert "experts.down_proj" in families and "q_a_proj" in families
    assert "model.embed_tokens" in families and "embed_tokens" in families  # global vs MTP
    assert ax.get_xlabel() == "tensor family" and ax.get_ylabel() == "decoder layer"

    (image,) = _by_gid(fig, "heatmap")
    cells = image.get_array()
    assert cells.shape == (len(_tick_labels(ax.yaxis)), len(families))
    # each cell is the worst relative L2 of its family in its layer, as the report says
    row = 1 + 3
    col = families.index("experts.down_proj")
    expected = max(t.rel_l2 for t in values.tensors
                   if t.layer == 3 and t.family.endswith("experts.{E}.down_proj.weight"))
    assert cells[row, col] == pytest.approx(expected)
    assert np.ma.is_masked(cells[0, families.index("q_a_proj")])  # no such global tensor

    worst = values.tensors[0]
    (marker,) = _by_gid(fig, "worst-1")
    rows = _tick_labels(ax.yaxis)
    row = rows.index(str(worst.layer) if worst.layer < layers else f"MTP {worst.layer}")
    assert marker.get_position() == (families.index(_family_label(worst.family)), row)

    svg = _save_both(fig, tmp_path, "values")
    assert f"1. {worst.name}: rel L2 {worst.rel_l2:.2e}" in svg
    assert "relative L2" in svg and 'id="heatmap"' in svg


@pytest.mark.parametrize("preset", ["longcat-flash", "v3"])
def test_value_heat_map_columns_follow_the_familys_tensor_plan(mpl, make_ckpt, preset):
    """A family is data: the columns are the tensor families in the order A's own plan lays
    a layer out (LongCat: its two attention blocks, then its two MLPs, then the MoE), not
    in alphabetical order nor in V3's."""
    from ckpt_tools.commands.plot import _family_label, value_diff_figure
    from ckpt_tools.inventory.checkpoint import Checkpoint

    a, b = make_ckpt(preset, seed=0), make_ckpt(preset, seed=1)
    report = diff(a, b, values=True)
    planned = list(dict.fromkeys(s.family for s in Checkpoint(a).plan.specs))
    present = {t.family for t in report.values.tensors}
    columns = _tick_labels(value_diff_figure(report).axes[0].xaxis)
    assert columns == [_family_label(f) for f in planned if f in present]
    assert report.values.family_order == planned
    if preset == "longcat-flash":
        assert columns.index("0.o_proj") < columns.index("1.q_a_proj") \
            < columns.index("mlps.0.gate_proj") < columns.index("experts.down_proj")


def test_value_heat_map_needs_a_report_with_values(mpl):
    from ckpt_tools.commands.plot import value_diff_figure

    with pytest.raises(ValueError, match="values=True"):
        value_diff_figure(diff("v3", "r1"))


# -- info ------------------------------------------------------------------------------------
def test_bytes_by_layer_add_up_to_the_plan():
    info = describe("v3")
    stretches = info.bytes_by_layer
    assert sum(sum(s.bytes_by_component.values()) for s in stretches) == info.plan.total_bytes
    labels = [s.label for s in stretches]
    assert labels[0] == "embedding" and labels[-2:] == ["head", "MTP 61"]
    assert labels[1:-2] == [f"layer {i}" for i in range(61)]
    assert "routed_expert" not in stretches[1].bytes_by_component  # dense layer 0
    assert stretches[-1].mtp and "mtp" in stretches[-1].bytes_by_component


def test_info_figure_stacks_bytes_by_component_per_layer(mpl, tmp_path):
    from ckpt_tools.commands.plot import info_figure

    info = describe("v3")
    fig = info_figure(info)
    ax = fig.axes[0]
    labels = _tick_labels(ax.xaxis)
    assert len(labels) == len(info.bytes_by_layer) == 1 + 61 + 1 + 1
    assert labels[:2] == ["embedding", "0"] and labels[-1] == "MTP 61"
    routed = _by_gid(fig, "component-routed_expert")
    heights = [bar.get_height() for bar in routed]
    assert heights[1] == 0 and heights[4] == pytest.approx(
        info.bytes_by_layer[4].bytes_by_component["routed_expert"] / 1e9)
    total = info.plan.total_bytes
    share = sum(s.bytes_by_component.get("routed_expert", 0) for s in info.bytes_by_layer) / total
    assert f"routed experts {share:.1%}" in [t.get_text() for t in ax.get_legend().get_texts()]
    svg = _save_both(fig, tmp_path, "info")
    assert "decoder layer" in svg and "MTP 61" in svg and "bytes (GB)" in svg


def test_info_figure_of_a_tiny_checkpoint(mpl, make_ckpt, tmp_path):
    from ckpt_tools.commands.plot import info_figure

    info = describe(make_ckpt("v2-lite", fp8=True))
    fig = info_figure(info)
    assert len(_tick_labels(fig.axes[0].xaxis)) == info.architecture.num_hidden_layers + 2
    assert "KB" in fig.axes[0].get_ylabel()
    _save_both(fig, tmp_path, "tiny-info")


# -- DeepSeek-V4 ------------------------------------------------------------------------------
def test_v4_diff_figure_draws_each_figure_row_for_both_sides(mpl, tmp_path):
    from ckpt_tools.commands.plot import diff_figure

    report = diff("v3.2", "v4-flash")
    fig = diff_figure(report)
    ax = fig.axes[0]
    assert report.figures_a is None  # V4's diff hook: its quantities instead
    assert _tick_labels(ax.yaxis) == [q.label for q in report.quantities]
    for side in ("A", "B"):
        bars = _by_gid(fig, f"figures-{side}")
        assert len(bars) == len(report.quantities)
        for bar, f in zip(bars, report.quantities):  # each row relative to its larger side
            assert bar.get_width() == pytest.approx(getattr(f, side.lower()) / max(f.a, f.b))
    _save_both(fig, tmp_path, "v4-diff")


def test_v4_value_diff_figure_and_plot_option(mpl, run_cli, tmp_path):
    from ckpt_tools.commands.convert import upcast
    from ckpt_tools.commands.tiny import make_tiny

    make_tiny(tmp_path / "fp4", "v4-flash", fp8=True, expert_dtype="fp4")
    flip_sign_on_disk(upcast(tmp_path / "fp4", tmp_path / "bf16", workers=1).destination,
                      "layers.1.attn.wq_a.weight")
    out = tmp_path / "values.svg"
    r = run_cli("diff", tmp_path / "fp4", tmp_path / "bf16", "--values", "--plot", out)
    assert r.exit_code == 0, r.output
    svg = out.read_text()
    assert "1. layers.1.attn.wq_a.weight" in svg
    report = diff(tmp_path / "fp4", tmp_path / "bf16", values=True)
    (worst,) = [t for t in report.values.tensors if t.max_abs]
    assert worst.name == "layers.1.attn.wq_a.weight" and worst.rel_l2 == pytest.approx(2.0)
    assert report.values.compared == report.headers.common


# -- files and the command line --------------------------------------------------------------
def test_saved_files_are_reproducible_and_only_png_or_svg(mpl, tmp_path):
    from ckpt_tools.commands.plot import info_figure, save_figure

    info = describe("v2-lite")
    a = save_figure(info_figure(info), tmp_path / "a.svg").read_bytes()
    b = save_figure(info_figure(info), tmp_path / "b.svg").read_bytes()
    assert a == b
    with pytest.raises(OutputError, match="expected a .png or .svg"):
        save_figure(info_figure(info), tmp_path / "c.pdf")
    assert not (tmp_path / "c.pdf").exists()


def test_plot_option_on_verify_diff_and_info(mpl, good_and_bad, run_cli, tmp_path):
    good, bad = good_and_bad
    out = tmp_path / "verify.svg"
    r = run_cli("verify", bad, "--against", good, "--tokens", "0,15,3", "--plot", out)
    assert r.exit_code == 1 and "plot: wrote" in r.stderr  # drawn when it fails, too
    assert str(out) in r.stderr  # (a note: wrapped to the terminal, silenced by -q)
    assert "first divergence" in out.read_text()

    out = tmp_path / "diff.png"
    r = run_cli("diff", "v2.5", "v3", "--json", "--plot", out)
    assert r.exit_code == 0
    assert json.loads(r.stdout)["b"]["spec"] == "v3"  # stdout stays one JSON document
    assert out.read_bytes()[:4] == b"\x89PNG"

    out = tmp_path / "values.svg"
    r = run_cli("diff", good, bad, "--values", "--plot", out)
    assert r.exit_code == 0 and "o_proj" in out.read_text()

    out = tmp_path / "info.svg"
    r = run_cli("info", good, "--plot", out)
    assert r.exit_code == 0 and "where the" in out.read_text()

    r = run_cli("info", "v3", "--plot", tmp_path / "info.pdf")
    assert r.exit_code == 2 and ".png or .svg" in r.stderr
    assert not (tmp_path / "info.pdf").exists()
    r = run_cli("info", "v3", "--plot", tmp_path / "missing" / "info.png")
    assert r.exit_code == 2 and "no such directory" in r.stderr


_WITHOUT_MATPLOTLIB = """
import sys
sys.modules["matplotlib"] = None  # as if the plot extra were not installed
from ckpt_tools.cli import main
sys.argv = ["ckpt", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("command", [["info", "v3"], ["diff", "v2.5", "v3"], ["verify", "CKPT",
                                                                            "--against", "CKPT"]])
def test_plot_without_matplotlib_is_one_line_naming_the_extra(command, make_ckpt, tmp_path):
    ckpt = str(make_ckpt("v2-lite")) if "CKPT" in command else None
    args = [ckpt if a == "CKPT" else a for a in command]
    out = tmp_path / "chart.png"
    r = subprocess.run([sys.executable, "-c", _WITHOUT_MATPLOTLIB, *args, "--plot", str(out)],
                       capture_output=True, text=True, cwd=tmp_path,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines() == [
        "Error: plotting needs matplotlib, which is not installed: pip install 'ckpt-tools[plot]'"]
    assert r.stdout == "" and not out.exists()


def test_library_without_matplotlib_raises_the_same_one_line_error(monkeypatch):
    from ckpt_tools.commands.plot import info_figure

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'ckpt-tools\[plot\]'"):
        info_figure(describe("v2-lite"))


def test_readme_pictures_are_committed_and_small():
    readme = (REPO / "README.md").read_text()
    for name in ("verify", "diff", "values", "info"):
        image = REPO / "docs" / "img" / f"{name}.png"
        assert f"](docs/img/{name}.png)" in readme
        assert image.read_bytes()[:4] == b"\x89PNG" and image.stat().st_size < 200_000
