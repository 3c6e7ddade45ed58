"""Remote sources: `hf://REPO[@REVISION][/SUBDIR]` and fsspec URLs (`s3://`, `gs://`, ...).

`open_remote(url)` lists the source once and returns its root as a `RemotePath`:

- `hf://`: the revision is resolved once to a commit (`HfApi.repo_info`), the folder is
  listed at that commit through huggingface_hub's `HfFileSystem` (HF_ENDPOINT / HF_TOKEN
  honoured, read at call time by `hub.hub_settings`), and every read is a ranged GET of
  `/resolve/<commit>/<file>`, checked against the listing: the answer's `X-Repo-Commit` must
  be that commit and its ETag (`X-Linked-Etag` for LFS files) the one listed. A Hub error
  leaves as one line (`hub._hub_errors`).
- anything else fsspec knows (`s3://` with the `s3` extra, `gs://` with `gcsfs`, `memory://`)
  through `fsspec.core.url_to_fs`; reads are `cat_file` ranges, the listing's ETag is
  re-checked when a file is opened.

Nothing is written locally, except the optional header cache: with CKPT_HEADER_CACHE set to
a directory, each safetensors header read remotely is kept there under a key made of the
file's content identity (LFS SHA-256 / ETag) and size, so a second run reads no header.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CkptError, CredentialsError, FormatError, HubError, MissingDependencyError
from ..io.safetensors_header import MAX_HEADER_BYTES
from .byte_source import (
    CONNECT_TIMEOUT_ENV,
    READ_TIMEOUT_ENV,
    LocalSource,
    RangeSource,
    remote_timeouts,
)
from .path import CONCURRENT_SMALL_READS, REMOTE_URL, RemoteFileInfo, RemotePath, is_remote
from .streamed import StreamedSource, begin_pending_copies
from .verified import CheckedCopies, CopySource

HEADER_CACHE_ENV = "CKPT_HEADER_CACHE"
HEADER_PROBE_BYTES = 128 << 10  # one request holds most shard headers (V3: ~80 KB)
_HF_URL = re.compile(r"^hf://(?P<repo>[^/@]+/[^/@]+)(?:@(?P<rev>refs/pr/\d+|[^/]+))?"
                     r"(?P<sub>/.*)?$")
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class HfLocation:
    repo_id: str
    revision: str
    subdir: str


def parse_hf_url(url: str) -> HfLocation:
    """`hf://org/name[@revision][/sub/dir]` (a `refs/pr/N` revision keeps its slashes).

    Raises:
        HubError: not of that form.
    """
    m = _HF_URL.match(url.rstrip("/"))
    if not m:
        raise HubError(f"{url}: expected hf://ORG/NAME[@REVISION][/SUBDIR]")
    return HfLocation(m["repo"], m["rev"] or "main", (m["sub"] or "").strip("/"))


def remote_spec(spec: str, remote: bool) -> str:
    """What the CLI passes on: with `remote` a bare `org/name[@rev]` that is no local path
    means `hf://org/name[@rev]`; presets, local paths and URLs stay as they are."""
    if remote and "/" in spec and not REMOTE_URL.match(spec) and not Path(spec).exists():
        return "hf://" + spec
    return spec


# -- trees -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TreeRef:
    """A listed remote source as a worker reopens it (`reopen`): no second listing, so
    every job reads the commit and checks the ETags of the one listing. No secret: the
    worker takes its token (HF_TOKEN, AWS_*) from its own environment."""

    url: str  # a Hub revision named by its commit, or the fsspec URL
    files: tuple[tuple[str, RemoteFileInfo], ...]
    commit: str | None = None
    endpoint: str | None = None  # the Hub endpoint this process listed
    checked_copies: str | None = None  # where verified copies are read from (remote.verified)
    # files a job streams and hashes itself: (planned header, witnessed ranges) each
    streamed: tuple[tuple[str, tuple], ...] = ()

    def reopen(self) -> _Tree:
        """The tree, in a worker (`reopen`); what an unpickled `RemotePath` reads."""
        return reopen(self)


@dataclass(eq=False)
class _Tree:
    url: str
    files: dict[str, RemoteFileInfo]
    commit: str | None = None
    _headers: dict[str, bytes] = field(default_factory=dict)  # prefetched header bytes
    # a directory of copies checked against the listed SHA-256 (`remote.verified`): while
    # set, a hashed file is read from its copy, never from the store
    checked_copies: str | None = None
    # rel -> (length, SHA-256) of the header bytes this process planned with: the checked
    # copy must begin with them (`remote.verified`)
    planned_headers: dict[str, tuple[int, str]] = field(default_factory=dict)
    # rel -> (planned header, witnessed ranges): hashed files a job streams itself
    streamed: dict[str, tuple] = field(default_factory=dict)
    copier: CheckedCopies | None = None  # this process's, while its copying may begin

    def ref(self) -> TreeRef:
        endpoint = self.settings.endpoint if isinstance(self, _HubTree) else None
        return TreeRef(self.url, tuple(sorted(self.files.items())), self.commit, endpoint,
                       self.checked_copies, tuple(sorted(self.streamed.items())))

    def open(self, rel: str) -> RangeSource | LocalSource | StreamedSource:
        """A reader of `rel`'s bytes: streamed and hashed by this reader if its job reads it
        whole, else its checked copy while there are some (read as far as it is copied),
        else the store's."""
        info = self.files[rel]
        label = f"{self.url.rstrip('/')}/{rel}"
        if self.checked_copies is None or not info.sha256:
            return self.open_store(rel)
        if rel in self.streamed:
            return StreamedSource(self.open_store(rel), info.sha256, info.size,
                                  self.streamed[rel], label, Path(self.checked_copies))
        begin_pending_copies(self)  # read outside the run's jobs (a side file)
        return CopySource(Path(self.checked_copies), info.sha256, info.size, label)

    def header_bytes(self, rel: str) -> bytes:
        """8 + N bytes: the length prefix and the JSON header of a safetensors file."""
        raw = self._header_bytes(rel)
        self.planned_headers[rel] = (len(raw), hashlib.sha256(raw).hexdigest())
        return raw

    def _header_bytes(self, rel: str) -> bytes:
        cached = self._headers.pop(rel, None)
        if cached is not None:
            return cached
        info = self.files[rel]
        cache = _header_cache_path(info)
        if cache is not None and cache.is_file():
            return cache.read_bytes()
        source = self.open(rel)
        try:
            raw = _fetch_header(source)
        finally:
            source.close()
        if cache is not None:
            _store(cache, raw)
        return raw

    def prefetch_headers(self, rels: list[str]) -> None:
        """Fetch the headers of `rels` concurrently (kept until `header_bytes` takes them).
        Errors are left for `header_bytes` to raise when the file is read in order."""
        todo = [r for r in rels if r in self.files and r not in self._headers]
        if len(todo) < 2:
            return

        def one(rel: str) -> None:
            try:
                self._headers[rel] = self.header_bytes(rel)
            except (CkptError, OSError):
                pass

        from concurrent.futures import ThreadPoolExecutor  # remote sources only: ~20 ms

        with ThreadPoolExecutor(min(CONCURRENT_SMALL_READS, len(todo))) as pool:
            list(pool.map(one, todo))


