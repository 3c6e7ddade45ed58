"""`ckpt schema [NAME]`: the JSON Schema of every public model (`ckpt schema export` writes
them, `ckpt schema NAME` prints one)."""

from __future__ import annotations

import difflib
import json

import click

from .conventions import json_mode, standard_options
from .render import emit_json, say


def _stem(name: str) -> str | None:
    """A schema's file stem from what a user types: `validation_report`,
    `validation_report.schema.json`, `ValidationReport` or
    `ckpt_tools.inventory.findings:ValidationReport`."""
    from ..schemas import PUBLIC_MODELS

    key = name.removesuffix(".json").removesuffix(".schema")
    for stem, target in PUBLIC_MODELS.items():
        if key.lower() in (stem, target.lower(), target.partition(":")[2].lower()):
            return stem
    return None


class _SchemaGroup(click.Group):
    """Subcommands (export) first; any other word names one schema to print."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            return args[0], _show, args
        return super().resolve_command(ctx, args)


@click.group(cls=_SchemaGroup, invoke_without_command=True)
@standard_options
@click.pass_context
def schema(ctx):
    """JSON Schema of the config models and of every --json result (and error).

    Without a subcommand: list the schemas and the model each describes. With NAME
    (validation_report, ValidationReport or validation_report.schema.json): print that
    schema. `export` writes them all.

    \b
    Examples:
      ckpt schema
      ckpt schema validation_report
      ckpt schema export --dir schemas/
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..schemas import PUBLIC_MODELS

    files = {f"{stem}.schema.json": target for stem, target in sorted(PUBLIC_MODELS.items())}
    if json_mode():
        emit_json({"schemas": files})
    else:
        say("\n".join(f"{name}  {target}" for name, target in files.items()))
        say("")
        say("`ckpt schema NAME` prints one of them.")


@click.command("show", hidden=True)
@click.argument("name")
@standard_options
def _show(name):
    """Print the JSON Schema NAME."""
    from ..schemas import PUBLIC_MODELS, build_schemas

    stem = _stem(name)
    if stem is None:
        close = difflib.get_close_matches(name.lower(), list(PUBLIC_MODELS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise click.UsageError(f"{name}: no such schema; {hint}`ckpt schema` lists them",
                               ctx=click.get_current_context().parent)
    # the schema is itself one JSON document: printed as is, with or without --json
    click.echo(json.dumps(json.loads(build_schemas()[f"{stem}.schema.json"]), indent=2))


@schema.command("export")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where to write [default: the checkout's schemas/].")
@standard_options
def export(directory):
    """Write schemas/*.schema.json.

    \b
    Example:
      ckpt schema export --dir /tmp/schemas
    """
    from ..schemas import SCHEMA_DIR, export_schemas

    written = [str(p) for p in export_schemas(directory or SCHEMA_DIR)]
    if json_mode():
        emit_json({"written": written})
    else:
        say("\n".join(written))
