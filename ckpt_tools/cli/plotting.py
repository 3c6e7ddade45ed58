"""`--plot FILE` for the commands whose reports read best as charts (verify, diff, info).

The option is checked while the command line is parsed, before any work: a suffix other
than .png/.svg or a missing directory is a usage error (exit 2), a missing matplotlib a
one-line error naming the extra (exit 1), so a long verify never runs only to fail at the
end.
"""

from __future__ import annotations

from pathlib import Path

import click

from .conventions import note


def _check(_ctx, _param, value: Path | None) -> Path | None:
    if value is None:
        return None
    from ..commands.plot import PLOT_FORMATS, require_matplotlib

    if value.suffix.lower() not in PLOT_FORMATS:
        raise click.BadParameter(f"expected a file name ending in .png or .svg, got {value}")
    if not value.parent.is_dir():
        raise click.BadParameter(f"{value.parent}: no such directory")
    require_matplotlib()
    return value


plot_option = click.option(
    "--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), callback=_check,
    help="Also draw the report as a chart: FILE.png or FILE.svg "
         "(needs the plot extra: pip install 'ckpt-tools[plot]').")


def save_plot(path: Path | None, figure: str, report) -> None:
    """Draw `report` with `ckpt_tools.commands.plot.<figure>` and write it to `path` (if given)."""
    if path is None:
        return
    from ..commands import plot

    plot.save_figure(getattr(plot, figure)(report), path)
    note(f"plot: wrote {path}")
