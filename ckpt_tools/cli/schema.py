"""`ckpt schema`: the JSON Schema of every public model (`ckpt schema export` writes them)."""

from __future__ import annotations

import click

from .conventions import json_mode, standard_options
from .render import emit_json, say


@click.group(invoke_without_command=True)
@standard_options
@click.pass_context
def schema(ctx):
    """JSON Schema of the config models and of every --json result (and error).

    Without a subcommand: list the schemas and the model each describes."""
    if ctx.invoked_subcommand is not None:
        return
    from ..schemas import PUBLIC_MODELS

    files = {f"{stem}.schema.json": target for stem, target in sorted(PUBLIC_MODELS.items())}
    if json_mode():
        emit_json({"schemas": files})
    else:
        say("\n".join(f"{name}  {target}" for name, target in files.items()))


@schema.command("export")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where to write [default: the checkout's schemas/].")
@standard_options
def export(directory):
    """Write schemas/*.schema.json."""
    from ..schemas import SCHEMA_DIR, export_schemas

    written = [str(p) for p in export_schemas(directory or SCHEMA_DIR)]
    if json_mode():
        emit_json({"written": written})
    else:
        say("\n".join(written))
