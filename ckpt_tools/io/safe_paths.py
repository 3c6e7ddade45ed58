"""File names read from files (an index, a manifest) resolved inside a checkpoint directory.

A name may not climb out (`..`, absolute paths) and may not resolve outside through a
symlink, except into the hub cache's `blobs/` that a `snapshots/<revision>` links into.
Pure path logic: importing this module is cheap.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import FormatError


def hf_cache_blobs(root: Path) -> Path | None:
    """`<repo>/blobs` when `root` is a hub cache snapshot (`<repo>/snapshots/<revision>`):
    `hf download` stores each file once there and links it from every snapshot."""
    root = Path(root).absolute()
    blobs = root.parent.parent / "blobs"
    return blobs.resolve() if root.parent.name == "snapshots" and blobs.is_dir() else None


def safe_member(root: Path, name: str, *, what: str = "file") -> Path:
    """`root / name`, refusing names that escape `root` (.., absolute paths, symlinks).

    A symlink may point into the hub cache's `blobs` directory of the snapshot `root` is in
    (see `hf_cache_blobs`), and nowhere else outside `root`.
    """
    candidate = Path(name)
    if candidate.is_absolute() or ".." in candidate.parts or name != name.strip() or not name:
        raise FormatError(f"{root}: {what} name {json.dumps(name)} "
                          "escapes the checkpoint directory")
    path = root / candidate
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        blobs = hf_cache_blobs(root)
        if blobs is None or not resolved.is_relative_to(blobs):
            raise FormatError(f"{root}: {what} {json.dumps(name)} resolves outside the checkpoint "
                              f"directory (symlink?)")
    return path
