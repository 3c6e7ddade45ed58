"""`ckpt`: thin commands over the library, with one error boundary.

Commands are imported only when invoked, so `ckpt diff` does not pay for numpy-heavy
modules it does not use, and `ckpt --help` imports none: its listing comes from
`SUMMARIES` (a test checks each equals its command's own first sentence). The
conventions every command shares (stdout/stderr, `--json` also on failure, `-q`, exit
codes) are in `conventions.py`; the boundary that turns an exception into a one-line
error, a JSON error document and an exit code is here. `CKPT_DEBUG=1` re-raises so the
traceback shows.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import textwrap
import types

import click

from ..errors import ArgumentError, CkptError
from .help_text import HelpContext, use_help_formatter

# name -> "module:attribute"; each module is one command.
COMMANDS: dict[str, str] = {
    "info": "ckpt_tools.cli.info:info",
    "presets": "ckpt_tools.cli.presets:presets",
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
# name -> the first sentence of its help, as `ckpt --help` lists it without importing it
SUMMARIES: dict[str, str] = {
    "info": "Describe a preset (v2-lite, v2, v2.5, v3, r1, v3.1, kimi-k2, moonlight, ...), a "
            "config.json (any layout: HF, transformers 5, DeepSeek inference, wrapped) or a "
            "checkpoint directory, local or remote (hf://ORG/NAME[@REV][/DIR], s3://...: its "
            "config and shard headers only).",
    "presets": "List the presets accepted wherever a config is (info, diff, make-tiny, validate "
               "--config, ...): name, model type, aliases and provenance (verbatim upstream file,"
               " or reconstructed, and from where: `ckpt info NAME` shows the source).",
    "make-tiny": "Write a real, small, deterministic checkpoint (config.json, index, shards) to "
                 "DST.",
    "schema": "JSON Schema of the config models and of every --json result (and error).",
    "diff": "Explain what changed from A to B.",
    "validate": "Check a checkpoint (HF or DeepSeek model-parallel directory, or one .safetensors"
                " file; local, or remote: hf://ORG/NAME[@REV][/DIR], s3://..., reading headers "
                "only) before anyone loads it: headers, index vs shards, the config's tensor "
                "plan, FP8 scales; with --deep every value; with --checksums every byte.",
    "upcast": "Dequantise an FP8 checkpoint (V3, R1, V3.1, V3.2, V4 with MXFP4 experts, Kimi-K2) "
              "to BF16 or F32, exactly, on any CPU.",
    "quantize": "Quantise a BF16/F32 checkpoint to DeepSeek's block FP8 (e4m3, 128x128 scales).",
    "reshard": "Rewrite SRC into DST in another layout, streaming, with a coverage proof.",
    "forward": "Run the NumPy reference decoder on CKPT (HF BF16/FP8, DeepSeek mp files, or V4 "
               "with Hub or HF names, FP8/FP4 or upcast; local or remote) and write float32 "
               "logits [T, vocab], or hidden states [T, hidden] with --layers (V4: its hc_mult "
               "streams side by side).",
    "verify": "Check that CKPT computes what a reference computes: exit 0 within tolerance, 1 "
              "when not, naming the first layer and position that diverge.",
    "download": "Download a checkpoint from the Hugging Face Hub, or only part of it, and verify "
                "it.",
}

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, as a shell reports Ctrl-C
EXIT_PIPE_CLOSED = 128 + signal.SIGPIPE  # 141, as a shell reports `yes | head -1`


class _PipeClosed(Exception):
    """stdout's reader went away; not an OSError so that click does not handle it."""


def _available(name: str) -> bool:
    module = COMMANDS[name].partition(":")[0]
    return importlib.util.find_spec(module) is not None


def _wants_json(args: list[str]) -> bool:
    return "--json" in (args[:args.index("--")] if "--" in args else args)


def _shortened(text: str, limit: int) -> str:

    return text if len(text) <= limit else textwrap.shorten(
        text, max(limit, 3), placeholder="...", break_on_hyphens=False)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _option_spelling(command: click.Command | None):
    """How an error's library argument is spelled on this command: `overwrite` ->
    `--overwrite`, `to="hf"` -> `--to hf`, `layers=(3, 5)` -> `--layers 3-5`."""

    def spell(name: str, value: object) -> str:
        for param in (command.params if command is not None else []):
            if isinstance(param, click.Option) and param.name == name:
                flag = max(param.opts, key=len)
                if param.is_flag:
                    return flag
                if isinstance(value, tuple):
                    value = "-".join(map(str, value))
                return f"{flag} {value}"
        return f"{name}={value!r}"

    return spell