def _fetch_header(source) -> bytes:
    size = source.size
    if size < 8:
        return source.read_exact(0, size)  # too short: the parser says so
    first = source.read_exact(0, min(size, HEADER_PROBE_BYTES))
    n = int.from_bytes(first[:8], "little")
    if n > MAX_HEADER_BYTES or 8 + n <= len(first):
        return first[:8 + min(n, len(first) - 8)]
    if 8 + n > size:
        return first  # runs past the end: the parser reports it from the size
    return first + source.read_exact(len(first), 8 + n - len(first))


def _header_cache_path(info: RemoteFileInfo) -> Path | None:
    root = os.environ.get(HEADER_CACHE_ENV)
    key = info.sha256 or info.identity
    if not root or not key:
        return None
    digest = hashlib.sha256(f"{key}:{info.size}".encode()).hexdigest()
    return Path(root) / digest[:2] / f"{digest}.header"


def _store(path: Path, raw: bytes) -> None:
    """Written under a temporary name and renamed: a cache entry is whole or absent."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
        tmp.write_bytes(raw)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs the next run a request


# -- the Hub -----------------------------------------------------------------------------------
class _HubTree(_Tree):
    def __init__(self, url: str, loc: HfLocation, commit: str, files, settings):
        super().__init__(url, files, commit)
        self.loc, self.settings = loc, settings
        from huggingface_hub.utils import build_hf_headers

        self._auth = build_hf_headers(token=settings.token)

    def open_store(self, rel: str) -> RangeSource:
        from huggingface_hub import hf_hub_url

        info = self.files[rel]
        path_in_repo = f"{self.loc.subdir}/{rel}" if self.loc.subdir else rel
        url = hf_hub_url(self.loc.repo_id, path_in_repo, revision=self.commit,
                         endpoint=self.settings.endpoint)
        label = f"{self.url.rstrip('/')}/{rel}"
        return RangeSource(label, info.size, self._fetcher(url, path_in_repo, label, info.size),
                           info.identity)

    def _fetcher(self, url: str, path_in_repo: str, label: str, size: int):
        from huggingface_hub.utils import get_session, hf_raise_for_status

        from ..io.hub import TRANSFER_ATTEMPTS, _hub_errors, is_timeout, with_retries
        from . import http_range  # http.client: only for the Hub's reads (start-up)

        lean = http_range.usable(url)

        def check_answer(status: int, first, start: int, stop: int) -> str | None:
            """The answer's ETag, once its commit and status are the ones asked for."""
            commit = first.get("X-Repo-Commit")
            if commit and commit != self.commit:
                raise FormatError(f"{label}: served from commit {commit[:12]}, expected "
                                  f"{self.commit[:12]} (the repository changed under us)")
            if status != 206 and (start, stop) != (0, size):
                raise HubError(f"{label}: the server ignored the byte range request (HTTP "
                               f"{status}); refusing to download the whole file")
            return _unquote_etag(first.get("X-Linked-Etag") or first.get("ETag"))

        def get(start: int, stop: int) -> tuple[bytes, str | None]:
            headers = {**self._auth, "Range": f"bytes={start}-{stop - 1}"}
            connect, read = remote_timeouts()
            if lean:  # the hot path; errors and proxies are the client's (http_range)
                etag: list[str | None] = []
                try:
                    body = http_range.get_range(
                        url, headers, (connect, read),
                        lambda status, first: etag.append(check_answer(status, first, start, stop)))
                    return body, etag[0]
                except http_range.UseClient:
                    pass
            with get_session().stream("GET", url, headers=headers,  # body read last
                                      timeout=(connect, read, read, connect)) as r:
                if r.status_code >= 400:
                    r.read()
                    hf_raise_for_status(r)
                first = r.history[0] if r.history else r  # after a CDN redirect: the Hub's
                etag = check_answer(r.status_code, first.headers, start, stop)
                return r.read(), etag

        def fetch(start: int, stop: int) -> tuple[bytes, str | None]:
            with _hub_errors(self.settings, self.loc.repo_id, self.commit, path_in_repo):
                try:
                    return with_retries(lambda: get(start, stop))
                except Exception as e:
                    if not is_timeout(e):
                        raise
                    connect, read = remote_timeouts()
                    raise HubError(
                        f"{label}: bytes [{start}, {stop}): the server stopped answering "
                        f"({type(e).__name__}, connect {connect:g} s / read {read:g} s, "
                        f"{TRANSFER_ATTEMPTS} attempts); retry later, or raise "
                        f"{READ_TIMEOUT_ENV} / {CONNECT_TIMEOUT_ENV} for a slow link") from None

        return fetch


