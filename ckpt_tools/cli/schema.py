"""`ckpt schema export`: write the JSON Schema of every public model."""

from __future__ import annotations

import click

from ..schemas import SCHEMA_DIR, export_schemas


@click.group()
def schema():
    """JSON Schema of the config models and of every --json result."""


@schema.command("export")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=str(SCHEMA_DIR),
              show_default=True)
def export(directory):
    """Write schemas/*.schema.json."""
    for path in export_schemas(directory):
        click.echo(str(path))
