"""The project's error types.

Every error a user can cause is a `CkptError`; its message is one line that says where
(file, tensor, field), what was expected and what was found. The CLI prints it as
`Error: ...` and exits 1. The classes are rooted in stdlib types so callers that catch
`ValueError` / `KeyError` / `OSError` keep working.
"""

from __future__ import annotations


class CkptError(Exception):
    """Root of every error ckpt_tools raises on purpose."""

    def __str__(self) -> str:  # KeyError would repr() the message; keep it plain
        return str(self.args[0]) if self.args else self.__class__.__name__


class ConfigError(CkptError, ValueError):
    """A config.json (or preset) that is invalid, inconsistent or unsupported."""


class UnsupportedModelError(ConfigError):
    """A config for an architecture ckpt_tools does not handle (yet)."""


class FormatError(CkptError, ValueError):
    """A safetensors file or index that breaks the format."""


class MissingTensorError(CkptError, KeyError):
    """A tensor the plan or an index names that is not where it should be."""


class UnexpectedTensorError(CkptError, ValueError):
    """A tensor that the tensor plan does not expect."""


class ShapeMismatchError(CkptError, ValueError):
    """A tensor whose shape or dtype differs from what the plan says."""


class OutputError(CkptError, OSError):
    """A destination that cannot be written safely (exists, locked, inside the source)."""


class HubError(CkptError, OSError):
    """A download problem: repo or revision not found, unauthorised, network, checksum."""


class VerificationError(CkptError, ValueError):
    """Numbers that do not agree (checksums, coverage, logits)."""


class WorkerError(CkptError, RuntimeError):
    """A worker process died (killed, out of memory); the run can be resumed."""


class MissingDependencyError(CkptError, ImportError):
    """An optional extra that a requested feature needs is not installed."""
