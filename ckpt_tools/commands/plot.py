"""Charts of the reports people read as shapes: verify, diff, diff --values and info.

Each `*_figure` takes a typed report and returns a `matplotlib.figure.Figure`, drawn only
from numbers the report holds (nothing is recomputed, no checkpoint is opened), so a
pipeline can restyle it or save it itself; `save_figure` writes PNG or SVG by suffix.

matplotlib is the optional extra `plot` and is imported when a figure is made, never by
`import ckpt_tools.commands.plot`. Figures live on their own Agg canvas: no pyplot, no display, no
change to the caller's matplotlib backend or global state. Artists a reader (or a test)
may want to find carry a gid: "tolerance", "first-divergence", "component-<name>",
"worst-<rank>"; in SVG a gid becomes the element's id.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..cli.render import human_bytes, human_count
from ..errors import ArgumentError, MissingDependencyError, OutputError
from ..families.base import HF_EXPERT_PREFIX, HF_LAYER_PREFIX
from ..io.index import SCALE_SUFFIX

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .diff import DiffReport
    from .info import ModelInfo
    from .verify import VerifyReport

PLOT_EXTRA_INSTALL = "pip install 'ckpt-tools[plot]'"
PLOT_FORMATS = {".png": "png", ".svg": "svg"}

# Tensor-plan components in display order, with the label and colour every chart uses
# (`mtp`: the MTP module's own tensors; its decoder layer counts under the others).
COMPONENTS: dict[str, tuple[str, str]] = {
    "embedding": ("embedding", "#8c564b"),
    "attention": ("attention", "#1f77b4"),
    "indexer": ("DSA indexer", "#17becf"),  # V3.2's lightning indexer
    "compressor": ("KV compressor", "#bcbd22"),  # V4's CSA / HCA compressors
    "hyper_connection": ("hyper-connections", "#aec7e8"),  # V4's residual-stream mixing
    "dense_mlp": ("dense MLP", "#ff7f0e"),
    "routed_expert": ("routed experts", "#2ca02c"),
    "shared_expert": ("shared experts", "#98df8a"),
    "router": ("router", "#d62728"),
    "norm": ("norms", "#7f7f7f"),
    "mtp": ("MTP", "#9467bd"),
    "lm_head": ("head", "#e377c2"),
}
_A_COLOR, _B_COLOR = "#4c72b0", "#dd8452"
_DTYPE_COLORS = {"BF16": "#4c72b0", "F8_E4M3": "#55a868", "F32": "#c44e52"}
_WORST_ANNOTATED = 5  # tensors named on the value heat map


def require_matplotlib():
    """The matplotlib module, or a one-line error naming the extra to install."""
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError(
            f"plotting needs matplotlib, which is not installed: {PLOT_EXTRA_INSTALL}") from None
    return matplotlib


def _figure(width: float, height: float) -> "Figure":
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: "Figure", path: str | Path) -> Path:
    """Write `fig` as PNG or SVG (by suffix), under a temporary name and then renamed, so
    `path` is never a half-written file. SVG keeps its text as text (searchable, small)."""
    path = Path(path)
    fmt = PLOT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise OutputError(f"{path}: expected a .png or .svg file name, found suffix "
                          f"{path.suffix or '(none)'!r}")
    matplotlib = require_matplotlib()
    tmp = path.with_name(path.name + ".partial")
    # no dates or random ids in the file: the same report gives the same bytes
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    try:
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "ckpt-tools"}):
            fig.savefig(tmp, format=fmt, dpi=100, metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _short(text: str, limit: int = 40) -> str:
    text = Path(text).name if ("/" in text or os.sep in text) else text
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


def _byte_unit(largest: float) -> tuple[str, float]:
    """An axis unit that keeps the largest value readable (tiny models are kilobytes)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if largest >= size:
            return unit, size
    return "B", 1.0


