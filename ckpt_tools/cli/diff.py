"""`ckpt diff A B`: what changed between two DeepSeek architectures or checkpoints.

The report is built once (`ckpt_tools.commands.diff.diff`) and rendered three ways: an aligned
terminal report with the headline numbers first, `--markdown` for an issue or a model
card, `--json` (one document, the DiffReport schema).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import click

from ..commands.config_diff import CONCERN_TITLES
from ..remote.stores import remote_spec
from .conventions import json_mode, progress, standard_options
from .plotting import plot_option, save_plot
from .render import emit_json, human_bytes, human_count, remote_option, safe_name, table, wrap
from .render import width as terminal_width

TOP_TENSORS = 20  # worst tensors shown by the terminal/markdown value table


@dataclass
class Block:
    """One titled part of the report: optional text lines, then an optional table."""

    title: str
    lines: list[str] = field(default_factory=list)
    headers: list[str] | None = None
    rows: list[list[str]] = field(default_factory=list)
    align: str | None = None
    stacked: bool = False  # terminal: long A/B cells one under the other
    level: int = 2


# -- formatting ------------------------------------------------------------------------------
def _num(value, unit: str, *, short: bool = False) -> str:
    if value is None:
        return "-"
    if unit == "params":
        return human_count(value) if short and value else f"{value:,}"
    if unit == "bytes":
        return f"{value:,} B" if value < 100_000 else human_bytes(value)
    if unit == "flops":
        return f"{value / 1e9:,.2f} GFLOP"
    if unit == "scale":
        return f"{value:.6f}"
    if unit == "ratio":
        return f"{value:.2f}"
    return f"{value:,}"


def _ratio(q) -> str:
    if q.a == q.b:
        return "="
    return f"{q.ratio:.2f}x" if q.ratio is not None else "-"


def _value(v) -> str:
    if v is None:
        return "(absent)"
    if isinstance(v, dict) and v.get("quant_method"):  # quantization_config, added or removed
        block = "x".join(map(str, v.get("weight_block_size", [])))
        scale = f", scale_fmt {v['scale_fmt']}" if v.get("scale_fmt") else ""
        return f"{v['quant_method']} {v.get('fmt', '')}, {block} blocks{scale}"
    return v if isinstance(v, str) else json.dumps(v, separators=(", ", ": "))


def _family_side(s) -> str:
    if s is None:
        return "-"
    dtype = f"{s.dtype}+scale" if s.scale_shape else s.dtype
    return f"{'x'.join(map(str, s.shape))} {dtype} ({s.count:,})"


_KIND = {
    "only_a": "only in A", "only_b": "only in B", "shape": "shape differs",
    "dtype": "dtype differs", "fp8_vs_float": "quantised vs float (compared by value)",
}
_SECTIONS = {
    "structure": "Structure", "parameters": "Parameters", "components": "Parameters by component",
    "weights": "Weight bytes by layout and dtype", "kv_cache": "KV cache (BF16)",
    "attention": "Attention softmax scale", "compute": "Compute",
    "sparse_attention": "DeepSeek Sparse Attention (lightning indexer)", "experts": "Experts",
}
_ROUTING = [("topk_method", "method"), ("scoring", "scoring"), ("group_selection", "groups"),
            ("bias", "bias"), ("selection", "selection"), ("weights", "weights from"),
            ("normalisation", "normalisation"), ("scaling", "scaling")]


# -- the report as blocks --------------------------------------------------------------------
def _blocks(r, markdown: bool) -> list[Block]:
    blocks = []

    def side(s, tag):
        attention = f": {s.attention}" if s.attention else ""
        return (f"{tag}: {s.title or s.label}  [{s.spec}: {s.kind}, {s.model_type}, "
                f"{s.layout}]{attention}")

    def notes(s, tag):
        rd = s.reading
        out = [f"{tag} read as {rd.architecture} ({rd.recognised_by}), {rd.layout} layout"]
        if rd.defaulted:
            out.append(f"{tag} absent keys filled from {rd.loader}: "
                       + ", ".join(f"{k}={v}" for k, v in rd.defaulted.items()))
        out += [f"{tag} leaves out: {x}" for x in rd.leaves_out]
        if rd.quantization_scheme:
            out.append(f"{tag} quantized with {rd.quantization_scheme}")
        out += [f"{tag} warning: {w}" for w in rd.warnings]
        out += [f"{tag} inconsistent: {w}" for w in rd.inconsistencies]
        return out

    blocks.append(Block(f"ckpt diff {r.a.spec} {r.b.spec}",
                        [side(r.a, "A"), side(r.b, "B"), r.summary], level=1))
    reading = notes(r.a, "A") + notes(r.b, "B")
    if any(" read as " not in line for line in reading):
        blocks.append(Block("How the inputs were read", reading))
    heads = [q for q in r.quantities if q.headline]
    blocks.append(Block("Headline", headers=["", "A", "B", "B/A"], align="lrrr", rows=[
        [q.label, _num(q.a, q.unit, short=True), _num(q.b, q.unit, short=True), _ratio(q)]
        for q in heads]))
    # what the family explains in words (an architecture of its own against another)
    blocks += [Block(e.topic[0].upper() + e.topic[1:], [e.text]) for e in r.explanations]

    # 1. config fields by concern
    n = len(r.config_changes)
    blocks.append(Block(f"Config fields ({n} differ)" if n else "Config fields: identical"))
    for concern, title in CONCERN_TITLES.items():
        rows = [[f"`{c.field}`" if markdown else c.field, _value(c.a), _value(c.b),
                 c.meaning or ""] for c in r.config_changes if c.concern == concern]
        if rows:
            blocks.append(Block(title, headers=["field", "A", "B", "meaning"],
                                rows=rows, align="llll", level=3))

    # 2. derived quantities; when the shapes are the same, only the figures that differ
    only_changed = r.verdict != "different_architecture"
    derived = []
    for section, title in _SECTIONS.items():
        rows = [[q.label, _num(q.a, q.unit), _num(q.b, q.unit), _ratio(q)]
                for q in r.quantities if q.section == section and not (only_changed and q.a == q.b)]
        if rows:
            derived.append(Block(title, headers=["", "A", "B", "B/A"], rows=rows, align="lrrr",
                                 level=3))
    if derived:
        title = ("Derived quantities (ratios B/A"
                 + (", only those that differ)" if only_changed else ")"))
        note = []
        if r.figures_a is not None and r.figures_b is not None:
            if any(b.title == _SECTIONS["compute"] for b in derived):
                note.append(f"FLOPs: {r.figures_a.flops.convention}.")
            dsa = r.figures_b.sparse_attention or r.figures_a.sparse_attention
            if dsa is not None:
                note.append(f"Sparse attention FLOPs: {dsa.convention}.")
        blocks.append(Block(title, note))
        blocks += derived
    else:
        blocks.append(Block("Derived quantities", ["identical on both sides"]))

    # 3. routing, per side
    ra, rb = r.routing or (None, None)
    if ra is None or rb is None:
        pass  # the family said it in words (explanations)
    elif ra == rb:
        rows = [[label, str(getattr(ra, key))] for key, label in _ROUTING]
        rows += [["note", note] for note in ra.notes]
        blocks.append(Block("Routing (same on both sides)", headers=["", "A = B"], rows=rows,
                            align="ll"))
    else:
        rows = [[label, str(getattr(ra, key)), str(getattr(rb, key))] for key, label in _ROUTING]
        rows += [["notes", "; ".join(ra.notes) or "-", "; ".join(rb.notes) or "-"]]
        blocks.append(Block("Routing", headers=["", "A", "B"], rows=rows, align="lll",
                            stacked=True))

    # 4. tensor plan by family
    p = r.plan
    intro = [f"A: {p.tensors_a:,} tensors in {p.families_a} families ({p.layout_a}); "
             f"B: {p.tensors_b:,} tensors in {p.families_b} families ({p.layout_b}); "
             f"{p.unchanged} families unchanged. Cells: shape dtype (tensors)."]
    if p.dtype_policy_a != p.dtype_policy_b:
        def policy(d):
            return ", ".join(f"{k} {n}" for k, n in d.items())
        intro.append(f"dtype policy, families per dtype: A {policy(p.dtype_policy_a)}; "
                     f"B {policy(p.dtype_policy_b)}")
    rows = []
    for c in p.changes:
        what = c.status if c.status != "changed" else ", ".join(c.changes)
        row = [f"`{c.family}`" if markdown else c.family, what, _family_side(c.a),
               _family_side(c.b)]
        if markdown:
            row += [c.a.layers if c.a else "-", c.b.layers if c.b else "-"]
        rows.append(row)
    if rows:
        headers = ["family", "change", "A", "B"] + (["layers A", "layers B"] if markdown else [])
        blocks.append(Block("Tensor plan by family", intro, headers, rows,
                            "llll" + "ll" * markdown))
    else:
        blocks.append(Block("Tensor plan by family", [f"identical: {p.tensors_a:,} tensors in "
                                                      f"{p.families_a} families"]))

    # 5. checkpoints
    return blocks + _tensor_blocks(r)


def _tensor_blocks(r) -> list[Block]:
    """The tensor sections of two checkpoints (headers, then values), any architecture."""
    blocks = []
    h = r.headers
    if h is not None:
        intro = [f"A: {h.tensors_a:,} tensors ({h.layout_a}), B: {h.tensors_b:,} ({h.layout_b}), "
                 f"{h.common:,} in both; " + ("names and shapes match"
                                             if h.matching else "names, shapes or dtypes differ")]
        layout_groups = [g for g in h.groups if g.kind == "fp8_vs_float"]
        if layout_groups:  # expected when the layouts differ: one line, not a table
            n = sum(g.count for g in layout_groups)
            dt_a, dt_b = layout_groups[0].a.split()[-1], layout_groups[0].b.split()[-1]
            intro.append(f"{n:,} weights in {len(layout_groups)} families are {dt_a} in A and "
                         f"{dt_b} in B (compared by their dequantised values)")
        for n, this in ((h.scales_only_a, "A"), (h.scales_only_b, "B")):
            if n:
                intro.append(f"{n:,} scales only in {this} (the other side stores those "
                             f"weights unquantised): not compared")
        rows = [[_KIND[g.kind], g.family, f"{g.count:,}", g.a or "-", g.b or "-"]
                for g in h.groups if g.kind != "fp8_vs_float"]
        blocks.append(Block("Checkpoint tensors (headers)", intro,
                            ["", "family", "tensors", "A", "B"] if rows else None, rows, "llrll"))
    v = r.values
    if v is not None:
        skipped = ", ".join(f"{k}: {n:,}" for k, n in v.skipped.items()) or "none"
        intro = [f"{v.compared:,} tensors compared ({human_bytes(v.bytes_read)} read), "
                 f"{v.identical:,} identical; max relative L2 {v.max_rel_l2:.3e}, "
                 f"max abs {v.max_abs:.3e}, min cosine {v.min_cosine:.8f}; skipped: {skipped}"]
        if v.non_finite:
            intro.append(f"{v.non_finite:,} tensors with NaN/inf on one side only (listed first)")
        worst = [t for t in v.tensors if t.max_abs != 0][:TOP_TENSORS]

        def metric(x, fmt):
            return "non-finite" if x is None else format(x, fmt)

        rows = [[t.name, "x".join(map(str, t.shape)), f"{t.dtype_a}/{t.dtype_b}",
                 metric(t.max_abs, ".3e"), metric(t.rel_l2, ".3e"), metric(t.cosine, ".8f")]
                for t in worst]
        if not worst:
            intro.append("all compared tensors are identical")
        blocks.append(Block("Values, worst first", intro,
                            ["tensor", "shape", "dtype A/B", "max abs", "rel L2", "cosine"]
                            if rows else None, rows, "llllrr"))
    return blocks


# -- renderers -------------------------------------------------------------------------------
def render_text(r, columns: int | None = None) -> str:
    """The terminal report, every line at most `columns` (default: the terminal) wide."""
    columns = columns or terminal_width()
    out = []
    for b in _blocks(r, markdown=False):
        if b.level == 1:
            for line in b.lines:
                out += wrap(safe_name(line), columns, columns - 2, "", "  ")
            continue
        indent = "  " * (b.level - 2)
        out += ["", indent + b.title, indent + "-" * len(b.title)]
        for line in b.lines:
            out += wrap(safe_name(line), columns - len(indent), columns - len(indent) - 2,
                        indent, indent + "  ")
        rows = [[safe_name(str(c)) for c in row] for row in b.rows]
        if b.stacked and rows:
            width = max(len(row[0]) for row in rows)
            for row in rows:
                for k, (tag, cell) in enumerate(zip(("A", "B"), row[1:])):
                    label = row[0] if k == 0 else ""
                    head = f"{indent}{label:<{width}}  {tag}: "
                    out += wrap(cell, columns - len(head), None, head, " " * len(head)) or [head]
        elif rows:
            out += [indent + line for line in
                    table(rows, b.headers, b.align, columns - len(indent)).splitlines()]
    return "\n".join(out)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(r) -> str:
    out = []
    for b in _blocks(r, markdown=True):
        if b.level == 1:
            out += [f"## {b.title}", "", *(f"- {line}" for line in b.lines[:2]), "",
                    f"**{b.lines[2]}**"]
            continue
        out += ["", "#" * (b.level + 1) + " " + b.title, ""]
        out += [line + "  " for line in b.lines]
        if b.rows:
            if b.lines:
                out.append("")
            headers = b.headers or [""] * len(b.rows[0])
            align = b.align or "l" * len(headers)
            out.append("| " + " | ".join(_md_cell(h) for h in headers) + " |")
            out.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
    text = "\n".join(out)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text + "\n"


@click.command()
@click.argument("a")
@click.argument("b")
@click.option("--markdown", is_flag=True, help="Print markdown (for an issue or a model card).")
@click.option("--values", is_flag=True,
              help="Compare every common tensor numerically (two checkpoint directories).")
@remote_option
@click.option("--context", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Tokens attended to, for attention FLOPs and the KV-cache total.")
@plot_option
@standard_options
def diff(a: str, b: str, markdown: bool, values: bool, remote: bool, context: int, plot_path):
    """Explain what changed from A to B. Each is a preset (v2-lite, v2, v2.5, v3, r1,
    v3.1, ...), a config.json or a checkpoint directory. Ratios are B / A.

    \b
    Examples:
      ckpt diff v2.5 v3
      ckpt diff v3.1 v3.2 --markdown
      ckpt diff ./V3-fp8 ./V3-bf16 --values
    """
    if json_mode() and markdown:
        raise click.UsageError("--json and --markdown are mutually exclusive")
    from ..commands.diff import diff as run_diff

    report = run_diff(remote_spec(a, remote), remote_spec(b, remote), values=values,
                      context=context, progress=progress() if values else None)
    if json_mode():
        emit_json(report)
    else:
        click.echo(render_markdown(report) if markdown else render_text(report))
    save_plot(plot_path, "value_diff_figure" if values else "diff_figure", report)
