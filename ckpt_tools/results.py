"""The one base of every result model: immutable, and unknown fields are errors.

Library functions return these; the CLI prints them (`--json` prints exactly one), and
`ckpt schema export` writes their JSON Schemas.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Result(BaseModel):
    # defer_build: validators are built on first use; building them at import was a fifth
    # of a preset diff's start-up, for models it never makes
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)
