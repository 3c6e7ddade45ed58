"""The JSON document `ckpt ... --json` prints when a command fails.

`{"error": {"code": "...", "message": "..."}}`: the code is one of a fixed list (one per
`CkptError` class, then `io`, `interrupted`, `internal`), so scripts can branch on it; the
message is the same one line the CLI prints on stderr.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .errors import ERROR_CODES
from .results import Result

ErrorCode = Literal[ERROR_CODES]  # the schema lists every code


class ErrorDetail(Result):
    code: ErrorCode = Field(description="Stable; see ckpt_tools.errors for each class's code")
    message: str = Field(description="One line naming file, tensor, expected and found")


class ErrorReport(Result):
    """A failed command under `--json`."""

    error: ErrorDetail

    @property  # not printed: the document is {"error": ...} alone
    def ok(self) -> bool:
        return False

    @classmethod
    def of(cls, code: str, message: str) -> "ErrorReport":
        return cls(error=ErrorDetail(code=code if code in ERROR_CODES else "error",
                                     message=message))
