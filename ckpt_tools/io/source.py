"""A checkpoint source, opened once at the boundary and passed down to every reader.

`Source.open(x)` turns what a user gave (a local directory, an index, one .safetensors file,
`hf://`, `s3://`, a model-parallel directory) into one object: the resolved location
(`path`, a `Path` or a `remote.path.RemotePath`) and the headers of its files, each read
and validated once per run (`header`). The inventory (`inventory.inspect`), the readers
(`Checkpoint`, `MpCheckpoint`, `ReaderPool`) and the jobs of every command take the source
instead of a path, so nothing below the boundary resolves the location again and no file's
header is read twice.

`locate(x)` is the one place a spec becomes a path (`Source.open` uses it): the public
functions that take what a user typed call it (or `Source.open`) once, at their top, and pass
the path or the source down; nothing below resolves a spec again.

Jobs in other processes (worker processes, Ray tasks) get `for_tensors(...)`: a source
that carries the header entries of the tensors that job reads, pickled with the job, so a
worker reads no header at all. A source is for one run: its headers are what the files
held when it read them (a later run opens a new one).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..remote.path import RemotePath
from ..remote.stores import as_path
from .safetensors_io import SafetensorsHeader, SafetensorsReader, read_header


def locate(spec: str | os.PathLike | RemotePath | Source) -> Path | RemotePath:
    """Where `spec` is: a local path, or a remote URL's `RemotePath` (a Source: its own)."""
    return spec.path if isinstance(spec, Source) else as_path(spec)


class Source:
    """One checkpoint location and the headers read from it so far (see the module)."""

    __slots__ = ("path", "spec", "_headers")

    def __init__(self, path: Path | RemotePath,
                 headers: dict[str, SafetensorsHeader] | None = None, spec: str | None = None):
        self.path = path  # as given, resolved: a directory, an index or one file
        self.spec = str(path) if spec is None else spec  # as the user wrote it (reports)
        self._headers: dict[str, SafetensorsHeader] = headers or {}  # str(file) -> header

    @classmethod
    def open(cls, spec: str | Path | RemotePath | Source) -> Source:
        """The source `spec` names (itself when it is one already): the one place a
        location is resolved (`locate`)."""
        if isinstance(spec, Source):
            return spec
        return cls(locate(spec), spec=spec if isinstance(spec, str) else str(spec))

    def __repr__(self) -> str:
        return f"Source({str(self.path)!r})"

    def __str__(self) -> str:
        return self.spec

    @property
    def is_remote(self) -> bool:
        return isinstance(self.path, RemotePath)

    def header(self, file: Path | RemotePath) -> SafetensorsHeader:
        """The validated header of `file` (a file of this source), read on first use only.

        Raises:
            FormatError: naming the file and the defect (not kept: asked again, it is read
                again and raises again).
        """
        key = str(file)
        found = self._headers.get(key)
        if found is None:
            found = self._headers[key] = read_header(file)
        return found

    def reader(self, file: Path | RemotePath) -> SafetensorsReader:
        """A reader of `file` over its header from this source."""
        return SafetensorsReader(file, self.header(file))

    def for_tensors(self, root: Path | RemotePath,
                    wanted: Iterable[tuple[Path | RemotePath, Iterable[str]]]) -> Source:
        """A source at `root` (the checkpoint directory a job reads) for a job in another
        process: (file, tensor names) pairs, each file's header cut down to those tensors
        (small to pickle; the offsets are the file's)."""
        headers = {}
        for file, names in wanted:
            h = self.header(file)
            kept = headers.get(str(file))
            entries = dict(kept.entries) if kept is not None else {}
            entries.update((n, h.entries[n]) for n in names)
            headers[str(file)] = SafetensorsHeader(h.path, entries, h.metadata, h.data_offset,
                                                   h.file_size)
        return Source(root, headers)

    def files_read(self) -> list[tuple[Path | RemotePath, dict[str, tuple[int, int]]]]:
        """The files whose headers this source holds, each with the byte range in the file
        of every tensor held (what a job reads: `remote.verified.plan_streams`)."""
        return [(h.path, {n: (h.data_offset + e.start, h.data_offset + e.end)
                          for n, e in h.entries.items()}) for h in self._headers.values()]

    def __reduce__(self):
        """Pickled with its path (a `RemotePath` as its URL and listing) and the headers it
        holds: a worker reads from it without reading any header again."""
        return (Source, (self.path, self._headers, self.spec))
