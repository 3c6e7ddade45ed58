"""Safe output directories: refuse to clobber, lock against concurrent runs, resume.

Every command that writes a checkpoint goes through `OutputDir`:
- DST may not be SRC, inside SRC, or contain SRC; a non-empty DST is refused unless
  `overwrite=True` or it holds an unfinished run of the same job (then the run resumes).
- `overwrite=True` removes what a checkpoint consists of (tensor files, index, config,
  generation and tokenizer files, the files a source directory holds and a converter
  copies, this tool's manifest, journal and partial files) and keeps anything else a user
  put there (README of their own, notes, evaluation results), listed in `kept`: like
  `hf download --local-dir`, which never deletes what it did not fetch, a conversion must
  not cost the user files it cannot give back.
- An exclusive `flock` on `DST/.ckpt.lock` refuses a second writer. The lock is the run's:
  a forked child (a worker) closes its copy at once, so a killed run's workers, should
  they outlive it, never keep its rerun out.
- A journal `DST/.ckpt-journal.json` records the job (command, options, a fingerprint of
  every source file) and each finished output file (size, mtime). A rerun of the same job
  skips finished files; writers produce the others under `.partial` names. The journal is
  removed when the job finishes, so a complete DST has no journal.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ARGUMENT_PLACEHOLDER, OutputError
from ..execution.fault_injection import crash_point
from .index import write_json_atomic
from ..remote.path import RemotePath, is_remote

LOCK_FILE = ".ckpt.lock"
JOURNAL_FILE = ".ckpt-journal.json"
PARTIAL_SUFFIX = ".partial"
REPORT_FILE = "reshard-report.json"  # reshard's coverage proof, beside DST (`report_file`)
# a remote source's files, checked against their SHA-256 while the run lasts (remote.verified)
SOURCE_COPY_DIR = ".ckpt-checked-source"
_OURS = {LOCK_FILE, JOURNAL_FILE, SOURCE_COPY_DIR}
# the writers' reports (`kept`): what `foreign_files` finds in a written DST
KEPT_DESCRIPTION = ("Files in DST that are neither the checkpoint's, this tool's, nor copied "
                    "from the source (a README, notes, results of your own): --overwrite "
                    "left them in place")
# What `overwrite` replaces besides the files of the sources' own directories.
CHECKPOINT_FILE_RE = re.compile(
    r".*\.safetensors|.*\.safetensors\.index\.json|(generation_|inference_)?config\.json"
    r"|tokenizer.*|special_tokens_map\.json|ckpt-manifest\.json|.*\.partial")

# Lock descriptors this process holds; a forked child drops them (an flock is shared by
# every copy of the descriptor, and released only when the last copy is closed).
_held_locks: set[int] = set()


def _drop_inherited_locks() -> None:
    for fd in _held_locks:
        try:
            os.close(fd)
        except OSError:
            pass
    _held_locks.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


def source_fingerprint(paths: Iterable[Path]) -> dict[str, list[int]]:
    """Size and mtime of each source file: cheap, and changes whenever a file is rewritten."""
    out = {}
    for p in sorted(p if isinstance(p, RemotePath) else Path(p) for p in paths):
        if isinstance(p, RemotePath):  # a listed object: its size and content identity
            info = p.info()
            out[str(p)] = [info.size, info.identity]
            continue
        st = p.stat()
        out[str(p.resolve())] = [st.st_size, st.st_mtime_ns]
    return out


def overwritten_names(sources: Iterable[Path | RemotePath]):
    """The test `overwrite` applies to a name in DST, local or on an object store: True for
    what a checkpoint consists of, what this tool writes, and the top-level files of the
    source directories (what a converter copies over); anything else is the user's."""
    theirs: set[str] = set()
    for src in sources:
        root = src if src.is_dir() else src.parent
        theirs.update(p.name for p in root.iterdir() if p.is_file())
    return lambda name: (name in _OURS or name in theirs
                         or CHECKPOINT_FILE_RE.fullmatch(name) is not None)


