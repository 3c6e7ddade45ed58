"""Rendering helpers shared by the commands: JSON on stdout, tables, sizes, a progress bar."""

from __future__ import annotations

import json
import sys
import time

import click
from pydantic import BaseModel


def emit_json(result: BaseModel | dict | list) -> None:
    """Exactly one JSON document on stdout."""
    if isinstance(result, BaseModel):
        text = result.model_dump_json(indent=2)
    else:
        text = json.dumps(result, indent=2, default=str)
    click.echo(text)


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


def table(rows: list[list[str]], headers: list[str] | None = None, align: str | None = None) -> str:
    """Aligned plain-text table; `align` is one char per column, 'l' or 'r'."""
    all_rows = ([headers] if headers else []) + rows
    if not all_rows:
        return ""
    widths = [max(len(str(r[i])) for r in all_rows) for i in range(len(all_rows[0]))]
    align = align or "l" + "r" * (len(widths) - 1)
    lines = []
    for k, r in enumerate(all_rows):
        cells = [str(c).ljust(w) if a == "l" else str(c).rjust(w) for c, w, a in zip(r, widths, align)]
        lines.append("  ".join(cells).rstrip())
        if headers and k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def safe_name(name: str) -> str:
    """Tensor and file names come from files: never let them drive the terminal."""
    if name.isprintable():  # the common case, without a per-character pass
        return name
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in name)


class StderrProgress:
    """Bytes, rate and ETA on stderr; redraws in place on a terminal, a line per 10% otherwise."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()

    def start(self, total: int, label: str) -> None:
        self.total, self.label, self.done = max(total, 0), label, 0
        self.t0 = self.last_draw = time.monotonic()
        self.next_pct = 10

    def advance(self, amount: int) -> None:
        self.done += amount
        now = time.monotonic()
        pct = 100 * self.done / self.total if self.total else 100
        if self.tty and now - self.last_draw > 0.2:
            self._draw(end="\r")
            self.last_draw = now
        elif not self.tty and pct >= self.next_pct:
            self._draw(end="\n")
            self.next_pct = (int(pct) // 10 + 1) * 10

    def _draw(self, end: str) -> None:
        if not self.enabled:
            return
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        pct = 100 * self.done / self.total if self.total else 100.0
        eta_s = f"{eta:,.0f}s" if eta != float("inf") else "?"
        click.echo(f"{self.label}: {pct:5.1f}% {human_bytes(self.done)} / {human_bytes(self.total)} "
                   f"{human_bytes(rate)}/s ETA {eta_s}   ", err=True, nl=False)
        click.echo(end, err=True, nl=False)

    def finish(self) -> None:
        if self.enabled and self.tty:
            self._draw(end="\n")


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
        click.echo(f"  node {safe_name(n.address)} {n.node[:8]}: {n.jobs} file(s), "
                   f"{human_bytes(n.bytes)} in {n.seconds:.1f} s{rate}")


class SourceParam(click.ParamType):
    """A checkpoint directory that must exist, or a remote URL (hf://, s3://, ...) that is
    checked when it is opened."""

    name = "source"

    def convert(self, value, param, ctx):
        from ..remote_path import is_remote

        if is_remote(value) or (ctx is not None and ctx.params.get("remote")):
            return value
        return click.Path(exists=True, file_okay=False).convert(value, param, ctx)


SOURCE = SourceParam()


class SourceOrPath(click.ParamType):
    """A remote URL as typed, anything else a local `Path` (checked by the library)."""

    name = "path"

    def convert(self, value, param, ctx):
        from pathlib import Path

        from ..remote_path import is_remote

        return value if is_remote(value) else Path(value)


SOURCE_OR_PATH = SourceOrPath()

remote_option = click.option(
    "--remote", is_flag=True,
    help="Read a bare ORG/NAME[@REV] as the Hub repository hf://ORG/NAME[@REV] (ranged reads, "
         "nothing downloaded).")
