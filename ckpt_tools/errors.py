"""The project's error types.

Every error a user can cause is a `CkptError`; its message is one line that says where
(file, tensor, field), what was expected and what was found. The classes are rooted in
stdlib types so callers that catch `ValueError` / `KeyError` / `OSError` keep working.

Each class has a stable `code` (the `error.code` of the CLI's `--json` failure document).
An error that a call argument can fix names that argument the way the caller spells it:
the library says `overwrite=True`, the CLI says `--overwrite` (see `CkptError.render`).
"""

from __future__ import annotations

from typing import Callable

ARGUMENT_PLACEHOLDER = "{argument}"


class CkptError(Exception):
    """Root of every error ckpt_tools raises on purpose.

    `CkptError(message)`, or `CkptError("...; pass {argument} to replace it",
    argument="overwrite", value=True)`: the placeholder is filled with `overwrite=True` by
    `str()` and with the matching command-line option by the CLI.
    """

    code = "error"
    # the finding (`findings.CODES`) that made a writer refuse its input, as `ckpt validate`
    # names it (`policy.refusal`); None for other errors
    finding: str | None = None

    def __init__(self, message: str = "", *, argument: str | None = None, value: object = True):
        super().__init__(message)
        self.argument = argument
        self.value = value

    def render(self, name_argument: Callable[[str, object], str] | None = None) -> str:
        """The message, with the argument spelled by `name_argument(argument, value)`."""
        message = str(self.args[0]) if self.args else self.__class__.__name__
        if self.argument is None:
            return message
        spell = name_argument or python_argument
        return message.replace(ARGUMENT_PLACEHOLDER, spell(self.argument, self.value))

    def __str__(self) -> str:  # KeyError would repr() the message; keep it plain
        return self.render()


def python_argument(name: str, value: object) -> str:
    """How a library caller passes it: `overwrite=True`, `to='hf'`."""
    return f"{name}={value!r}"


class ArgumentError(CkptError, ValueError):
    """A call argument that is malformed or conflicts with another (the CLI: a usage error)."""

    code = "usage"


class ConfigError(CkptError, ValueError):
    """A config.json (or preset) that is invalid, inconsistent or unsupported."""

    code = "config"


class UnsupportedModelError(ConfigError):
    """A config for an architecture ckpt_tools does not handle (yet)."""

    code = "unsupported_model"


class FormatError(CkptError, ValueError):
    """A safetensors file or index that breaks the format."""

    code = "format"


class MissingTensorError(CkptError, KeyError):
    """A tensor the plan or an index names that is not where it should be."""

    code = "missing_tensor"


class UnexpectedTensorError(CkptError, ValueError):
    """A tensor that the tensor plan does not expect."""

    code = "unexpected_tensor"


class ShapeMismatchError(CkptError, ValueError):
    """A tensor whose shape or dtype differs from what the plan says."""

    code = "shape_mismatch"


class OutputError(CkptError, OSError):
    """A destination that cannot be written safely (exists, locked, inside the source)."""

    code = "output"


class HubError(CkptError, OSError):
    """A download problem: repo or revision not found, unauthorised, network, checksum."""

    code = "hub"


class OfflineError(HubError):
    """The Hub is needed but offline mode (HF_HUB_OFFLINE) is on."""

    code = "offline"


class CredentialsError(CkptError, OSError):
    """An object store asked for credentials this environment does not provide (the
    user's setting: the message says which ones are looked for)."""

    code = "credentials"


class VerificationError(CkptError, ValueError):
    """Numbers that do not agree (checksums, coverage, logits)."""

    code = "verification"


class WorkerError(CkptError, RuntimeError):
    """A worker process died (killed, out of memory); the run can be resumed."""

    code = "worker"


class MissingDependencyError(CkptError, ImportError):
    """An optional extra that a requested feature needs is not installed."""

    code = "missing_dependency"


def _codes(cls: type[CkptError]) -> list[str]:
    out = [cls.code]
    for sub in cls.__subclasses__():
        out += [c for c in _codes(sub) if c not in out]
    return out


# Codes of the CLI's `{"error": {"code", "message"}}` document: one per error class above,
# then the failures that are not a CkptError. The JSON Schema lists exactly these.
CLI_ONLY_CODES = ("io", "interrupted", "internal")
ERROR_CODES: tuple[str, ...] = (*_codes(CkptError), *CLI_ONLY_CODES)
