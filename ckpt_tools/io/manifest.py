"""Checksum manifests: size and SHA-256 of every file of a checkpoint.

`ckpt validate --write-manifest` and `ckpt download` write one; `ckpt validate
--checksums` checks against one offline. Stored as `ckpt-manifest.json` by default.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import Field, ValidationError

from ..errors import FormatError
from .index import MANIFEST_FILE, write_json_atomic  # noqa: F401  (MANIFEST_FILE: API)
from ..results import Result

HASH_CHUNK = 8 << 20


class ManifestEntry(Result):
    path: str = Field(description="Relative to the checkpoint directory, '/'-separated")
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(Result):
    version: int = 1
    repo_id: str | None = None
    revision: str | None = Field(None, description="Commit the files were downloaded at, if known")
    files: list[ManifestEntry]

    def by_path(self) -> dict[str, ManifestEntry]:
        return {f.path: f for f in self.files}


def sha256_file(path: str | Path, on_bytes=None) -> str:
    """SHA-256 of a file read in fixed chunks; `on_bytes(n)` is called as it goes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
            if on_bytes:
                on_bytes(len(chunk))
    return h.hexdigest()


def read_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    try:
        return Manifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise FormatError(f"{path}: no such manifest") from None
    except (json.JSONDecodeError, ValidationError) as e:
        first = str(e).splitlines()[0]
        raise FormatError(f"{path}: not a ckpt manifest: {first}") from None


def write_manifest(path: str | Path, manifest: Manifest) -> None:
    write_json_atomic(path, manifest.model_dump(mode="json"))