def _unquote_etag(etag: str | None) -> str | None:
    return etag.removeprefix("W/").strip('"') if etag else None


def _open_hub(url: str) -> _HubTree:
    from huggingface_hub import HfApi, HfFileSystem

    from ..io.hub import _hub_errors, hub_settings

    loc = parse_hf_url(url)
    settings = hub_settings()
    api = HfApi(endpoint=settings.endpoint, token=settings.token)
    with _hub_errors(settings, loc.repo_id, loc.revision):
        commit = api.repo_info(loc.repo_id, revision=loc.revision).sha
    if not commit or not _COMMIT.fullmatch(commit):
        raise HubError(f"{loc.repo_id}@{loc.revision}: the Hub did not report a commit id")
    fs = HfFileSystem(endpoint=settings.endpoint, token=settings.token, skip_instance_cache=True)
    root = f"{loc.repo_id}@{commit}" + (f"/{loc.subdir}" if loc.subdir else "")
    with _hub_errors(settings, loc.repo_id, commit, loc.subdir or None):
        try:
            entries = fs.find(root, detail=True, withdirs=False)
        except FileNotFoundError:
            raise HubError(f"{url}: no such folder at commit {commit[:12]}") from None
    files = {}
    prefix = root + "/"
    for name, e in entries.items():
        if e.get("type") != "file" or not name.startswith(prefix):
            continue
        lfs = e.get("lfs") or None
        sha256 = (lfs.get("sha256") or lfs.get("oid")) if isinstance(lfs, dict) else None
        files[name[len(prefix):]] = RemoteFileInfo(int(e["size"]), sha256 or e.get("blob_id"),
                                                   sha256)
    if not files and loc.subdir:
        raise HubError(f"{url}: no such folder at commit {commit[:12]}")
    # named by commit: every message, journal and worker process sees the one revision read
    pinned = f"hf://{loc.repo_id}@{commit}" + (f"/{loc.subdir}" if loc.subdir else "")
    return _HubTree(pinned, loc, commit, files, settings)


