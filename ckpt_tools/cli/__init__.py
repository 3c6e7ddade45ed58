"""`ckpt`: thin commands over the library, with one error boundary.

Commands are imported only when invoked, so `ckpt diff` does not pay for numpy-heavy
modules it does not use. Errors: a `CkptError` (or an OS error such as a full disk)
prints `Error: <one line>` and exits 1; usage errors exit 2; `CKPT_DEBUG=1` re-raises so
the traceback shows.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from ..errors import CkptError

# name -> "module:attribute"; each module is one command.
COMMANDS: dict[str, str] = {
    "info": "ckpt_tools.cli.info:info",
    "make-tiny": "ckpt_tools.cli.make_tiny:make_tiny",
    "schema": "ckpt_tools.cli.schema:schema",
    "diff": "ckpt_tools.cli.diff:diff",
    "validate": "ckpt_tools.cli.validate:validate",
    "upcast": "ckpt_tools.cli.convert:upcast",
    "quantize": "ckpt_tools.cli.convert:quantize",
    "reshard": "ckpt_tools.cli.reshard:reshard",
    "forward": "ckpt_tools.cli.verify:forward",
    "verify": "ckpt_tools.cli.verify:verify",
    "download": "ckpt_tools.cli.download:download",
}


def _available(name: str) -> bool:
    module = COMMANDS[name].partition(":")[0]
    return importlib.util.find_spec(module) is not None


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [n for n in COMMANDS if _available(n)]

    def get_command(self, ctx, name):
        if name not in COMMANDS or not _available(name):
            return None
        module, _, attr = COMMANDS[name].partition(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except CkptError as e:
            if os.environ.get("CKPT_DEBUG"):
                raise
            raise click.ClickException(_one_line(str(e))) from None
        except OSError as e:
            if os.environ.get("CKPT_DEBUG"):
                raise
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{where}{e.strerror or e}") from None
        except KeyboardInterrupt:
            click.echo("Interrupted; rerun the same command to resume.", err=True)
            sys.exit(130)
        except Exception as e:  # a bug: say so in one line, keep the traceback behind a flag
            if os.environ.get("CKPT_DEBUG"):
                raise
            raise click.ClickException(
                f"internal error ({type(e).__name__}: {_one_line(str(e))}); "
                f"rerun with CKPT_DEBUG=1 for the traceback and please report it") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ckpt-tools", prog_name="ckpt")
def cli():
    """Tools for DeepSeek V2 / V2.5 / V3 checkpoints: info, diff, validate, upcast,
    quantize, reshard, forward/verify, download."""


def main() -> None:
    cli(prog_name="ckpt")
