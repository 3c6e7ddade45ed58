"""Rendering shared by the commands: JSON on stdout, text fitted to the terminal, sizes.

Text output fits the terminal: `COLUMNS` when set, the terminal's width on a terminal,
80 columns when piped. Tables shrink their widest text column and wrap its cells onto
continuation lines; any other line longer than the width is wrapped with a hanging indent.
Nothing here colours its output (so `NO_COLOR` has nothing to turn off here; the progress
bar honours it too).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import re
from pathlib import Path

import click
from pydantic import BaseModel

from ..remote.path import is_remote

DEFAULT_WIDTH = 80  # when stdout is not a terminal and COLUMNS is not set
MIN_WIDTH = 40
MIN_COLUMN = 8
PROSE_WIDTH = 24  # a text column narrows below this only when names cannot give way
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
        out += wrap(line.strip(), columns - len(indent), columns - len(indent + CONTINUATION),
                    indent, indent + CONTINUATION)
    return "\n".join(out)


# Words are never cut: a word longer than the line (a tensor name, a path) breaks only after
# a `.` or a `/`, so that what a user copies from the output is whole on a line or split
# where names are. Only a piece longer than the line itself (no tensor name has one) is cut.
_NAME_PIECE = re.compile(r"[^./]*[./]+|[^./]+$")


def _units(text: str, room: int) -> list[tuple[str, bool]]:
    """(piece, glued to the previous piece) for every word, the words longer than `room`
    split after each `.` and `/`."""
    units = []
    for word in text.split():
        pieces = _NAME_PIECE.findall(word) if len(word) > room else [word]
        if room > 0 and any(len(piece) > room for piece in pieces):
            pieces = [cut for piece in pieces
                      for cut in (piece[k:k + room] for k in range(0, len(piece), room))]
        units += [(piece, k > 0) for k, piece in enumerate(pieces)]
    return units


def _length(units: list[tuple[str, bool]]) -> int:
    return sum(len(u) for u, _ in units) + sum(not glued for _, glued in units[1:])


def _join(units: list[tuple[str, bool]]) -> str:
    return "".join(("" if glued or k == 0 else " ") + u for k, (u, glued) in enumerate(units))


def wrap(text: str, first: int, rest: int | None = None, indent: str = "",
         hang: str = "") -> list[str]:
    """`text` in lines of at most `first` (then `rest`) characters, as few lines as greedy
    wrapping needs, then with no line holding a lone word where a better break exists
    ("no effect / on inference", not "no effect on / inference"), then balanced."""
    rest = first if rest is None else rest
    units = _units(text, max(rest, 1))
    best = _breaks(units, first, rest)
    out, i = [], 0
    while i < len(units):
        j = best[i][3]
        out.append((indent if i == 0 else hang) + _join(units[i:j]))
        i = j
    return out


@functools.lru_cache(maxsize=4096)  # a table asks it for each cell at each width it tries
def leaves_lone_word(text: str, width: int) -> bool:
    """Whether `wrap(text, width)` must leave a word (or a name's piece) alone on a line
    after the first: a table column this narrow would show one."""
    units = _units(text, max(width, 1))
    return bool(units) and _breaks(units, width, width)[0][1] > 0


def _breaks(units: list[tuple[str, bool]], first: int, rest: int
            ) -> list[tuple[int, int, int, int]]:
    """For each unit i, the best wrapping of units[i:] from a line starting at i:
    (lines, lone lines, raggedness, next break)."""
    n = len(units)
    best: list[tuple[int, int, int, int]] = [(0, 0, 0, n)] * (n + 1)
    for i in range(n - 1, -1, -1):
        room, choice = first if i == 0 else rest, None
        for j in range(i + 1, n + 1):
            length = _length(units[i:j])
            if length > room and j > i + 1:
                break
            lines, lone, ragged, _ = best[j]
            glued = j < n and units[j][1]  # inside a name: fill the line, no balancing
            cost = (lines + 1, lone + (j == i + 1 and i > 0),  # a lone word after a break
                    ragged + (0 if j == n or glued else (room - length) ** 2), j)
            if choice is None or cost[:3] <= choice[:3]:
                choice = cost
        best[i] = choice
    return best


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


def _shortest(cell: str) -> int:
    """The narrowest a cell can wrap to: its longest word, a long name's longest piece."""
    return max((len(u) for u, _ in _units(cell, 0)), default=0)


def table(rows: list[list[str]], headers: list[str] | None = None, align: str | None = None,
          columns: int | None = None) -> str:
    """Aligned plain-text table; `align` is one char per column, 'l' or 'r'.

    When wider than `columns` (default: the terminal), text columns narrow and their cells
    wrap onto continuation lines until the table fits: prose (cells with spaces) down to
    PROSE_WIDTH, then names (cells without), which break only after a `.`. Words and name
    pieces are never cut, and numbers (right-aligned columns) keep their width. Where that
    is not enough, a first column of names goes on a line of its own above each row, or a
    last column of prose under each row, on the whole width.
    """
    all_rows = [[str(c) for c in r] for r in ([headers] if headers else []) + rows]
    if not all_rows:
        return ""
    columns = columns or width()
    align = align or "l" + "r" * (len(all_rows[0]) - 1)
    groups = _row_groups(all_rows, headers is not None, align, columns)
    return "\n".join(line for group in groups for line in group)


def _row_groups(all_rows: list[list[str]], has_headers: bool, align: str,
                columns: int) -> list[list[str]]:
    """The lines of each row (the header and its rule first)."""
    n = len(all_rows[0])
    widths = [max(len(r[i]) for r in all_rows) for i in range(n)]
    body = all_rows[1:] if has_headers else all_rows
    prose = [align[i] == "l" and any(" " in r[i].strip() for r in body) for i in range(n)]
    floor = [max(_shortest(r[i]) for r in all_rows) for i in range(n)]
    gap = 2
    if n > 1 and align[0] == "l" and not prose[0] and widths[0] == max(widths):
        rest = sum(widths[1:]) + gap * (n - 1)
        if widths[0] + rest > columns:
            return _names_above(all_rows, has_headers, align, columns)
    cells = [[r[i] for r in all_rows if " " in r[i].strip()] for i in range(n)]

    def narrower(i: int, least: int, lone_ok: bool) -> int | None:
        """Column i's next width below its own (not below `least` or its floor) at which
        no prose cell wraps leaving a lone word (with `lone_ok`: one less)."""
        for w in range(widths[i] - 1, max(floor[i], least) - 1, -1):
            if lone_ok or not any(len(c) > w and leaves_lone_word(c, w) for c in cells[i]):
                return w
        return None

    # prose to PROSE_WIDTH, names, prose further; a lone word only where nothing else fits
    for kind, least, lone_ok in ((True, PROSE_WIDTH, False), (False, 0, False),
                                 (True, 0, False), (True, 0, True)):
        if kind and not least and not lone_ok and n > 1 and prose[-1] and \
                sum(widths) + gap * (n - 1) > columns:
            return _prose_below(all_rows, has_headers, align, columns)
        while sum(widths) + gap * (n - 1) > columns:
            steps = {i: w for i in range(n) if align[i] == "l" and prose[i] == kind
                     and (w := narrower(i, least, lone_ok)) is not None}
            if not steps:
                break
            widest = max(steps, key=lambda k: widths[k])  # the widest first
            widths[widest] = steps[widest]
    wrapped = [[wrap(c, w) or [""] if len(c) > w else [c] for c, w in zip(r, widths)]
               for r in all_rows]
    if n > 1 and prose[-1] and any(len(line.split()) == 1 for cells in wrapped
                                   for line in cells[-1][1:]):
        return _prose_below(all_rows, has_headers, align, columns)  # rather than lone words
    groups = []
    for k, (r, cells) in enumerate(zip(all_rows, wrapped)):
        group = []
        for j in range(max(len(c) for c in cells)):
            parts = [(c[j] if j < len(c) else "") for c in cells]
            group.append("  ".join(p.ljust(w) if a == "l" else p.rjust(w)
                                   for p, w, a in zip(parts, widths, align)).rstrip())
        if has_headers and k == 0:
            group.append("  ".join("-" * w for w in widths))
        groups.append(group)
    return groups


def _names_above(all_rows: list[list[str]], has_headers: bool, align: str,
                 columns: int) -> list[list[str]]:
    """Names too long to sit beside the rest of their row: each whole on its own line
    (broken after a `.` only if wider than the terminal), the other cells under it."""
    indent = CONTINUATION
    groups = _row_groups([r[1:] for r in all_rows], has_headers, align[1:],
                         columns - len(indent))
    out = []
    for k, (r, group) in enumerate(zip(all_rows, groups)):
        name = [r[0]] if has_headers and k == 0 else wrap(r[0], columns) or [""]
        out.append(name + [indent + line for line in group])
    return out


def _prose_below(all_rows: list[list[str]], has_headers: bool, align: str,
                 columns: int) -> list[list[str]]:
    """Prose with too little room beside the rest of its row: under it, indented, on the
    whole width."""
    indent = CONTINUATION
    groups = _row_groups([r[:-1] for r in all_rows], has_headers, align[:-1], columns)
    out = []
    for k, (r, group) in enumerate(zip(all_rows, groups)):
        below = [f"{indent}{r[-1]} (under each row)"] if has_headers and k == 0 else \
            wrap(r[-1], columns - len(indent), None, indent, indent)
        out.append(group[:1] + below + group[1:] if has_headers and k == 0 else group + below)
    return out


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

# one option, one help, wherever a command reads a checkpoint's config (library: `config=`)
CONFIG = click.option(
    "--config", "config_spec", metavar="C",
    help="The config to use instead of the checkpoint's config.json (e.g. for a folder "
         "without one): a preset (ckpt presets), a config.json or a checkpoint directory.")

remote_option = click.option(
    "--remote", is_flag=True,
    help="Read a bare ORG/NAME[@REV] as the Hub repository hf://ORG/NAME[@REV] (ranged reads, "
         "nothing downloaded).")