# -- other object stores (fsspec) -----------------------------------------------------------------
class _FsspecTree(_Tree):
    def __init__(self, url: str, fs, root: str, files):
        super().__init__(url, files)
        self._fs, self._pid, self.root = fs, os.getpid(), root

    @property
    def fs(self):
        """The file system, made again in a forked worker: async backends (s3fs) refuse to
        be used across a fork. The listing, and so the ETags every read must match, stay."""
        if self._pid != os.getpid():
            import fsspec

            self._fs = fsspec.core.url_to_fs(self.url, skip_instance_cache=True)[0]
            self._pid = os.getpid()
        return self._fs

    def open_store(self, rel: str) -> RangeSource:
        info = self.files[rel]
        path, label = f"{self.root}/{rel}", f"{self.url.rstrip('/')}/{rel}"
        self.fs.invalidate_cache(path)
        try:
            # unbuffered: RangeSource is the one buffer. s3fs sends each read with
            # If-Match: <the ETag seen at open>, so a replaced object fails the read
            f = self.fs.open(path, "rb", cache_type="none")
        except FileNotFoundError:
            raise FormatError(f"{label}: disappeared since it was listed") from None
        now = _identity(getattr(f, "details", None) or self.fs.info(path))
        if info.identity and now and now != info.identity:
            f.close()
            raise FormatError(f"{label}: changed since it was listed (ETag {now[:16]}, expected "
                              f"{info.identity[:16]}); rerun to read one consistent version")
        lock = threading.Lock()

        def fetch(start: int, stop: int) -> tuple[bytes, str | None]:
            with lock:
                try:
                    f.seek(start)
                    return f.read(stop - start), None
                except FileNotFoundError:
                    raise FormatError(f"{label}: disappeared while being read") from None
                except OSError as e:
                    # s3fs: EBUSY "... and Etag ... no longer exists" (its If-Match failed)
                    if e.errno == errno.EBUSY or "PreconditionFailed" in str(e):
                        raise FormatError(f"{label}: changed while being read (ETag no longer "
                                          f"{(now or '')[:16]}); rerun to read one consistent "
                                          f"version") from None
                    raise CkptError(f"{label}: bytes [{start}, {stop}): read failed: {e}"
                                    ) from None

        return RangeSource(label, info.size, fetch, info.identity, on_close=f.close)


def _identity(info: dict) -> str | None:
    for key in ("ETag", "etag", "md5Hash", "generation", "checksum"):
        if info.get(key):
            return str(info[key]).strip('"')
    return None


def fsspec_for(url: str):
    """fsspec's file system for `url` and the path in it (no trailing slash), for sources
    and object-store destinations alike; MissingDependencyError naming the extra when the
    scheme's backend (s3fs, gcsfs) is not installed."""
    import fsspec

    scheme = REMOTE_URL.match(url)["scheme"]
    options = {}
    if scheme == "s3":  # botocore's own defaults: 60 s each
        connect, read = remote_timeouts()
        options["config_kwargs"] = {"connect_timeout": connect, "read_timeout": read}
    try:
        fs, root = fsspec.core.url_to_fs(url, skip_instance_cache=True,  # env may change
                                         **options)
    except ImportError as e:
        extra = {"s3": "s3", "gs": "gcs", "gcs": "gcs"}.get(scheme)
        hint = f"pip install 'ckpt-tools[{extra}]'" if extra else "install its fsspec backend"
        raise MissingDependencyError(f"{url}: no fsspec backend for {scheme}:// ({e}); "
                                     f"{hint}") from None
    except ValueError as e:
        raise CkptError(f"{url}: {e}") from None
    return fs, root.rstrip("/")


# What each object store's client looks for when it signs a request, for the message.
_CREDENTIAL_SOURCES = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials, or "
          "an instance role (or AWS_NO_SIGN_REQUEST=yes for a public bucket)",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS, `gcloud auth application-default login`, or a "
          "service account",
}


def _credential_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    for module, names in (("botocore.exceptions", ("NoCredentialsError",
                                                  "PartialCredentialsError")),
                          ("google.auth.exceptions", ("DefaultCredentialsError",))):
        try:
            loaded = importlib.import_module(module)
        except ImportError:
            continue
        found += [getattr(loaded, n) for n in names if hasattr(loaded, n)]
    return tuple(found)


