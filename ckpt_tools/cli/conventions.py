"""What every `ckpt` command does the same way: `--json`, `-q`, progress, notes, errors.

- stdout carries the result: the report text (fitted to the terminal) or, with `--json`,
  exactly one JSON document, also on failure: `{"error": {"code", "message"}}` with a code
  from `ckpt_tools.errors.ERROR_CODES` (schemas/error_report.schema.json).
- stderr carries progress, notes and the one-line `Error: ...`.
- `-q/--quiet`: no progress and no notes; the result is unchanged.
- Exit codes: 0 ok, 1 failure (bad input, a failed check), 2 usage (a bad option or
  argument), 130 interrupted, 141 stdout closed by its reader (`ckpt info v3 | head -1`,
  quietly, as a tool killed by SIGPIPE).
- Progress is a bar by bytes on stderr, drawn only when stderr is a terminal and only
  once a run has lasted `SHOW_AFTER` seconds; `CKPT_PROGRESS=1` asks for it anyway
  (from the start, e.g. in CI logs).
"""

from __future__ import annotations

import os
import sys

import click

SHOW_AFTER = 1.0  # seconds before a progress bar appears: short runs draw nothing
_JSON, _QUIET = "ckpt.json", "ckpt.quiet"


def _store(key: str):
    def callback(ctx: click.Context, _param, value):
        ctx.meta[key] = bool(value)
        return value
    return callback


def standard_options(command):
    """`--json` and `-q/--quiet`, read back with `json_mode()` and `quiet()`."""
    command = click.option("-q", "--quiet", is_flag=True, expose_value=False, is_eager=True,
                           callback=_store(_QUIET),
                           help="No progress bar and no notes on stderr.")(command)
    return click.option("--json", "as_json", is_flag=True, expose_value=False, is_eager=True,
                        callback=_store(_JSON),
                        help="Print exactly one JSON document on stdout (also on failure: "
                             '{"error": {"code", "message"}}).')(command)


def _meta(key: str) -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.meta.get(key))


def json_mode() -> bool:
    return _meta(_JSON)


def quiet() -> bool:
    return _meta(_QUIET)


def note(text: str) -> None:
    """A remark for a person, on stderr; silenced by -q."""
    if not quiet():
        from .render import fit
        click.echo(fit(text), err=True)


def note_kept(report) -> None:
    """Name the user's files --overwrite left in a written DST (never deleted: not ours)."""
    from .render import safe_name

    kept = report.kept
    if kept:
        note(f"kept {len(kept)} file(s) in {safe_name(str(report.destination))} that are not "
             f"part of a checkpoint: {', '.join(map(safe_name, kept))}")


def progress():
    """A progress bar for a library call, or None when nothing should be drawn."""
    if quiet():
        return None
    asked = os.environ.get("CKPT_PROGRESS") == "1"
    if not (asked or sys.stderr.isatty()):
        return None
    return BarProgress(delay=0.0 if asked else SHOW_AFTER)


class BarProgress:
    """`ckpt_tools.execution.progress.Progress` drawn with tqdm (a huggingface_hub dependency, so
    always installed), imported only when a bar is drawn."""

    def __init__(self, delay: float = SHOW_AFTER) -> None:
        self.bar = None
        self.delay = delay

    def start(self, total: int, label: str) -> None:
        from tqdm import tqdm

        self.finish()
        self.bar = tqdm(total=max(total, 0), desc=label, unit="B", unit_scale=True,
                        unit_divisor=1000, delay=self.delay, file=sys.stderr,
                        leave=not sys.stderr.isatty(),  # a log keeps the final line
                        dynamic_ncols=True, mininterval=0.2)

    def advance(self, amount: int) -> None:
        if self.bar is not None:
            self.bar.update(amount)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