class OutputDir:
    remote = False  # files are written in place (`RemoteOutputDir`: staged, uploaded whole)

    def __init__(self, dst: str | Path, *, sources: Iterable[str | Path] = (),
                 overwrite: bool = False, job: dict[str, Any] | None = None):
        self.path = Path(dst)
        # a remote source cannot contain or be a local destination
        self.sources = [Path(s) for s in sources if not is_remote(s)]
        # what `overwrite` treats as copied from a source: remote sources' files too
        self._copied_from = self.sources + [s for s in sources if isinstance(s, RemotePath)]
        self.overwrite = overwrite
        self.job = job
        self._lock_fd: int | None = None
        self._journal: dict[str, Any] | None = None
        self.resumed = False
        self.kept: list[str] = []  # what `overwrite` left in place: not a checkpoint's file

    # -- checks -------------------------------------------------------------------------
    def _check_not_source(self) -> None:
        dst = self.path.resolve()
        for src in self.sources:
            src = src.resolve()
            if dst == src:
                raise OutputError(f"{self.path}: destination is the source; "
                                  "choose another directory")
            if dst.is_relative_to(src):
                raise OutputError(f"{self.path}: destination is inside the source {src}")
            if src.is_relative_to(dst):
                raise OutputError(f"{self.path}: destination contains the source {src}")

    def _existing(self) -> list[Path]:
        return [p for p in self.path.iterdir() if p.name not in _OURS]

    def __enter__(self) -> OutputDir:
        self._check_not_source()
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"{self.path}: exists and is not a directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.path / LOCK_FILE,
                                    os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            _held_locks.add(self._lock_fd)
        except OSError as e:
            raise OutputError(f"{self.path}: cannot create output directory: {e.strerror}") from e
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _held_locks.discard(self._lock_fd)
            os.close(self._lock_fd)
            self._lock_fd = None
            raise OutputError(
                f"{self.path}: another ckpt run is writing here (lock held)") from None
        try:
            self._prepare()
        except BaseException:
            self._release()
            raise
        return self

    def _prepare(self) -> None:
        journal_path = self.path / JOURNAL_FILE
        journal = None
        if journal_path.is_file():
            try:
                journal = json.loads(journal_path.read_text())
            except (OSError, json.JSONDecodeError):
                journal = None
        for stale in self.path.glob("*" + PARTIAL_SUFFIX):
            stale.unlink()
        same_job = journal is not None and self.job is not None and journal.get("job") == self.job
        if self.overwrite:
            ours = overwritten_names(self._copied_from)
            for p in self._existing():
                if not (p.is_file() or p.is_symlink()):
                    continue
                if ours(p.name):
                    p.unlink()
                else:
                    self.kept.append(p.name)
            journal_path.unlink(missing_ok=True)
            journal = None
        elif same_job:
            self.resumed = True
        elif self._existing():
            hint = (" (it holds an unfinished run with other inputs or options)"
                    if journal is not None else "")
            raise OutputError(f"{self.path}: destination is not empty{hint}; "
                              f"pass {ARGUMENT_PLACEHOLDER} to replace its contents",
                              argument="overwrite")
        if self.job is not None:
            self._journal = journal if self.resumed else {"job": self.job, "done": {}}
            write_json_atomic(journal_path, self._journal)

    @property
    def destination(self) -> str:
        return str(self.path.resolve())

    def written_root(self) -> Path:
        """Where finished files can be read back (`RemoteOutputDir` lists its bucket)."""
        return self.path

    # -- resume ---------------------------------------------------------------------------
    def is_done(self, name: str) -> bool:
        """True when a previous run of this job finished `name` and it is unchanged."""
        if self._journal is None:
            return False
        rec = self._journal["done"].get(name)
        p = self.path / name
        if rec is None or not p.is_file():
            return False
        st = p.stat()
        return [st.st_size, st.st_mtime_ns] == rec

    def mark_done(self, name: str, info: Any = None) -> None:
        """Record `name` as finished, with optional JSON-able `info` a rerun can read back."""
        if self._journal is None:
            return
        st = (self.path / name).stat()
        self._journal["done"][name] = [st.st_size, st.st_mtime_ns]
        if info is not None:
            self._journal.setdefault("info", {})[name] = info
        write_json_atomic(self.path / JOURNAL_FILE, self._journal)

    def done_info(self, name: str) -> Any:
        """The `info` recorded with a finished `name` (None when there is none)."""
        if not self.is_done(name):
            return None
        return self._journal.get("info", {}).get(name)

    # -- finish ---------------------------------------------------------------------------
    def _release(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            _held_locks.discard(self._lock_fd)
            os.close(self._lock_fd)
            self._lock_fd = None
            (self.path / LOCK_FILE).unlink(missing_ok=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            (self.path / JOURNAL_FILE).unlink(missing_ok=True)
            _fsync_dir(self.path)
            crash_point()  # complete and unjournaled: a rerun must find it finished
        self._release()


def report_file(dst: str | Path, command: str = "reshard") -> str | Path:
    """Where the proof of a finished `command` into `dst` is written (`remote.output.
    write_proof`): `DST.reshard-report.json` (`DST.upcast-report.json`, ...) next to DST (a
    source written by older versions may hold one inside; it is not copied); for an
    object-store DST, the object of that name beside its prefix."""
    name = REPORT_FILE.replace("reshard", command, 1)
    if isinstance(dst, str) and is_remote(dst):
        return f"{dst.rstrip('/')}.{name}"
    dst = Path(dst)
    return dst.parent / f"{dst.name}.{name}"


def drop_stale_lock(dst: Path) -> bool:
    """Remove the lock file a killed run left in `dst`; False when a live run holds it."""
    try:
        fd = os.open(dst / LOCK_FILE, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    (dst / LOCK_FILE).unlink(missing_ok=True)
    return True


def foreign_files(names: Iterable[str], side_files: Iterable[str] = ()) -> list[str]:
    """Of the file `names` in a written DST, those that are neither a checkpoint's, this
    tool's, nor copied from its source (`side_files`): what `overwrite` kept."""
    side = set(side_files) | _OURS
    return sorted(n for n in names if n not in side and not CHECKPOINT_FILE_RE.fullmatch(n))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