@contextmanager
def store_errors(url: str) -> Iterator[None]:
    """Missing object-store credentials as one line naming what was looked for."""
    try:
        yield
    except _credential_errors() as e:
        scheme = REMOTE_URL.match(url)["scheme"] if REMOTE_URL.match(url) else ""
        looked = _CREDENTIAL_SOURCES.get("gs" if scheme == "gcs" else scheme,
                                         "the store's credentials")
        raise CredentialsError(f"{url}: no credentials to access it ({type(e).__name__}: "
                               f"{e}); set {looked}") from None


def _open_fsspec(url: str) -> _FsspecTree:
    fs, root = fsspec_for(url)
    with store_errors(url):
        try:
            found = fs.find(root, detail=True)
        except FileNotFoundError:
            found = {}
        except OSError as e:
            raise CkptError(f"{url}: cannot list ({e})") from None
    files = {}
    for name, e in found.items():
        name = name.rstrip("/")
        if e.get("type", "file") == "file" and name.startswith(root + "/"):
            files[name[len(root) + 1:]] = RemoteFileInfo(int(e["size"]), _identity(e))
    if not files:
        raise FormatError(f"{url}: no such directory (nothing listed under it)")
    return _FsspecTree(url.rstrip("/"), fs, root, files)


_OPENED: dict[tuple, RemotePath] = {}
_OPEN_LOCK = threading.Lock()
_REOPENED: dict[TreeRef, _Tree] = {}


def reopen(ref: TreeRef) -> _Tree:
    """The tree `ref` describes, without listing it (once per process and description:
    a worker's many jobs on one source share its readers' client)."""
    with _OPEN_LOCK:
        tree = _REOPENED.get(ref)
        if tree is None:
            files = dict(ref.files)
            if ref.commit is not None:  # the Hub: the URL names the commit
                from ..io.hub import hub_settings

                settings = hub_settings()
                if ref.endpoint and ref.endpoint != settings.endpoint:
                    settings = type(settings)(ref.endpoint, settings.token, settings.cache_dir)
                tree = _HubTree(ref.url, parse_hf_url(ref.url), ref.commit, files, settings)
            else:
                import fsspec

                fs, root = fsspec.core.url_to_fs(ref.url, skip_instance_cache=True)
                tree = _FsspecTree(ref.url, fs, root.rstrip("/"), files)
            tree.checked_copies = ref.checked_copies
            tree.streamed = dict(ref.streamed)
            _REOPENED[ref] = tree
        return tree


def open_remote(url: str, *, fresh: bool = False) -> RemotePath:
    """The root of the remote source `url`, listed once per process (so one command reads
    one commit, however many times it names the source); `fresh` lists it again (e.g. a
    destination just written)."""
    # the same URL on another endpoint or with another token is another source
    key = (url, os.environ.get("HF_ENDPOINT"), os.environ.get("HF_TOKEN"),
           os.environ.get("AWS_ENDPOINT_URL"))
    with _OPEN_LOCK:
        root = None if fresh else _OPENED.get(key)
        if root is None:
            try:
                tree = _open_hub(url) if url.startswith("hf://") else _open_fsspec(url)
            except CkptError:
                root = _as_file(url)  # hf://org/name/model.safetensors: one file
                if root is None:
                    raise
            else:
                root = _OPENED[(tree.url, *key[1:])] = RemotePath(tree)
            _OPENED[key] = root
        return root


def _as_file(url: str) -> RemotePath | None:
    """`url` as a file of its parent folder (listed instead), or None when it is not one."""
    parent, _, name = url.rstrip("/").rpartition("/")
    if not name or parent.endswith(("://", ":/")) or (url.startswith("hf://")
                                                      and parent.count("/") < 3):
        return None  # the root of a bucket or a repository is no file
    try:
        folder = _open_hub(parent) if url.startswith("hf://") else _open_fsspec(parent)
    except CkptError:
        return None
    path = RemotePath(folder) / name
    return path if path.is_file() else None


def forget_remote() -> None:
    """Drop the listings kept by `open_remote` (tests start each case afresh)."""
    with _OPEN_LOCK:
        _OPENED.clear()
        _REOPENED.clear()


def as_path(spec: str | os.PathLike | RemotePath) -> Path | RemotePath:
    """A `RemotePath` for a remote URL (opened once per URL and process), else a `Path`."""
    if isinstance(spec, RemotePath):
        return spec
    if isinstance(spec, str) and is_remote(spec):
        return open_remote(spec)  # the client libraries load only for remote sources
    return Path(spec)
