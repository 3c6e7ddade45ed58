"""The files of a checkpoint that are not weights (tokenizer, generation config, modeling
code, README): converters copy them unchanged so their output loads as is."""

from __future__ import annotations

import shutil
from collections.abc import Collection
from pathlib import Path

from ..configs.layouts import INFERENCE_CONFIG_FILE
from .index import INDEX_FILE
from .manifest import MANIFEST_FILE
from .output import JOURNAL_FILE, LOCK_FILE
from ..remote.path import RemotePath
from ..remote.verified import await_checked_reads

# Written by the converter itself, never copied.
_OWN = {"config.json", INDEX_FILE, MANIFEST_FILE, JOURNAL_FILE, LOCK_FILE, INFERENCE_CONFIG_FILE}


def side_files(src: Path | RemotePath, exclude: Collection[str] = ()) -> list[Path]:
    """Regular top-level files of `src` that are neither weights nor index/config (nor
    named in `exclude`, e.g. a converter's own report)."""
    out = []
    for p in sorted(src.iterdir()):
        if (p.name in _OWN or p.name in exclude or p.name.startswith(".")
                or p.suffix == ".safetensors"):
            continue
        if p.is_file() and not p.is_symlink():
            out.append(p)
    return out


def copy_side_files(src: Path | RemotePath, dst: str | Path,
                    exclude: Collection[str] = ()) -> list[str]:
    """Copy them to `dst` (via a temporary name, then rename); returns the names."""
    names = []
    for p in side_files(src, exclude):
        copy_file_atomic(p, Path(dst) / p.name)
        names.append(p.name)
    return names


def copy_file_atomic(src: str | Path, target: str | Path) -> None:
    """Copy one file to `target.partial`, then rename it into place."""
    target = Path(target)
    tmp = target.with_name(target.name + ".partial")
    try:
        if isinstance(src, RemotePath):  # small files (tokenizer, README): one read
            tmp.write_bytes(src.read_bytes())
        else:
            shutil.copyfile(src, tmp)
        await_checked_reads()
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
