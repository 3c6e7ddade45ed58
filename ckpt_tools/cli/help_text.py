"""`--help` wrapped as the reports are (`render.wrap`): an option's help or a paragraph never
ends in a word alone on its line, and names break only after a `.`. Click's own layout
(sections, the option column, `\\b` blocks kept as written) is unchanged."""

from __future__ import annotations

import click
from click.formatting import iter_rows, measure_table, term_len

from .render import wrap


def _paragraphs(text: str) -> list[tuple[int, bool, str]]:
    """(indent, kept as written, text) of each paragraph, as click splits them."""
    out: list[tuple[int, bool, str]] = []
    buf: list[str] = []
    indent: int | None = None

    def flush() -> None:
        if buf:
            raw = buf[0].strip() == "\b"
            out.append((indent or 0, raw, "\n".join(buf[1:]) if raw else " ".join(buf)))
            buf.clear()

    for line in text.expandtabs().splitlines():
        if not line:
            flush()
            indent = None
            continue
        if indent is None:
            indent = term_len(line) - term_len(line.lstrip())
            line = line.lstrip()
        buf.append(line)
    flush()
    return out


def wrap_text(text: str, width: int, indent: str = "") -> str:
    """click's `wrap_text(..., preserve_paragraphs=True)`, through `render.wrap`."""
    out = []
    for extra, raw, body in _paragraphs(text):
        lead = indent + " " * extra
        if raw:
            out.append("\n".join(lead + line for line in body.splitlines()))
        else:
            out.append("\n".join(wrap(body, width - len(lead), None, lead, lead)))
    return "\n\n".join(out)


class HelpFormatter(click.HelpFormatter):
    def write_text(self, text: str) -> None:
        self.write(wrap_text(text, self.width, " " * self.current_indent))
        self.write("\n")

    def write_dl(self, rows, col_max: int = 30, col_spacing: int = 2) -> None:
        rows = list(rows)
        widths = measure_table(rows)
        if len(widths) != 2:
            raise TypeError("Expected two columns for definition list")
        first_col = min(widths[0], col_max) + col_spacing
        for first, second in iter_rows(rows, len(widths)):
            self.write(f"{'':>{self.current_indent}}{first}")
            if not second:
                self.write("\n")
                continue
            if term_len(first) <= first_col - col_spacing:
                self.write(" " * (first_col - term_len(first)))
            else:
                self.write("\n" + " " * (first_col + self.current_indent))
            lines = wrap_text(second, max(self.width - first_col - 2, 10)).splitlines() or [""]
            self.write(f"{lines[0]}\n")
            for line in lines[1:]:
                self.write(f"{'':>{first_col + self.current_indent}}{line}\n" if line else "\n")


class HelpContext(click.Context):
    formatter_class = HelpFormatter


def use_help_formatter(command: click.Command) -> click.Command:
    """`command` (and a group's subcommands) printing --help through `HelpFormatter`."""
    command.context_class = HelpContext
    for sub in getattr(command, "commands", {}).values():
        use_help_formatter(sub)
    return command
