"""The Hugging Face Hub, through `huggingface_hub` (the only module that imports it).

`hub_settings()` reads HF_ENDPOINT / HF_TOKEN / HF_HOME at call time (the client reads them
once, at import), `repo_files()` lists a revision's files with their sizes and LFS SHA-256
and resolves the revision to a commit, `fetch_file()` downloads one file with
`hf_hub_download` (into a local directory, or the shared cache: `snapshot_dir()`). Every
error the client raises leaves here as a one-line `HubError`.

Resuming is the client's: a transfer cut mid-way is retried (5 times) with an HTTP Range
request from the last 10 MB chunk written, and a file complete on disk for the same commit
is not fetched again. huggingface_hub 2.4 deletes a partial file when a download fails for
good, so a file interrupted across runs starts again from byte 0. Xet-backed files take the
client's Xet path; the caller verifies them like any other.

One retry rule for every transfer (`with_retries`): a failure in transit (connection,
timeout, HTTP 429 or 5xx) is tried again `TRANSFER_ATTEMPTS` times in all, with backoff,
whether it is a whole-file download or a ranged read. Timeouts are
`remote.byte_source.remote_timeouts()`.
"""

from __future__ import annotations

import errno
import importlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..errors import ArgumentError, HubError, OfflineError
from ..remote.byte_source import remote_timeouts

DEFAULT_REVISION = "main"
TRANSFER_ATTEMPTS = 4  # a transfer that fails in transit (connection, 429, 5xx) is tried again
_COMMIT = re.compile(r"[0-9a-f]{40}")


class Cancelled(Exception):
    """Raised inside a download thread when the caller asked all downloads to stop."""


@dataclass(frozen=True)
class HubSettings:
    endpoint: str
    token: str | bool | None  # False: send no token; None: let the client look (OIDC, Colab)
    cache_dir: Path


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # the LFS object's SHA-256; None for a file stored in git
    blob_id: str | None  # the git object id (of the pointer, for LFS files)

    @property
    def lfs(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True)
class RemoteRepo:
    repo_id: str
    revision: str  # as asked (branch, tag or commit)
    commit: str  # what it resolved to; every file is fetched at this commit
    files: list[RemoteFile]
    gated: bool


def _env_path(name: str) -> str | None:
    value = os.environ.get(name)
    return os.path.expandvars(os.path.expanduser(value)) if value else None


def hub_settings(token: str | bool | None = None,
                 cache_dir: str | Path | None = None) -> HubSettings:
    """Endpoint, token and cache directory from the environment as it is now, unless given.

    Mirrors `huggingface_hub.constants` (HF_ENDPOINT, HF_TOKEN, HF_TOKEN_PATH, HF_HOME,
    HF_HUB_CACHE), which the client evaluates once at import time.
    """
    endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    home = _env_path("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface")
    cache_dir = Path(cache_dir or _env_path("HF_HUB_CACHE") or _env_path("HUGGINGFACE_HUB_CACHE")
                     or os.path.join(home, "hub"))
    if token is None:
        token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None
    if token is None:
        token_path = _env_path("HF_TOKEN_PATH") or os.path.join(home, "token")
        try:
            token = Path(token_path).read_text(encoding="utf-8").strip() or None
        except OSError:
            token = None
        moved = os.path.abspath(token_path) != os.path.abspath(constants.HF_TOKEN_PATH)
        if token is None and moved:
            token = False  # HF_HOME moved since import: never fall back to another home's token
    return HubSettings(endpoint, token, cache_dir)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network-level exception classes of whichever HTTP stack the client uses."""
    found: list[type[BaseException]] = [LocalEntryNotFoundError, OfflineModeIsEnabled]
    for module, attr in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        try:
            found.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


_TRANSPORT_ERRORS = _transport_errors()


def is_timeout(e: BaseException) -> bool:
    return "timeout" in type(e).__name__.lower() or isinstance(e, TimeoutError)


def _transient(e: BaseException) -> bool:
    if isinstance(e, HfHubHTTPError):
        status = _status(e)
        return status is None or status == 429 or status >= 500
    return isinstance(e, _TRANSPORT_ERRORS) and not isinstance(
        e, (LocalEntryNotFoundError, OfflineModeIsEnabled))


def with_retries(call: Callable[[], object], attempts: int = TRANSFER_ATTEMPTS):
    """`call()`, tried again after a transient failure (backoff 0.5 s, 1 s, 2 s ...); the
    last failure, or the first that is not transient, is raised as it came."""
    for attempt in range(attempts):
        try:
            return call()
        except (HfHubHTTPError, *_TRANSPORT_ERRORS) as e:
            if not _transient(e) or attempt == attempts - 1:
                raise
            time.sleep(0.5 * 2 ** attempt)
    raise AssertionError("unreachable")


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


@contextmanager
def _hub_errors(settings: HubSettings, repo_id: str, revision: str,
                filename: str | None = None, dest: Path | None = None) -> Iterator[None]:
    """Turn the client's exceptions into one-line `HubError`s naming repo, revision, file."""
    shown = revision[:12] if _COMMIT.fullmatch(revision) else revision
    where = f"{repo_id}@{shown}" + (f": {filename}" if filename else "")
    try:
        yield
    except Cancelled:
        raise
    except GatedRepoError as e:
        how = ("this token has not been granted access" if settings.token
               else "set HF_TOKEN or run `hf auth login`")
        raise HubError(f"{where}: gated repository, access denied (HTTP {_status(e)}); request "
                       f"access at {settings.endpoint}/{repo_id} and {how}") from None
    except RepositoryNotFoundError as e:
        if _status(e) == 401:
            raise HubError(f"{repo_id}: repository not found or not accessible (HTTP 401 "
                           f"unauthorised); check the name, and set HF_TOKEN if it is "
                           f"private") from None
        raise HubError(f"{repo_id}: repository not found on {settings.endpoint}") from None
    except RevisionNotFoundError:
        raise HubError(f"{repo_id}: revision '{revision}' not found (a branch, tag or "
                       f"40-character commit id)") from None
    except RemoteEntryNotFoundError:
        raise HubError(f"{where}: file not found in the repository") from None
    except HfHubHTTPError as e:
        status = _status(e)
        if status in (401, 403):
            raise HubError(f"{where}: unauthorised (HTTP {status}); check HF_TOKEN and that it "
                           f"may read this repository") from None
        raise HubError(f"{where}: the Hub answered HTTP {status}: {_first_line(e)}") from None
    except OfflineModeIsEnabled:
        raise OfflineError(f"{where}: offline mode is on ({OFFLINE_ENV}); unset it to reach "
                           f"{settings.endpoint}") from None
    except _TRANSPORT_ERRORS as e:
        raise HubError(f"{where}: cannot reach {settings.endpoint} ({_first_line(e)}); check "
                       f"the network, proxy settings or HF_ENDPOINT") from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise HubError(f"{where}: disk full while writing into {dest or settings.cache_dir} "
                           f"({e.strerror}); free space and rerun (complete files are "
                           f"kept)") from None
        raise HubError(f"{where}: {_first_line(e)}") from None


