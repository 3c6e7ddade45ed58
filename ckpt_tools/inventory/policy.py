"""Which findings stop which command: the one policy, written as data.

`ckpt validate` reports every finding with the severity `findings.CODES` fixes. Every
command that reads a checkpoint to write or compute something (upcast, quantize, reshard,
download's tensor check, the forward pass and verify) asks the same inventory
(`ckpt_tools.inventory.inspect`) and refuses the error findings, except those listed here for it:
the ones its output does not depend on. Warnings never stop a command; in particular a
float tensor stored in another float dtype than the plan's (`dtype-differs`, e.g. a BF16
`e_score_correction_bias`) is copied as it is, as DeepSeek's `inference/convert.py` does.

A refusal is a `CkptError` whose message is the finding's own message followed by its
code in brackets, so a user can look the code up in `ckpt validate`'s output.
"""

from __future__ import annotations

from typing import Literal

from ..errors import (
    CkptError,
    ConfigError,
    FormatError,
    MissingTensorError,
    ShapeMismatchError,
    UnexpectedTensorError,
)
from .findings import CODES, Finding, cause_label

Command = Literal["validate", "upcast", "quantize", "reshard", "download", "read"]

# Error findings a command tolerates, because what it produces is still right without them.
# A stale metadata.total_size misleads no writer: each writes its own index from the bytes
# it wrote (download keeps the repository's index, so it refuses one).
TOLERATED: dict[Command, frozenset[str]] = {
    "validate": frozenset(),
    "upcast": frozenset({"total-size-mismatch"}),
    "quantize": frozenset({"total-size-mismatch"}),
    # reshard plans only the MTP layer the tensors hold and says so in its notes
    "reshard": frozenset({"mtp-missing", "total-size-mismatch"}),
    "download": frozenset(),
    # the forward pass never reads the MTP layer, and reads each tensor as its header says
    # (a config whose quantization_config disagrees with the tensors changes nothing)
    "read": frozenset({"mtp-missing", "total-size-mismatch", "config-layout"}),
}

# The error type a refusal raises, by code (FormatError for every code not listed).
ERROR_TYPES: dict[str, type[CkptError]] = {
    "tensor-missing": MissingTensorError,
    "scale-missing": MissingTensorError,
    "mtp-missing": MissingTensorError,
    "tensor-not-in-shard": MissingTensorError,
    "tensor-unexpected": UnexpectedTensorError,
    "mtp-unexpected": UnexpectedTensorError,
    "scale-orphan": UnexpectedTensorError,
    "tensor-not-indexed": UnexpectedTensorError,
    "shape-mismatch": ShapeMismatchError,
    "dtype-mismatch": ShapeMismatchError,
    "scale-shape": ShapeMismatchError,
    "scale-dtype": ShapeMismatchError,
    "config-missing": ConfigError,
    "config-invalid": ConfigError,
    "config-layout": ConfigError,
    "mp-split-invalid": ConfigError,
}
assert set(ERROR_TYPES) <= set(CODES)
assert all(set(t) <= set(CODES) for t in TOLERATED.values())


def refuses(command: Command, finding: Finding) -> bool:
    return finding.severity == "error" and finding.code not in TOLERATED[command]


def refusal(command: Command, findings: list[Finding], root: str) -> CkptError | None:
    """The error `command` raises for these findings (the first refused one, counting the
    rest), or None when it may go ahead. Findings name files relative to the checkpoint
    directory `root`; the error names them from it."""
    refused = [f for f in findings if refuses(command, f)]
    if not refused:
        return None
    first = refused[0]

    def located(f: Finding) -> str:
        return f"{root}/{f.message}" if f.file and f.message.startswith(f.file) \
            else f"{root}: {f.message}"

    message = f"{located(first)} [{first.code}]"
    cause = next((f for f in findings if first.explained_by is not None
                  and f.explained_by is None and cause_label(f) == first.explained_by), None)
    if cause is not None:  # what explains the refusal comes first (findings.Findings.explain)
        message = (f"{located(cause)} [{cause.code}]; {len(refused):,} error(s) follow from it, "
                   f"the first: {first.message} [{first.code}]")
    more = (f" (and {len(refused) - 1} more error(s); `ckpt validate` lists them)"
            if len(refused) > 1 and cause is None else "")
    error = ERROR_TYPES.get(first.code, FormatError)(f"{message}{more}")
    error.finding = first.code
    return error
