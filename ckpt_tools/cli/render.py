"""Rendering shared by the commands: JSON on stdout, text fitted to the terminal, sizes.

Text output fits the terminal: `COLUMNS` when set, the terminal's width on a terminal,
80 columns when piped. Tables shrink their widest text column and wrap its cells onto
continuation lines; any other line longer than the width is wrapped with a hanging indent.
Nothing here colours its output (so `NO_COLOR` has nothing to turn off here; the progress
bar honours it too).
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import click
from pydantic import BaseModel

from ..remote.path import is_remote

DEFAULT_WIDTH = 80  # when stdout is not a terminal and COLUMNS is not set
MIN_WIDTH = 40
MIN_COLUMN = 8
CONTINUATION = "    "  # a wrapped line's rest, indented past any list item under it


def emit_json(result: BaseModel | dict | list) -> None:
    """Exactly one JSON document on stdout."""
    if isinstance(result, BaseModel):
        text = result.model_dump_json(indent=2)
    else:
        text = json.dumps(result, indent=2, default=str)
    click.echo(text)


def width() -> int:
    """Columns available on stdout: COLUMNS, else the terminal's, else 80."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return max(int(columns), MIN_WIDTH)
    return max(shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns, MIN_WIDTH)


def fit(text: str, columns: int | None = None) -> str:
    """Every line of `text` at most `columns` wide, long lines wrapped under their indent."""
    columns = columns or width()
    out = []
    for line in text.splitlines():
        if len(line) <= columns:
            out.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip()))
        out += textwrap.wrap(line.strip(), columns, initial_indent=indent,
                             subsequent_indent=indent + CONTINUATION,
                             break_on_hyphens=False) or [""]
    return "\n".join(out)


def say(text: str = "") -> None:
    """A verdict or report text on stdout, fitted to the terminal width."""
    click.echo(fit(text))


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n} B"


def human_count(n: float) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:g}"


def table(rows: list[list[str]], headers: list[str] | None = None, align: str | None = None,
          columns: int | None = None) -> str:
    """Aligned plain-text table; `align` is one char per column, 'l' or 'r'.

    When wider than `columns` (default: the terminal), the widest left-aligned (text)
    columns narrow and their cells wrap onto continuation lines until the table fits;
    right-aligned (number) columns keep their width.
    """
    all_rows = [[str(c) for c in r] for r in ([headers] if headers else []) + rows]
    if not all_rows:
        return ""
    columns = columns or width()
    n = len(all_rows[0])
    align = align or "l" + "r" * (n - 1)
    widths = [max(len(r[i]) for r in all_rows) for i in range(n)]
    gap = 2
    # narrow the widest text column a step at a time: columns end up about equally wide
    while sum(widths) + gap * (n - 1) > columns:
        wrappable = [i for i in range(n) if align[i] == "l" and widths[i] > MIN_COLUMN]
        if not wrappable:
            break
        widths[max(wrappable, key=lambda k: widths[k])] -= 1
    lines = []
    for k, r in enumerate(all_rows):
        cells = [textwrap.wrap(c, w, break_on_hyphens=False) or [""] if len(c) > w else [c]
                 for c, w in zip(r, widths)]
        for j in range(max(len(c) for c in cells)):
            parts = [(c[j] if j < len(c) else "") for c in cells]
            line = "  ".join(p.ljust(w) if a == "l" else p.rjust(w)
                             for p, w, a in zip(parts, widths, align))
            lines.append(line.rstrip())
        if headers and k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def safe_name(name: str) -> str:
    """Tensor and file names come from files: never let them drive the terminal."""
    if name.isprintable():  # the common case, without a per-character pass
        return name
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in name)


# One option for every command that runs per-file jobs (upcast, quantize, reshard, validate).
EXECUTOR = click.option(
    "--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
    help="local: worker processes on this machine; ray: one task per file on the Ray "
         "cluster at RAY_ADDRESS (else a local Ray); paths must be on storage every node "
         "sees (a remote SRC is read by every node; an object-store DST needs local).")


def echo_nodes(nodes) -> None:
    """One line per machine when the jobs ran on more than one (e.g. Ray nodes)."""
    if len(nodes) < 2:
        return
    for n in nodes:
        rate = f", {human_bytes(n.bytes / n.seconds)}/s" if n.seconds > 0 else ""
        say(f"  node {safe_name(n.address)} {n.node[:8]}: {n.jobs} file(s), "
            f"{human_bytes(n.bytes)} in {n.seconds:.1f} s{rate}")


class SourceOrPath(click.ParamType):
    """A remote URL as typed, anything else a local `Path` (checked by the library)."""

    name = "path"

    def convert(self, value, param, ctx):
        return value if is_remote(value) else Path(value)


SOURCE_OR_PATH = SourceOrPath()

remote_option = click.option(
    "--remote", is_flag=True,
    help="Read a bare ORG/NAME[@REV] as the Hub repository hf://ORG/NAME[@REV] (ranged reads, "
         "nothing downloaded).")