OFFLINE_ENV = "HF_HUB_OFFLINE"


def offline() -> bool:
    """HF_HUB_OFFLINE as the client reads it (read now, not at import)."""
    return os.environ.get(OFFLINE_ENV, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def check_repo_id(repo_id: str) -> None:
    """The Hub's own rule for repository ids; raises ArgumentError before any request."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ArgumentError(f"{repo_id!r} is not a Hub repository id like "
                            f"'deepseek-ai/DeepSeek-V3': "
                            f"{_first_line(e).split(' Use `repo_type`')[0]}") from None


def _status(e: HfHubHTTPError) -> int | None:
    response = getattr(e, "response", None)
    return getattr(response, "status_code", None)


def repo_files(repo_id: str, revision: str = DEFAULT_REVISION, *,
               settings: HubSettings | None = None) -> RemoteRepo:
    """The files of `repo_id` at `revision`, with sizes, LFS SHA-256 and the commit id.

    Raises:
        HubError: repository or revision not found, unauthorised, network unreachable.
    """
    check_repo_id(repo_id)
    settings = settings or hub_settings()
    if offline():
        raise OfflineError(f"{repo_id}: offline mode is on ({OFFLINE_ENV}="
                           f"{os.environ[OFFLINE_ENV]}); a download asks the Hub for the file "
                           f"list: unset it to reach {settings.endpoint}")
    api = HfApi(endpoint=settings.endpoint, token=settings.token)
    with _hub_errors(settings, repo_id, revision):
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    if not info.sha:
        raise HubError(f"{repo_id}@{revision}: the Hub did not report a commit id")
    files = []
    for s in info.siblings or []:
        lfs = s.lfs
        size = lfs.size if lfs else s.size
        if size is None:
            raise HubError(f"{repo_id}@{revision}: {s.rfilename}: the Hub did not report a size")
        files.append(RemoteFile(s.rfilename, int(size), lfs.sha256 if lfs else None, s.blob_id))
    return RemoteRepo(repo_id, revision, info.sha, files, bool(info.gated))


def snapshot_dir(repo_id: str, commit: str, settings: HubSettings) -> Path:
    """Where the shared cache keeps `repo_id` at `commit` (files are symlinks to blobs)."""
    folder = constants.REPO_ID_SEPARATOR.join(["models", *repo_id.split("/")])
    return settings.cache_dir / folder / "snapshots" / commit


def _byte_counter(on_bytes: Callable[[int], None] | None, cancel: threading.Event | None):
    """A tqdm stand-in for `hf_hub_download`: reports bytes written and honours `cancel`.

    The HTTP path calls `update` per chunk; the Xet path builds its bars from this class too
    and, because `update_transfer` exists, sends network bytes there (ignored) and bytes
    written to `update`, so each byte counts once. Display calls are no-ops.
    """

    class ByteCounter:
        def __init__(self, *args, **kwargs):
            self.n, self.total, self.format_dict = 0, kwargs.get("total"), {}

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass

        def __getattr__(self, name: str):  # set_postfix_str, refresh, close, clear, ...
            return lambda *args, **kwargs: None

        def update(self, n: int | float | None = 1) -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if n:
                self.n += int(n)
                if on_bytes:
                    on_bytes(int(n))

        def update_transfer(self, n: int | float | None = 1) -> None:
            pass

    return ByteCounter


def fetch_file(repo_id: str, path: str, commit: str, *, local_dir: Path | None,
               settings: HubSettings, force: bool = False,
               on_bytes: Callable[[int], None] | None = None,
               cancel: threading.Event | None = None) -> Path:
    """Download one file at `commit` into `local_dir` (or the shared cache when None).

    A file already complete for this commit is returned without a transfer. Returns the
    local path (in the cache: the snapshot's symlink).

    Raises:
        HubError: one line naming repo, revision and file.
        Cancelled: `cancel` was set while the file was streaming.
    """
    dest = Path(local_dir) if local_dir is not None else None
    with _hub_errors(settings, repo_id, commit, path, dest):
        return Path(with_retries(lambda: hf_hub_download(
            repo_id, path, revision=commit, local_dir=dest, cache_dir=settings.cache_dir,
            endpoint=settings.endpoint, token=settings.token, force_download=force,
            tqdm_class=_byte_counter(on_bytes, cancel))))
