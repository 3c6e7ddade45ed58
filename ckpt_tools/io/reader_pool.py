"""One pool of open shard readers, shared by every reader and writer of checkpoints.

A checkpoint reader (`Checkpoint`, `MpCheckpoint`) or a writer's job opens each shard once, on
first use, through a `ReaderPool`, and closes them all together. Headers come from the run's
`source.Source`: read once per run, or carried to a job by its arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..remote.path import RemotePath
from .safetensors_io import SafetensorsReader
from .source import Source


class ReaderPool:
    """The open readers of one directory's files: each opened on first use, all closed
    together. `resolve(name) -> path` may check that a name stays inside the directory. The
    directory may be remote (`remote.path.RemotePath`): its readers read by range. `root`
    may be the `Source` (a job's) whose headers the readers use; else `source` gives them."""

    def __init__(self, root: str | Path | RemotePath | Source,
                 resolve: Callable[[str], Path | RemotePath] | None = None, *,
                 source: Source | None = None):
        opened = Source.open(root)
        self.source = source or opened
        self.root = opened.path
        self._resolve = resolve or (lambda name: self.root / name)
        self._open: dict[str, SafetensorsReader] = {}

    def __call__(self, name: str) -> SafetensorsReader:
        reader = self._open.get(name)
        if reader is None:
            reader = self._open[name] = self.source.reader(self._resolve(name))
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