class LazyGroup(click.Group):
    command_in_use: click.Command | None = None
    context_class = HelpContext  # --help wrapped as the reports are

    def list_commands(self, ctx):
        return [n for n in COMMANDS if _available(n)]

    def format_commands(self, ctx, formatter) -> None:
        """The command listing from `SUMMARIES`: `ckpt --help` imports no command."""
        names = self.list_commands(ctx)
        if names:
            limit = formatter.width - 6 - max(map(len, names))
            with formatter.section("Commands"):
                formatter.write_dl([(n, _shortened(SUMMARIES[n], limit)) for n in names])

    def get_command(self, ctx, name):
        if name not in COMMANDS or not _available(name):
            return None
        module, _, attr = COMMANDS[name].partition(":")
        command = use_help_formatter(getattr(importlib.import_module(module), attr))
        self.command_in_use = command
        return command

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise _PipeClosed() from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Run a command; every outcome becomes an exit code (and, with --json, stdout
        holds one JSON document whatever happened)."""
        args = list(sys.argv[1:] if args is None else args)
        as_json = _wants_json(args)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else EXIT_OK
        except _PipeClosed:
            code = _pipe_closed()
        except click.exceptions.Exit as e:
            code = e.exit_code
        except click.UsageError as e:
            if as_json:
                _emit_error("usage", e.format_message())
            e.show()
            code = EXIT_USAGE
        except (click.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
            code = _interrupted(as_json)
        except click.ClickException as e:
            code = _fail(as_json, "error", e.format_message(), e.exit_code)
        except CkptError as e:
            if os.environ.get("CKPT_DEBUG"):
                raise
            message = _one_line(e.render(_option_spelling(self.command_in_use)))
            usage = isinstance(e, ArgumentError)
            code = _fail(as_json, e.code, message, EXIT_USAGE if usage else EXIT_FAILURE)
        except OSError as e:
            if os.environ.get("CKPT_DEBUG"):
                raise
            where = f"{e.filename}: " if e.filename else ""
            code = _fail(as_json, "io", f"{where}{e.strerror or e}", EXIT_FAILURE)
        except Exception as e:  # a bug: say so in one line, keep the traceback behind a flag
            if os.environ.get("CKPT_DEBUG"):
                raise
            code = _fail(as_json, "internal",
                         f"internal error ({type(e).__name__}: {_one_line(str(e))}); rerun "
                         f"with CKPT_DEBUG=1 for the traceback and please report it",
                         EXIT_FAILURE)
        if standalone_mode:
            sys.exit(code)
        return code


def _interrupted(as_json: bool) -> int:
    """Ctrl-C: the run's workers are stopped already; further Ctrl-Cs while this process
    ends could only print tracebacks. Writers resume from their journal."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return _fail(as_json, "interrupted", "interrupted; rerun the same command to resume "
                 "(finished files are kept)", EXIT_INTERRUPTED)


def _emit_error(code: str, message: str) -> None:
    from ..error_report import ErrorReport
    from .render import emit_json

    try:
        emit_json(ErrorReport.of(code, _one_line(message)))
    except BrokenPipeError:
        _pipe_closed()


def _fail(as_json: bool, code: str, message: str, exit_code: int) -> int:
    if as_json:
        _emit_error(code, message)
    try:
        click.echo(f"Error: {_one_line(message)}", err=True)
    except BrokenPipeError:
        pass
    return exit_code


def _pipe_closed() -> int:
    """Nothing more can reach stdout: end quietly, and let the interpreter's final flush
    go to /dev/null instead of complaining about the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced (tests) or closed
        pass
    return EXIT_PIPE_CLOSED


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ckpt-tools", prog_name="ckpt")
def cli():
    """Tools for DeepSeek checkpoints (V2, V2.5, V3, V3.1, V3.2, V4, the derivatives
    Kimi-K2 and Moonlight, and GLM-4.7-Flash, GLM-5, Mistral 4, Mistral Large 4 and
    LongCat-Flash on DeepSeek's architecture): info, diff, validate, upcast, quantize,
    reshard, forward/verify, download, make-tiny.

    \b
    Every command: --json prints one JSON document on stdout (also on failure),
    -q silences progress and notes; exit 0 ok, 1 failure, 2 usage.
    `ckpt COMMAND --help` shows examples; `ckpt presets` lists the presets.

    \b
    Examples:
      ckpt info v3
      ckpt validate ./DeepSeek-V3 --deep
      ckpt upcast ./DeepSeek-V3 ./DeepSeek-V3-bf16
    """


PLUGINS_OFF = ("__all__", "1", "true")  # the PYDANTIC_DISABLE_PLUGINS values that turn all off
MULTIPLIES_MATRICES = {"forward", "verify"}  # the commands that call BLAS (the NumPy model)


def main() -> None:
    # pydantic looks for plugins in every installed distribution's entry points on its
    # first model build (importlib.metadata: about 0.035 s of CPU of every command's
    # start-up, bench/startup.py); the CLI uses none. A user's explicit setting wins.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    if os.environ["PYDANTIC_DISABLE_PLUGINS"] in PLUGINS_OFF:
        _no_plugin_loader()
    # NumPy's OpenBLAS starts a thread per core when numpy is imported, and each spins
    # about 0.1 s of CPU waiting for work, on the cores the workers need (a 2-worker
    # `validate --deep` or `upcast` on 2 cores: 0.13 to 0.2 s less CPU with one thread,
    # bench/scaling.py's CPU columns). Only the NumPy model multiplies matrices.
    if not MULTIPLIES_MATRICES & set(sys.argv[1:]):
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    cli(prog_name="ckpt")


def _no_plugin_loader() -> None:
    """With every plugin off, pydantic's plugin loader returns none, but importing it
    imports importlib.metadata (about 0.012 s of every command's start-up): stand in for
    it with a module that returns none (pydantic 2.x: `plugin._schema_validator` imports
    `get_plugins` from it on the first model build, and nothing else uses it)."""
    name = "pydantic.plugin._loader"
    if name not in sys.modules:
        loader = types.ModuleType(name)
        loader.get_plugins = lambda: ()
        loader._plugins = None  # never scanned
        sys.modules[name] = loader
