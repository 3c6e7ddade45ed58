"""One pool of open shard readers, shared by every reader and writer of checkpoints.

A checkpoint reader (`Checkpoint`, `MpCheckpoint`) or a writer's job opens each shard once, on
first use, through a `ReaderPool`, and closes them all together.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .remote.path import RemotePath
from .remote.stores import as_path
from .safetensors_io import SafetensorsReader


class ReaderPool:
    """The open readers of one directory's files: each opened on first use, all closed
    together. `resolve(name) -> path` may check that a name stays inside the directory. The
    directory may be remote (`remote.path.RemotePath`): its readers read by range."""

    def __init__(self, root: str | Path | RemotePath,
                 resolve: Callable[[str], Path | RemotePath] | None = None):
        self.root = as_path(root)
        self._resolve = resolve or (lambda name: self.root / name)
        self._open: dict[str, SafetensorsReader] = {}

    def __call__(self, name: str) -> SafetensorsReader:
        reader = self._open.get(name)
        if reader is None:
            reader = self._open[name] = SafetensorsReader(self._resolve(name))
        return reader

    def __contains__(self, name: str) -> bool:
        """Whether `name` is open already."""
        return name in self._open

    def close(self) -> None:
        for reader in self._open.values():
            reader.close()
        self._open.clear()

    def __enter__(self) -> ReaderPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PooledFiles:
    """Base of the checkpoint readers: they own a `ReaderPool` and close it on exit."""

    _readers: ReaderPool

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._readers.close()