# -- verify ----------------------------------------------------------------------------------
def verify_figure(report: "VerifyReport") -> "Figure":
    """Per-layer max abs and max relative error on a log axis, the relative tolerance as a
    line, the first diverging layer marked, top-1 / top-5 agreement in the title."""
    stages = report.stages
    fig = _figure(max(6.0, 0.45 * len(stages) + 3), 4.2)
    ax = fig.add_subplot()
    x = list(range(len(stages)))
    series = {"max abs error": [s.max_abs_error for s in stages],
              "max relative error": [s.max_rel_error for s in stages]}
    finite = [v for vs in series.values() for v in vs if v > 0 and math.isfinite(v)]
    # log axes cannot show 0 (exact agreement) or inf/NaN: draw them at the floor / ceiling
    floor = min(finite + [report.rtol]) / 100
    ceiling = max(finite + [report.rtol]) * 10
    for (label, values), marker, color in zip(series.items(), ("o", "s"), (_A_COLOR, _B_COLOR)):
        shown = [floor if v == 0 else v if math.isfinite(v) else ceiling for v in values]
        ax.plot(x, shown, marker=marker, label=label, color=color,
                gid=f"series-{label.replace(' ', '-')}")
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, ceiling * 5)  # room for the legend above the curves
    # the tolerance bounds the relative error (up to atol / scale on near-zero elements)
    tolerance = ax.axhline(report.rtol, color=_B_COLOR, linestyle="--", gid="tolerance",
                           label=f"tolerance of the relative error: rtol {report.rtol:g} "
                                 f"(+ atol {report.atol:g})")
    tolerance.set_zorder(1)
    if any(v == 0 for vs in series.values() for v in vs):
        ax.text(0.01, 0.02, "points on the bottom edge: exactly 0", transform=ax.transAxes,
                fontsize=8, color="#555555")
    d = report.first_divergence
    if d is not None:
        at = next(i for i, s in enumerate(stages) if s.stage == d.stage)
        ax.axvline(at, color="#c44e52", alpha=0.6, linewidth=6, gid="first-divergence",
                   label=f"first divergence: {d.stage}, position {d.position}")
    ax.set_xticks(x, [str(s.layer) if s.layer is not None else "output" for s in stages])
    ax.set_xlabel("after decoder layer" if report.reference_kind == "checkpoint"
                  else "compared tensor")
    ax.set_ylabel("error (log scale)")
    ax.grid(True, which="major", axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    verdict = "OK" if report.ok else "FAILED"
    if report.top1_agreement is not None:
        agreement = (f"logits top-1 agreement {report.top1_agreement:.0%}, "
                     f"top-5 {report.top5_agreement:.0%}")
    else:
        agreement = f"hidden states after {report.layers} layer(s)"
    ax.set_title(f"verify {_short(report.candidate)} vs {_short(report.reference)}: {verdict}\n"
                 f"{agreement} over {len(report.tokens)} tokens", fontsize=10)
    return fig


# -- diff ------------------------------------------------------------------------------------
def _bar_labels(ax, bars, values, fmt) -> None:
    for bar, value in zip(bars, values):
        centre = bar.get_x() + bar.get_width() / 2
        # a zero bar is invisible (and has no place on a log axis): label the axis floor
        where, coords = ((centre, 0), ax.get_xaxis_transform()) if value == 0 else \
            ((centre, bar.get_height()), "data")
        ax.annotate(fmt(value), where, xycoords=coords, xytext=(0, 2),
                    textcoords="offset points", ha="center", va="bottom", fontsize=7,
                    rotation=90 if bar.get_width() < 0.3 else 0)


def diff_figure(report: "DiffReport") -> "Figure":
    """Parameters by component for A and B (grouped bars, totals and activated per token
    marked), bytes by dtype in both layouts, and KV cache per token, MLA vs plain MHA; a
    report whose family explained the comparison itself: its headline quantities."""
    fa, fb = report.figures_a, report.figures_b
    if fa is None or fb is None:
        return _quantities_chart(report)
    name_a, name_b = _short(report.a.label, 24), _short(report.b.label, 24)
    fig = _figure(12, 8)
    grid = fig.add_gridspec(2, 2)
    ax = fig.add_subplot(grid[0, :])

    def count(f, key):
        return f.parameters.mtp if key == "mtp" else f.parameters.by_component.get(key, 0)

    # a component neither side has (V3.2's indexer in a V3 diff) gets no empty group
    keys = [key for key in COMPONENTS if count(fa, key) or count(fb, key)]

    def by_component(f):
        return [count(f, key) for key in keys]

    groups = [COMPONENTS[key][0] for key in keys]
    totals = ["total\n(main model)", "activated\nper token"]
    values_a = by_component(fa) + [fa.parameters.main, fa.parameters.activated]
    values_b = by_component(fb) + [fb.parameters.main, fb.parameters.activated]
    x = [float(i) for i in range(len(groups))] + [len(groups) + 0.5 + i for i in range(2)]
    width = 0.38
    # zero on a log axis: a bar of height 0 is simply absent, its label says "0"
    for side, values, color, offset in (("A", values_a, _A_COLOR, -width / 2),
                                        ("B", values_b, _B_COLOR, width / 2)):
        name = name_a if side == "A" else name_b
        bars = ax.bar([v + offset for v in x], values, width, color=color, label=f"{side}: {name}")
        for bar, key in zip(bars, [*keys, "total", "activated"]):
            bar.set_gid(f"component-{key}-{side}")
            if key in ("total", "activated"):
                bar.set_hatch("//" if key == "activated" else "")
                bar.set_edgecolor("black")
        _bar_labels(ax, bars, values, human_count)
    ax.axvline(len(groups) - 0.25, color="#999999", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylim(bottom=max(1, min(v for v in values_a + values_b if v > 0) / 3),
                top=max(values_a + values_b) * 20)
    ax.set_xticks(x, groups + totals, fontsize=8)
    ax.set_ylabel("parameters (log scale)")
    ax.set_title("parameters by component (main model; MTP modules incl. their embedding/head "
                 "copies)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")

    # bytes by dtype, both layouts of both sides (the native one first, marked)
    ax = fig.add_subplot(grid[1, 0])
    columns = []
    for side, name, f in (("A", name_a, fa), ("B", name_b, fb)):
        for w in f.weights:
            stored = " (as stored)" if w.native else ""
            columns.append((f"{side} {name}\n{w.layout.upper()}{stored}", w.bytes_by_dtype))
    dtypes = sorted({d for _, by in columns for d in by})
    unit, size = _byte_unit(max(sum(by.values()) for _, by in columns))
    bottoms = [0.0] * len(columns)
    for dtype in dtypes:
        heights = [by.get(dtype, 0) / size for _, by in columns]
        ax.bar(range(len(columns)), heights, 0.6, bottom=bottoms, label=dtype,
               color=_DTYPE_COLORS.get(dtype), gid=f"dtype-{dtype}")
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    for i, (_, by) in enumerate(columns):
        ax.annotate(human_bytes(sum(by.values())), (i, bottoms[i]), xytext=(0, 2),
                    textcoords="offset points", ha="center", fontsize=7)
    ax.set_xticks(range(len(columns)), [c for c, _ in columns], fontsize=7)
    ax.set_ylabel(f"weight bytes ({unit})")
    ax.set_ylim(top=max(bottoms) * 1.15 or 1)
    ax.set_title("weight bytes by dtype, FP8 and BF16 layouts", fontsize=10)
    ax.legend(fontsize=8)

    # KV cache per token
    ax = fig.add_subplot(grid[1, 1])
    kv = {"MLA (latent + rope key)": [fa.kv_cache.mla_per_token, fb.kv_cache.mla_per_token],
          "plain MHA of that shape": [fa.kv_cache.mha_per_token, fb.kv_cache.mha_per_token]}
    unit, size = _byte_unit(max(max(v) for v in kv.values()))
    for k, ((label, values), color) in enumerate(zip(kv.items(), ("#55a868", "#8172b3"))):
        xs = [i + (k - 0.5) * width for i in range(2)]
        bars = ax.bar(xs, [v / size for v in values], width, label=label, color=color,
                      gid=f"kv-{'mla' if k == 0 else 'mha'}")
        _bar_labels(ax, bars, values, human_bytes)
    ax.set_xticks(range(2), [f"A {name_a}\n{fa.kv_cache.layers} layers, "
                             f"MHA/MLA {fa.kv_cache.mha_over_mla:.0f}x",
                             f"B {name_b}\n{fb.kv_cache.layers} layers, "
                             f"MHA/MLA {fb.kv_cache.mha_over_mla:.0f}x"], fontsize=7)
    ax.set_ylabel(f"KV cache per token, all layers ({unit}, BF16)")
    ax.set_ylim(top=max(max(v) for v in kv.values()) / size * 1.25)
    ax.set_title("KV cache per token", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"ckpt diff {_short(report.a.spec)} {_short(report.b.spec)}: "
                 f"{report.a.title or report.a.label} vs {report.b.title or report.b.label}",
                 fontsize=11)
    return fig


def _quantities_chart(report: "DiffReport") -> "Figure":
    """A report's headline quantities (parameters, bytes, KV cache, FLOPs) as paired bars per
    row, each row on its own scale (B relative to A), the values written on the bars."""
    rows = [q for q in report.quantities if q.headline and q.a is not None and q.b is not None]
    fig = _figure(10, 0.42 * len(rows) + 1.8)
    ax = fig.add_subplot()
    y = list(range(len(rows)))
    height = 0.38
    for side, color, offset in (("A", _A_COLOR, -height / 2), ("B", _B_COLOR, height / 2)):
        values = [getattr(r, side.lower()) for r in rows]
        peaks = [max(r.a, r.b) or 1 for r in rows]
        label = f"{side}: {_short(getattr(report, side.lower()).label, 24)}"
        bars = ax.barh([v + offset for v in y], [v / p for v, p in zip(values, peaks)], height,
                       color=color, label=label, gid=f"figures-{side}")
        fmt = {"bytes": human_bytes, "flops": lambda v: f"{v / 1e9:,.2f} G"}
        for bar, row, value in zip(bars, rows, values):
            text = fmt.get(row.unit, human_count)(value)
            ax.annotate(text, (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                        xytext=(2, 0), textcoords="offset points", va="center", fontsize=7)
    ax.set_yticks(y, [r.label for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.3)
    ax.set_xticks([])
    ax.set_xlabel("each row relative to its larger side")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"ckpt diff {_short(report.a.spec)} {_short(report.b.spec)}", fontsize=10)
    return fig


# -- diff --values ---------------------------------------------------------------------------
def _family_label(family: str) -> str:
    scale = family.endswith(SCALE_SUFFIX)
    label = family.removesuffix(SCALE_SUFFIX).removeprefix(HF_LAYER_PREFIX)  # globals keep model.
    label = label.replace(HF_EXPERT_PREFIX, "experts.").removesuffix(".weight")
    for prefix in ("self_attn.", "mlp."):
        label = label.removeprefix(prefix)
    return label + (" scale" if scale else "")


def value_diff_figure(report: "DiffReport") -> "Figure":
    """Heat map of relative L2 error, layer x tensor family (the worst tensor of each cell),
    with the worst tensors numbered on the map and named below it."""
    values = report.values
    if values is None:
        raise ArgumentError("this DiffReport has no value comparison: build it with "
                         "diff(a, b, values=True)")
    require_matplotlib()
    import numpy as np
    from matplotlib.colors import LogNorm

    figures = report.figures_a  # None (a family with its own comparison): no MTP labels
    main_layers = (figures.experts.dense_layers + figures.experts.moe_layers if figures
                   else math.inf)
    # the family's own plan order (a layer's sections as its registry entry lays them out)
    order = {f: i for i, f in enumerate(values.family_order)}
    families = sorted({t.family or "other" for t in values.tensors},
                      key=lambda f: (order.get(f, len(order)), f))
    layers = sorted({t.layer for t in values.tensors if t.layer is not None})
    has_globals = any(t.layer is None for t in values.tensors)
    rows = ([None] if has_globals else []) + layers
    row_of, col_of = {r: i for i, r in enumerate(rows)}, {f: j for j, f in enumerate(families)}
    cell = np.full((len(rows), len(families)), np.nan)  # NaN: no tensor of that family there
    non_finite = np.zeros(cell.shape, bool)
    for t in values.tensors:
        i, j = row_of[t.layer], col_of[t.family or "other"]
        if t.rel_l2 is None:
            non_finite[i, j] = True
        elif not t.rel_l2 <= cell[i, j]:  # max, NaN-aware
            cell[i, j] = t.rel_l2

    fig = _figure(max(7.0, 0.42 * len(families) + 3), 0.32 * len(rows) + 3.8)
    ax = fig.add_subplot()
    positive = cell[np.isfinite(cell) & (cell > 0)]
    cmap = require_matplotlib().colormaps["viridis"].with_extremes(under="white",
                                                                   bad="#dddddd")
    if positive.size:
        low, high = float(positive.min()), float(positive.max())
        norm = LogNorm(low, high if high > low else low * 10)
        shown = np.where(cell == 0, low / 10, cell)  # identical: below the scale -> white
        image = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, aspect="auto",
                          interpolation="nearest", gid="heatmap")
        bar = fig.colorbar(image, ax=ax, extend="min", pad=0.01)
        bar.set_label("relative L2 ||a - b|| / ||a||")
        if high < 10 * low:  # less than a decade: log ticks would be unlabelled or cluttered
            bar.set_ticks(np.geomspace(low, high, 5), labels=[
                f"{v:.2e}" for v in np.geomspace(low, high, 5)], minor=False)
            bar.ax.yaxis.set_minor_formatter("")
    else:  # every compared tensor is identical (the title says so): all white
        ax.imshow(np.ma.masked_invalid(np.where(cell == 0, -1.0, cell)), cmap=cmap,
                  vmin=0, vmax=1, aspect="auto", interpolation="nearest", gid="heatmap")
    for i, j in zip(*np.nonzero(non_finite)):
        ax.text(j, i, "NaN", ha="center", va="center", fontsize=7, color="#c44e52",
                fontweight="bold")

    worst = [t for t in values.tensors if t.max_abs != 0][:_WORST_ANNOTATED]
    ranks: dict[tuple[int, int], list[str]] = {}
    for rank, t in enumerate(worst, start=1):
        ranks.setdefault((row_of[t.layer], col_of[t.family or "other"]), []).append(str(rank))
    for (i, j), numbers in ranks.items():
        ax.text(j, i, ",".join(numbers), ha="center", va="center", fontsize=7,
                color="#c44e52", fontweight="bold", gid=f"worst-{numbers[0]}",
                bbox={"boxstyle": "circle,pad=0.15", "facecolor": "white", "alpha": 0.8,
                      "linewidth": 0})

    def row_label(layer):
        if layer is None:
            return "global"
        return f"MTP {layer}" if layer >= main_layers else str(layer)

    ax.set_yticks(range(len(rows)), [row_label(r) for r in rows], fontsize=8)
    ax.set_xticks(range(len(families)),
                  [_family_label(f) if f != "other" else "other" for f in families],
                  rotation=60, ha="right", rotation_mode="anchor", fontsize=7)
    ax.set_ylabel("decoder layer")
    ax.set_xlabel("tensor family")

    def metric(x, fmt):
        return "non-finite" if x is None else format(x, fmt)

    lines = [f"{rank}. {t.name}: rel L2 {metric(t.rel_l2, '.2e')}, max abs "
             f"{metric(t.max_abs, '.2e')}" for rank, t in enumerate(worst, start=1)]
    ax.set_title(f"relative L2 per layer and tensor family: {_short(report.a.spec)} vs "
                 f"{_short(report.b.spec)}\n{values.compared:,} tensors compared, "
                 f"{values.identical:,} identical, max {values.max_rel_l2:.2e}"
                 f"\ncell: the worst tensor of that family in that layer; white: identical, "
                 f"grey: no such tensor", fontsize=10)
    if lines:
        fig.text(0.01, 0.0, "worst tensors:\n" + "\n".join(lines), fontsize=7,
                 va="bottom", family="monospace", gid="worst-list")
        reserved = 0.02 + 0.022 * len(lines)
        fig.get_layout_engine().set(rect=(0, reserved, 1, 1 - reserved))
    return fig


# -- info ------------------------------------------------------------------------------------
def info_figure(info: "ModelInfo") -> "Figure":
    """Where the bytes live: one bar per layer (embedding and head apart, MTP after),
    stacked by component, in the layout the config describes."""
    stretches = info.bytes_by_layer
    # every component the model has (one the chart has no colour for still counts: the
    # bars add up to the model's bytes, as `ckpt info` states them)
    keys = [*COMPONENTS, *sorted({k for s in stretches for k in s.bytes_by_component}
                                 - set(COMPONENTS))]
    totals = {key: sum(s.bytes_by_component.get(key, 0) for s in stretches) for key in keys}
    total = sum(totals.values())
    unit, size = _byte_unit(max(sum(s.bytes_by_component.values()) for s in stretches))
    fig = _figure(max(7.0, 0.16 * len(stretches) + 4), 4.8)
    ax = fig.add_subplot()
    x = range(len(stretches))
    bottoms = [0.0] * len(stretches)
    for key in keys:
        label, color = COMPONENTS.get(key, (key.replace("_", " "), None))
        heights = [s.bytes_by_component.get(key, 0) / size for s in stretches]
        if not any(heights):
            continue
        share = totals[key] / total if total else 0.0
        ax.bar(x, heights, 0.8, bottom=bottoms, color=color, gid=f"component-{key}",
               label=f"{label} {share:.1%}" if share >= 0.001 else f"{label} <0.1%")
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    labels = [s.label.removeprefix("layer ") for s in stretches]
    many = len(stretches) > 24
    ax.set_xticks(x, labels, rotation=90 if many else 0, fontsize=6 if many else 8)
    ax.set_xlim(-0.6, len(stretches) - 0.4)
    ax.set_xlabel("decoder layer (embedding first, head and MTP last)")
    ax.set_ylabel(f"bytes ({unit})")
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    ax.set_ylim(top=max(bottoms) * 1.35 if max(bottoms) else 1)
    a = info.architecture
    ax.set_title(f"{info.title or _short(info.source)}: where the {human_bytes(total)} live "
                 f"({info.plan.layout.upper()} layout, {a.num_hidden_layers} layers"
                 + (f" + {a.mtp_layers} MTP" if a.mtp_layers else "") + ")", fontsize=10)
    return fig


__all__ = ["verify_figure", "diff_figure", "value_diff_figure", "info_figure", "save_figure",
           "require_matplotlib", "PLOT_EXTRA_INSTALL", "COMPONENTS"]
