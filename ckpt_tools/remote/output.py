"""An output directory on an object store (`s3://bucket/prefix`, ...), through fsspec.

`RemoteOutputDir` keeps `output.OutputDir`'s contract for converters: a file appears under
its final name only when complete, a rerun of the same job resumes, the index comes last.

- Files are written into a local staging directory (an `OutputDir`: partial names, then a
  rename), one finished file at a time; so local disk holds at most the files in flight.
- `mark_done(name)` uploads the finished file with fsspec's `put_file` (S3: one PUT, or a
  multipart upload completed only after its last part, so a killed upload leaves no object
  under the name), records its size and ETag in a journal object `DST/.ckpt-journal.json`
  and deletes the staged copy.
- `__exit__` uploads what the converter wrote last (config, side files), then the index,
  then deletes the journal. A rerun of the same job skips the files its journal lists whose
  objects still have the recorded size and ETag; a different job (other source or options)
  refuses a non-empty destination unless `overwrite`.

Concurrent runs writing the same prefix are not locked out (object stores have no locks).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from ..errors import ARGUMENT_PLACEHOLDER, OutputError
from ..io.index import INDEX_FILE, write_json_atomic
from ..io.output import (
    JOURNAL_FILE,
    LOCK_FILE,
    SOURCE_COPY_DIR,
    OutputDir,
    drop_stale_lock,
    foreign_files,
    report_file,
    overwritten_names,
)
from ..execution.ray_executor import require_ray
from .path import RemotePath, is_remote
from .stores import fsspec_for, open_remote, store_errors
from .verified import CheckedCopies, hashed_files, verification_on


def _etag(info: dict) -> str | None:
    for key in ("ETag", "etag", "md5Hash", "generation", "checksum"):
        if info.get(key):
            return str(info[key]).strip('"')
    return None


class RemoteOutputDir:
    remote = True  # converters write whole files here, never parts (convert._write_shards)

    def __init__(self, dst: str, *, overwrite: bool = False, job: dict[str, Any] | None = None,
                 staging: str | Path | None = None, sources=()):
        self.url = dst.rstrip("/")  # (used in this process only: workers write locally)
        self.sources = [s if isinstance(s, RemotePath) else Path(s) for s in sources
                        if isinstance(s, RemotePath) or not is_remote(s)]
        self.kept: list[str] = []  # what `overwrite` left in place: not a checkpoint's object
        self.fs, self.root = fsspec_for(self.url)
        self.overwrite, self.job = overwrite, job
        self._staging_parent = staging
        self._local: OutputDir | None = None
        self._journal: dict[str, Any] = {"job": job, "done": {}}
        self.resumed = False
        self.path: Path | None = None  # the staging directory converters write into

    # -- the journal object ------------------------------------------------------------------
    def _key(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _listing(self) -> list[str]:
        try:
            with store_errors(self.url):  # the first request: where missing keys show
                return [p.rstrip("/").rsplit("/", 1)[-1]
                        for p in self.fs.find(self.root, maxdepth=1, withdirs=False)]
        except FileNotFoundError:
            return []

    def _write_journal(self) -> None:
        with self.fs.open(self._key(JOURNAL_FILE), "w") as f:  # one PUT: whole or absent
            json.dump(self._journal, f)

    def __enter__(self) -> RemoteOutputDir:
        self.fs.invalidate_cache()
        existing = self._listing()
        journal = None
        if JOURNAL_FILE in existing:
            try:
                journal = json.loads(self.fs.cat_file(self._key(JOURNAL_FILE)))
            except (OSError, ValueError):
                journal = None
        if self.overwrite:  # as a local DST: the user's own objects stay (`OutputDir`)
            ours = overwritten_names(self.sources)
            for name in existing:
                if ours(name):
                    self.fs.rm_file(self._key(name))
                else:
                    self.kept.append(name)
        elif journal is not None and self.job is not None and journal.get("job") == self.job:
            self._journal, self.resumed = journal, True
        elif existing:
            hint = " (it holds an unfinished run of another job)" if journal else ""
            raise OutputError(f"{self.url}: destination is not empty{hint}; "
                              f"pass {ARGUMENT_PLACEHOLDER} to replace its contents",
                              argument="overwrite")
        self._write_journal()
        self.path = Path(tempfile.mkdtemp(prefix="ckpt-staging-", dir=self._staging_parent))
        self._local = OutputDir(self.path, overwrite=True).__enter__()
        return self

    # -- OutputDir's resume interface ----------------------------------------------------------
    def is_done(self, name: str) -> bool:
        rec = self._journal["done"].get(name)
        if rec is None:
            return False
        try:
            info = self.fs.info(self._key(name))
        except FileNotFoundError:
            return False
        return [info.get("size"), _etag(info)] == rec

    def done_info(self, name: str) -> Any:
        return self._journal.get("info", {}).get(name) if self.is_done(name) else None

    def mark_done(self, name: str, info: Any = None) -> None:
        """Upload the finished staged file `name`, then record it (then it is done)."""
        local = self.path / name
        self.fs.put_file(str(local), self._key(name))
        remote = self.fs.info(self._key(name))
        if remote.get("size") != local.stat().st_size:
            raise OutputError(f"{self.url}/{name}: uploaded {remote.get('size')} bytes, the "
                              f"file has {local.stat().st_size}")
        self._journal["done"][name] = [remote.get("size"), _etag(remote)]
        if info is not None:
            self._journal.setdefault("info", {})[name] = info
        self._write_journal()
        local.unlink()

    @property
    def destination(self) -> str:
        return self.url

    def written_root(self):
        """The destination as written so far, to read back (a fresh listing)."""
        return open_remote(self.url, fresh=True)

    # -- finish -------------------------------------------------------------------------------
    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                staged = sorted(p.name for p in self.path.iterdir()
                                if p.is_file() and p.name not in (LOCK_FILE, JOURNAL_FILE))
                for name in [n for n in staged if n != INDEX_FILE] + (
                        [INDEX_FILE] if INDEX_FILE in staged else []):  # the index last
                    self.fs.put_file(str(self.path / name), self._key(name))
                self.fs.rm_file(self._key(JOURNAL_FILE))
        finally:
            self._local.__exit__(exc_type, exc, tb)
            shutil.rmtree(self.path, ignore_errors=True)


class _CheckedSources:
    """An output directory whose remote sources are read from copies checked against
    their listed SHA-256 (`remote.verified`), kept in the directory while the run lasts."""

    def __init__(self, out: OutputDir | RemoteOutputDir, roots: list[RemotePath]):
        self.out, self.roots = out, roots
        self.copies: CheckedCopies | None = None

    def __enter__(self) -> OutputDir | RemoteOutputDir:
        out = self.out.__enter__()
        # inside DST (the staging directory for an object store): its disk, its lifetime
        self.copies = CheckedCopies(self.roots, Path(out.path) / SOURCE_COPY_DIR)
        try:
            self.copies.start()
        except BaseException as e:
            self.out.__exit__(type(e), e, e.__traceback__)
            raise
        return out

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.copies.stop(failed=exc_type is not None)
        except BaseException as e:
            self.out.__exit__(type(e), e, e.__traceback__)
            raise
        if exc_type is None:  # kept after a failure: the rerun does not fetch them again
            shutil.rmtree(self.copies.copies, ignore_errors=True)
        self.out.__exit__(exc_type, exc, tb)


def open_output(dst: str | Path, *, sources=(), overwrite: bool = False,
                job: dict[str, Any] | None = None):
    """An `OutputDir` for a local path, a `RemoteOutputDir` for a URL (s3://, gs://, ...);
    remote `sources` whose listing gives SHA-256s are read from checked copies."""
    if isinstance(dst, str) and is_remote(dst):
        if dst.startswith("hf://"):
            raise OutputError(f"{dst}: writing to the Hub is not supported; write locally "
                              f"and upload with `hf upload`")
        out = RemoteOutputDir(dst, overwrite=overwrite, job=job, sources=sources)
    else:
        out = OutputDir(dst, sources=sources, overwrite=overwrite, job=job)
    hashed = [s for s in sources if isinstance(s, RemotePath) and hashed_files(s)]
    return _CheckedSources(out, hashed) if hashed and verification_on() else out


# Fields of a writer's report that depend on the run, not on the inputs: kept out of its
# proof so an interrupted-and-resumed run writes the same bytes as an uninterrupted one.
RUN_FIELDS = {"resumed_files", "seconds", "nodes", "kept"}
ALREADY_COMPLETE = "already complete: this job finished before; nothing was written"
ReportT = TypeVar("ReportT", bound=BaseModel)


def job_id_of(job: dict[str, Any]) -> str:
    """SHA-256 of a journal's job (`OutputDir(job=...)`): what a proof is matched by."""
    return hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()


def write_proof(dst: str | Path, command: str, report: BaseModel) -> None:
    """The report of a finished run beside DST (`output.report_file`), without its run
    fields: written inside the output's `with`, while the journal still exists, so a run
    killed before finds its journal and resumes, one killed after finds this
    (`finished_before`). The report carries `job_id` and `files`."""
    write_json_file(report_file(dst, command), report.model_dump(mode="json",
                                                                 exclude=RUN_FIELDS | {"ok"}))


def finished_before(dst: str | Path, command: str, job_id: str,
                    model: type[ReportT]) -> ReportT | None:
    """The report of a finished run of this very job into a local `dst` (its proof beside
    DST, no journal left, every file it lists present), noted "already complete"; else None.

    Raises:
        OutputError: a live run holds DST's lock.
    """
    if isinstance(dst, str) and is_remote(dst):
        return None
    proof, dst = Path(report_file(dst, command)), Path(dst)
    if not proof.is_file() or (dst / JOURNAL_FILE).exists():
        return None
    try:
        report = model.model_validate_json(proof.read_text())
    except (OSError, ValueError):
        return None
    names = [getattr(f, "name", f) for f in report.files]
    if report.job_id != job_id or not all((dst / n).is_file() for n in names):
        return None
    if not drop_stale_lock(dst):
        raise OutputError(f"{dst}: another ckpt run is writing here (lock held)")
    return report.model_copy(update={"notes": [*report.notes, ALREADY_COMPLETE],
                                     "kept": kept_files(dst, report.side_files)})


def kept_files(dst: str | Path, side_files: Iterable[str] = ()) -> list[str]:
    """The files of a written `dst` (local or an object store) that are not the checkpoint's,
    this tool's, nor copied from its source: the user's, which `overwrite` kept."""
    if isinstance(dst, str) and is_remote(dst):
        fs, root = fsspec_for(dst.rstrip("/"))
        fs.invalidate_cache()
        with store_errors(dst):
            names = [p.rstrip("/").rsplit("/", 1)[-1]
                     for p in fs.find(root, maxdepth=1, withdirs=False)]
    else:
        names = [p.name for p in Path(dst).iterdir() if p.is_file()] if Path(dst).is_dir() else []
    return foreign_files(names, side_files)


def check_executor(dst: str | Path, executor: str) -> None:
    """Refuse, before anything is written, an object-store destination with the Ray
    executor: files are staged on this machine's disk, which other nodes do not see; and
    the Ray executor when Ray is not installed (after the first: installing Ray would not
    make that combination work)."""
    if executor == "ray" and isinstance(dst, str) and is_remote(dst):
        raise OutputError(f"{dst}: an object-store destination is staged on this machine's "
                          f"disk, which Ray's other nodes cannot see; use {ARGUMENT_PLACEHOLDER}, "
                          f"or write to shared storage and upload it", argument="executor",
                          value="local")
    if executor == "ray":
        require_ray()


def write_json_file(target: str | Path, data: Any) -> None:
    """A JSON file outside any output directory (a report beside it): written atomically
    on local disk, in one PUT (whole or absent) on an object store."""
    if isinstance(target, str) and is_remote(target):
        fs, key = fsspec_for(target)
        with fs.open(key, "w") as f:
            json.dump(data, f, indent=2)
        return
    write_json_atomic(Path(target), data)
