"""A path inside a remote checkpoint tree, usable where the code takes a local `Path`.

`RemotePath` implements the part of `pathlib.Path` that reading a checkpoint needs (`/`,
`name`, `is_file`, `is_dir`, `exists`, `glob` on one level, `read_text`, `read_bytes`,
`stat().st_size`, `resolve`, `is_relative_to`) over a `RemoteTree`: a listing taken once
(the Hub revision resolved to one commit, or an object store prefix) plus a way to open a
file's bytes (`open_source()`, a `remote.byte_source.RangeSource`). So validate, info, diff and
the checkpoint reader read remote sources with the code that reads local ones; only the
byte-level readers (`safetensors_io`) ask for `open_source()`.

`remote.stores.as_path(x)` turns a source spec into a path (a `RemotePath` stays, a remote
URL, `hf://`, `s3://`, ..., is opened with `remote.open_remote`, anything else is a local
`Path`); its one caller is the boundary, `io.source.locate`. This module imports no other of
ckpt_tools' (remote/stores.py builds on it) and no client library.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Protocol

REMOTE_URL = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://")

# Small ranged reads (shard headers, witnessed byte ranges) run this many at once: their
# latency, not the link's bandwidth, bounds them.
CONCURRENT_SMALL_READS = 16


def is_remote(spec) -> bool:
    """A URL with a scheme other than file://, or a RemotePath."""
    if isinstance(spec, RemotePath):
        return True
    m = REMOTE_URL.match(str(spec)) if isinstance(spec, str) else None
    return bool(m) and m["scheme"].lower() != "file"


def job_source(path) -> str | RemotePath:
    """How a job carries a source directory to its worker (a process or a Ray task): a
    `RemotePath` as itself, pickled as its URL and listing and reopened without listing
    again (so every job reads the one revision); a local path as a string."""
    return path if isinstance(path, RemotePath) else str(path)


@dataclass(frozen=True)
class RemoteFileInfo:
    size: int
    identity: str | None  # ETag / content hash the listing gave: every read must match it
    sha256: str | None = None  # the Hub's LFS SHA-256 of the content, when known


class RemoteTree(Protocol):
    url: str  # the root, a Hub revision named by its commit (used in messages)
    files: dict[str, RemoteFileInfo]  # relative POSIX path -> info, every file below the root

    def open(self, rel: str): ...  # -> remote.byte_source.ByteSource

    def ref(self): ...  # -> remote.TreeRef, a picklable description (`RemotePath.__reduce__`)


@dataclass(frozen=True)
class _Stat:
    st_size: int


class RemotePath:
    """`tree`'s file or folder `rel` ("" is the root)."""

    __slots__ = ("tree", "rel")

    def __init__(self, tree: RemoteTree, rel: str = ""):
        self.tree = tree
        self.rel = rel.strip("/")

    # -- names ---------------------------------------------------------------------------
    def __str__(self) -> str:
        return f"{self.tree.url.rstrip('/')}/{self.rel}" if self.rel else self.tree.url

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __fspath__(self) -> str:  # builtins (open, os.stat) must never see a URL as a path
        raise TypeError(f"{self}: a remote path has no local file system path")

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and (other.tree, other.rel) == (self.tree, self.rel)

    def __hash__(self) -> int:
        return hash((id(self.tree), self.rel))

    def __reduce__(self):
        """Pickled (for a worker process or a Ray task) as the tree's description: its URL
        and listing. The worker reopens it without listing again (`remote.reopen`), so it
        reads the revision and checks the ETags this process listed."""
        return (_reopen, (self.tree.ref(), self.rel))

    def __lt__(self, other: RemotePath) -> bool:
        return self.rel < other.rel

    def __truediv__(self, other: str | os.PathLike) -> RemotePath:
        part = PurePosixPath(str(other) if not isinstance(other, PurePosixPath) else other)
        return RemotePath(self.tree, (PurePosixPath(self.rel) / part).as_posix()
                          if self.rel else part.as_posix())

    @property
    def name(self) -> str:
        return PurePosixPath(self.rel).name if self.rel else self.tree.url.rstrip("/").rsplit(
            "/", 1)[-1]

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def parent(self) -> RemotePath:
        return RemotePath(self.tree, PurePosixPath(self.rel).parent.as_posix()
                          if "/" in self.rel else "")

    @property
    def parts(self) -> tuple[str, ...]:
        return PurePosixPath(self.rel).parts

    def with_name(self, name: str) -> RemotePath:
        return self.parent / name

    def resolve(self, strict: bool = False) -> RemotePath:  # no symlinks in a listing
        return self

    absolute = resolve

    def is_absolute(self) -> bool:
        return True

    def is_symlink(self) -> bool:  # a listing has no links
        return False

    def is_relative_to(self, other) -> bool:
        return (isinstance(other, RemotePath) and other.tree is self.tree
                and (not other.rel or self.rel == other.rel
                     or self.rel.startswith(other.rel + "/")))

    def relative_to(self, other) -> PurePosixPath:
        if not self.is_relative_to(other):
            raise ValueError(f"{self} is not in {other}")
        return PurePosixPath(self.rel[len(other.rel):].lstrip("/"))

    # -- the listing ---------------------------------------------------------------------
    def is_file(self) -> bool:
        return self.rel in self.tree.files

    def is_dir(self) -> bool:
        prefix = self.rel + "/"
        return not self.rel or any(f.startswith(prefix) for f in self.tree.files)

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def iterdir(self) -> list[RemotePath]:
        prefix = self.rel + "/" if self.rel else ""
        children = {prefix + f[len(prefix):].split("/", 1)[0]
                    for f in self.tree.files if f.startswith(prefix)}
        return [RemotePath(self.tree, c) for c in sorted(children)]

    def glob(self, pattern: str) -> list[RemotePath]:
        """Children whose name matches `pattern` (one level, as the callers use it)."""
        if "/" in pattern:
            raise ValueError(f"{self}: only one-level glob patterns are supported remotely")
        return [p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern)]

    def stat(self) -> _Stat:
        return _Stat(self.info().size)

    def info(self) -> RemoteFileInfo:
        info = self.tree.files.get(self.rel)
        if info is None:
            raise FileNotFoundError(f"{self}: no such file")
        return info

    # -- bytes ---------------------------------------------------------------------------
    def open_source(self):
        """The file's bytes, read by range (`remote.byte_source.RangeSource`)."""
        self.info()
        return self.tree.open(self.rel)

    def read_bytes(self) -> bytes:
        source = self.open_source()
        try:
            return source.read_exact(0, source.size)
        finally:
            source.close()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)


def _reopen(ref, rel: str) -> RemotePath:
    """Unpickle a `RemotePath`: its tree from the description (`remote.TreeRef.reopen`)."""
    return RemotePath(ref.reopen(), rel)
