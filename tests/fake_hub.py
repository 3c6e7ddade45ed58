"""A small fake of the Hugging Face Hub HTTP API, on 127.0.0.1, for download tests.

It serves what `huggingface_hub` 2.4 calls for a model download and nothing else:

- `GET /api/models/{repo}[/revision/{rev}]?blobs=true`: repo info with `sha` and
  `siblings` (size, blobId, lfs {size, sha256, pointerSize}), as `HfApi.model_info`
  parses it;
- `GET /api/models/{repo}/tree/{rev}[/{dir}][?recursive=true]`: the listing `HfApi.
  list_repo_tree` reads (`snapshot_download`, `HfFileSystem.ls/find`): files with size,
  oid and lfs {oid, size, pointerSize}, and, when not recursive, the sub-folders as
  `directory` entries; `POST /api/models/{repo}/paths-info/{rev}` (form `paths=`): the same
  entries for the paths asked (`HfFileSystem.info`);
- `HEAD|GET /{repo}/resolve/{rev}/{file}`: the file, with `X-Repo-Commit`, `ETag` (the
  LFS sha256, or the git blob id), `X-Linked-Etag` / `X-Linked-Size` for LFS files and
  `Content-Length`; `Range: bytes=N-` or `bytes=N-M` gets a 206 with `Content-Range`;
- errors with the `X-Error-Code` the client maps to its error classes: 404
  `RepoNotFound` / `RevisionNotFound` / `EntryNotFound`, and 401 `GatedRepo` for a gated
  repo without a valid token (its info stays public, as on the real Hub).

No Xet header is ever sent, so the client takes the plain HTTP path. Every request is
logged (`FakeHub.log`, with the body bytes sent). Faults for tests: `corrupt(file)` serves
same-length wrong bytes, `cut(file, after, times)` drops the connection after `after` bytes
of a GET, `fail(file, status)` answers GETs of the file with that status (e.g. a 404 after
the listing), `short(file)` sends a range one byte short (its headers say so: a truncated
range), `change_etag(file)` serves another ETag (the object was replaced under the reader).
`ignore_ranges(file)` answers ranges with the whole file (HTTP 200). `stall(file, after)`
sends the headers and `after` body bytes of each GET, then nothing until the hub stops.
`limit_rate(bytes_per_second)` makes every body share one link of that speed (benchmarks).
`hold(file, after)` makes GETs of ranges reaching past byte `after` wait for `release(file)`
(a slow tail: what was asked before it is served at once).
`add_commit(..., hashed=False)` skips hashing the content (sparse benchmark data of hundreds
of GB): sizes are right, sha256 and blob ids are then derived from name and size.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".model")
POINTER_SIZE = 134
CHUNK = 1 << 20
CORRUPT_BYTES = 64  # a corrupt file has its first bytes flipped: same size, wrong hash


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int
    sha256: str
    blob_id: str
    lfs: bool

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id


@dataclass
class Commit:
    sha: str
    root: Path
    files: dict[str, RepoFile]


@dataclass
class Repo:
    repo_id: str
    gated: bool = False
    refs: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        sha = self.refs.get(revision, revision)
        return self.commits.get(sha)


@dataclass
class LoggedRequest:
    """Logged when the request arrives (so the log order is the arrival order)."""

    method: str
    path: str  # unquoted
    range: str | None
    authorized: bool
    status: int = 0  # set once the answer is decided
    sent: int = 0  # body bytes written


class FakeHub:
    """Start with `with FakeHub(tmp_path / "hub") as hub:`; point the client at `hub.url`."""

    def __init__(self, root: str | Path, *, token: str = "hf_test_token"):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.log: list[LoggedRequest] = []
        self._corrupt: dict[str, int] = {}  # path -> first flipped byte
        self._cuts: dict[str, list[int]] = {}  # file -> [after_bytes, remaining_times]
        self._fail: dict[str, int] = {}  # file -> HTTP status of its GETs
        self._fail_times: dict[str, int] = {}  # file -> GETs left to fail (absent: all)
        self._short: set[str] = set()
        self._etag_changed: set[str] = set()
        self._no_ranges: set[str] = set()
        self._stalls: dict[str, int] = {}  # file -> body bytes sent before going silent
        self._holds: dict[str, tuple[int, threading.Event]] = {}  # file -> (byte, released)
        self._rate: float | None = None  # bytes per second of all bodies together (a link)
        self._link_free_at = 0.0  # when the link has sent every byte granted so far
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- repos ---------------------------------------------------------------------------
    def add_commit(self, repo_id: str, src: str | Path, *, branch: str = "main",
                   gated: bool = False, copy: bool = True, hashed: bool = True) -> str:
        """Publish the files of directory `src` as a new commit on `branch`; returns its sha.
        With `copy=False` the files are served from `src`, which must then stay unchanged;
        with `hashed=False` contents are not read (see the module docstring)."""
        src = Path(src)
        repo = self.repos.setdefault(repo_id, Repo(repo_id))
        repo.gated = repo.gated or gated
        parent = repo.refs.get(branch, "")
        files: dict[str, RepoFile] = {}
        for p in sorted(q for q in src.rglob("*") if q.is_file()):
            rel = p.relative_to(src).as_posix()
            size = p.stat().st_size
            sha256, blob = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
            if not hashed:
                sha256.update(f"{rel}:{size}".encode())
                blob.update(rel.encode())
            with open(p, "rb") as f:
                while hashed and (chunk := f.read(CHUNK)):
                    sha256.update(chunk)
                    blob.update(chunk)
            files[rel] = RepoFile(rel, size, sha256.hexdigest(), blob.hexdigest(),
                                  rel.endswith(LFS_SUFFIXES))
        listing = json.dumps([parent, [(f.path, f.sha256) for f in files.values()]])
        sha = hashlib.sha1(listing.encode()).hexdigest()
        root = self.root / repo_id / sha if copy else src
        if not root.exists():
            shutil.copytree(src, root)
        repo.commits[sha] = Commit(sha, root, files)
        repo.refs[branch] = sha
        return sha

    def corrupt(self, path: str, at: int = 0) -> None:
        """Serve wrong bytes (same length) for `path` on GET: CORRUPT_BYTES flipped from byte
        `at` (past the header: a file that parses, with lying tensor bytes); metadata
        stays right."""
        self._corrupt[path] = at

    def serve_correctly(self, path: str) -> None:
        self._corrupt.pop(path, None)

    def cut(self, path: str, after: int, times: int = 1) -> None:
        """Drop the connection after `after` body bytes of the next `times` GETs of `path`."""
        self._cuts[path] = [after, times]

    def fail(self, path: str, status: int = 404, times: int | None = None) -> None:
        """Answer every GET of `path` (the next `times` ones, if given) with `status`
        (listings still show the file)."""
        self._fail[path] = status
        if times is not None:
            self._fail_times[path] = times

    def short(self, path: str) -> None:
        """Send ranges of `path` one byte short, with headers that say so."""
        self._short.add(path)

    def ignore_ranges(self, path: str) -> None:
        """Answer range requests for `path` with the whole file (HTTP 200), as some proxies do."""
        self._no_ranges.add(path)

    def stall(self, path: str, after: int) -> None:
        """Send `after` body bytes of every GET of `path`, then go silent (never close)."""
        self._stalls[path] = after

    def hold(self, path: str, after: int) -> None:
        """GETs of `path` whose range reaches past byte `after` wait until `release(path)`
        (or the hub stops)."""
        self._holds[path] = (after, threading.Event())

    def limit_rate(self, bytes_per_second: float | None) -> None:
        """Share one link of `bytes_per_second` between every body sent (a benchmark's
        network); None: as fast as loopback goes."""
        self._rate = bytes_per_second

    def _take_link(self, nbytes: int) -> None:
        """Wait until the link has had time to send `nbytes` more (all connections share it)."""
        with self._lock:
            now = time.monotonic()
            self._link_free_at = max(self._link_free_at, now) + nbytes / self._rate
            wait = self._link_free_at - now
        if wait > 0:
            time.sleep(wait)

    def release(self, path: str) -> None:
        self._holds.pop(path)[1].set()

    def change_etag(self, path: str) -> None:
        """Serve `path` with another ETag from now on, as if the object had been replaced."""
        self._etag_changed.add(path)

    def sent(self, since: int = 0) -> int:
        """Body bytes the server sent, over log[since:]."""
        return sum(r.sent for r in self.log[since:])

    # -- the request log -----------------------------------------------------------------
    def gets(self, name: str | None = None, since: int = 0) -> list[LoggedRequest]:
        """GET /resolve/ requests (of the file whose last path part is `name`), from log[since:]."""
        return [r for r in self.log[since:] if r.method == "GET" and "/resolve/" in r.path
                and (name is None or r.path.rsplit("/", 1)[-1] == name)]

    def fetched(self) -> set[str]:
        """File names (last path part) that were GET from /resolve/ with a 2xx answer."""
        return {r.path.rsplit("/", 1)[-1] for r in self.gets() if 200 <= r.status < 300}

    # -- server --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start() the hub first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        for _, released in self._holds.values():
            released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self.log.append(entry)

    def _take_cut(self, path: str) -> int | None:
        with self._lock:
            cut = self._cuts.get(path)
            if not cut or cut[1] <= 0:
                return None
            cut[1] -= 1
            return cut[0]


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_POST(self) -> None:
        self._dispatch(head=False)

    # -- routing -------------------------------------------------------------------------
    def _dispatch(self, head: bool) -> None:
        raw = urlsplit(self.path).path
        self._entry = LoggedRequest(self.command, unquote(raw), self.headers.get("Range"),
                                    self._authorized())
        self.fake._record(self._entry)
        try:
            if raw.startswith("/api/models/"):
                self._model_info(raw.removeprefix("/api/models/"))
            elif "/resolve/" in raw:
                repo_part, _, rest = raw.lstrip("/").partition("/resolve/")
                rev, _, file = rest.partition("/")
                self._resolve(unquote(repo_part), unquote(rev), unquote(file), head)
            else:
                self._error(404, None, "Not Found")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a cancelled download)

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.fake.token}"

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
        return repo

    def _commit(self, repo: Repo, revision: str) -> Commit | None:
        commit = repo.resolve(revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    def _model_info(self, rest: str) -> None:
        if "/tree/" in rest:
            self._tree(*rest.split("/tree/", 1))
            return
        if "/paths-info/" in rest:
            self._paths_info(*rest.split("/paths-info/", 1))
            return
        repo_part, _, rev = rest.partition("/revision/")
        repo = self._repo(unquote(repo_part))
        if repo is None:
            return
        commit = self._commit(repo, unquote(rev) if rev else "main")
        if commit is None:
            return
        siblings = []
        for f in commit.files.values():
            entry = {"rfilename": f.path, "size": f.size, "blobId": f.blob_id}
            if f.lfs:
                entry["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": POINTER_SIZE}
            siblings.append(entry)
        doc = {"_id": repo.repo_id, "id": repo.repo_id, "modelId": repo.repo_id, "sha": commit.sha,
               "private": False, "gated": "manual" if repo.gated else False, "disabled": False,
               "tags": [], "siblings": siblings}
        self._send(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})

    @staticmethod
    def _file_item(f: RepoFile) -> dict:
        item = {"type": "file", "path": f.path, "size": f.size, "oid": f.blob_id}
        if f.lfs:
            item["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": POINTER_SIZE}
        return item

    @staticmethod
    def _folder_item(path: str) -> dict:
        return {"type": "directory", "path": path,
                "oid": hashlib.sha1(path.encode()).hexdigest()}

    def _tree(self, repo_part: str, rest: str) -> None:
        """What `list_repo_tree` reads: below `dir` (or the root), every file when
        `recursive`, else the direct children with sub-folders as `directory` entries."""
        repo = self._repo(unquote(repo_part))
        rev, _, folder = rest.partition("/")
        commit = repo and self._commit(repo, unquote(rev))
        if commit is None:
            return
        folder = unquote(folder).strip("/")
        prefix = folder + "/" if folder else ""
        query = parse_qs(urlsplit(self.path).query)
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        below = [f for f in commit.files.values() if f.path.startswith(prefix)]
        if folder and not below:
            self._error(404, "EntryNotFound", f"{folder} does not exist on \"{rev}\"")
            return
        items, folders = [], {}
        for f in below:
            head, sep, _ = f.path[len(prefix):].partition("/")
            if sep and not recursive:
                folders.setdefault(prefix + head, None)
                continue
            items.append(self._file_item(f))
        items += [self._folder_item(p) for p in folders]
        self._send(200, json.dumps(items).encode(), {"Content-Type": "application/json"})

    def _paths_info(self, repo_part: str, rev: str) -> None:
        """`get_paths_info`: entries for the `paths` of a form-encoded POST body."""
        repo = self._repo(unquote(repo_part))
        commit = repo and self._commit(repo, unquote(rev))
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode()) if length else {}
        if commit is None:
            return
        items = []
        for path in form.get("paths", []):
            path = path.strip("/")
            if path in commit.files:
                items.append(self._file_item(commit.files[path]))
            elif any(f.startswith(path + "/") for f in commit.files):
                items.append(self._folder_item(path))
        self._send(200, json.dumps(items).encode(), {"Content-Type": "application/json"})

    def _resolve(self, repo_id: str, revision: str, file: str, head: bool) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        if repo.gated and not self._authorized():
            self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have "
                        "access to it and be authenticated to access it. Please log in.")
            return
        commit = self._commit(repo, revision)
        if commit is None:
            return
        meta = commit.files.get(file)
        if meta is None:
            self._error(404, "EntryNotFound", f"{file} does not exist on \"{revision}\"",
                        {"X-Repo-Commit": commit.sha})
            return
        if not head and file in self.fake._fail:
            status = self.fake._fail[file]
            with self.fake._lock:
                left = self.fake._fail_times.get(file)
                if left is not None:
                    self.fake._fail_times[file] = left - 1
                    if left <= 1:
                        del self.fake._fail[file], self.fake._fail_times[file]
            self._error(status, "EntryNotFound" if status == 404 else None,
                        f"{file}: HTTP {status}", {"X-Repo-Commit": commit.sha})
            return
        etag = meta.etag + ("-replaced" if file in self.fake._etag_changed else "")
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if meta.lfs:
            linked = meta.sha256 + ("-replaced" if file in self.fake._etag_changed else "")
            headers |= {"X-Linked-Etag": f'"{linked}"', "X-Linked-Size": str(meta.size)}
        start, stop, status = 0, meta.size, 200
        rng = self.headers.get("Range")
        if rng and not head and file not in self.fake._no_ranges:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start = int(first)
            stop = min(meta.size, int(last) + 1) if last else meta.size
            if start >= meta.size or stop <= start:
                self._error(416, None, "Range Not Satisfiable",
                            {"Content-Range": f"bytes */{meta.size}"})
                return
            if file in self.fake._short:
                stop -= 1
            status = 206
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{meta.size}"
        if head:
            self._send(200, b"", headers, length=meta.size)
            return
        length = stop - start
        hold = self.fake._holds.get(file)
        if hold is not None and stop > hold[0]:
            hold[1].wait()
        cut = self.fake._take_cut(file)
        self._entry.status = status
        self.send_response(status)
        for k, v in (headers | {"Content-Length": str(length)}).items():
            self.send_header(k, v)
        self.end_headers()
        limit = length if cut is None else min(cut, length)
        stall = self.fake._stalls.get(file)
        if stall is not None:
            limit = min(limit, stall)
        self._entry.sent = limit
        with open(commit.root / file, "rb") as f:  # streamed: shards can be large in benches
            if limit == length and file not in self.fake._corrupt and self.fake._rate is None:
                self.connection.sendfile(f, start, length)  # zero-copy: keeps the server fast
                return
            f.seek(start)
            pos = start
            while pos < start + limit:
                chunk = f.read(min(CHUNK, start + limit - pos))
                at = self.fake._corrupt.get(file)
                if at is not None and pos < at + CORRUPT_BYTES and pos + len(chunk) > at:
                    lo, hi = max(at - pos, 0), min(at + CORRUPT_BYTES - pos, len(chunk))
                    chunk = chunk[:lo] + bytes(b ^ 0x5A for b in chunk[lo:hi]) + chunk[hi:]
                if self.fake._rate is not None:
                    self.fake._take_link(len(chunk))
                self.wfile.write(chunk)
                pos += len(chunk)
        if stall is not None:  # a server that stops answering, connection left open
            self.wfile.flush()
            self.fake._stopped.wait()
            return
        if limit < length:  # the transfer is interrupted mid-way
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    # -- responses -----------------------------------------------------------------------
    def _error(self, status: int, code: str | None, message: str,
               extra: dict | None = None) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, json.dumps({"error": message}).encode(), headers)

    def _send(self, status: int, body: bytes, headers: dict, length: int | None = None) -> None:
        self._entry.status = status
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self._entry.sent = len(body)
            self.wfile.write(body)


CLIENT_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
              "HF_TOKEN_PATH", "HF_HUB_OFFLINE", "CKPT_HEADER_CACHE")


def point_client_at(fake: FakeHub, monkeypatch, home: Path) -> None:
    """Point huggingface_hub at `fake` with HF_HOME at `home` and none of the caller's
    tokens, caches or offline switches."""
    for var in CLIENT_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
