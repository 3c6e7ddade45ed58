"""`ckpt download`: plan the download, fetch only what is needed, verify every byte.

Plan first, from the repo's file list at one commit: a full download, `config_only`
(config, index, tokenizer and code files) or `layers=(A, B)`, which reads config.json and
model.safetensors.index.json and fetches only the shards holding the tensors the tensor
plan puts in layers A..B (weights and their scales, wherever the index puts them). The plan
names every file and byte and checks free disk space before anything large is fetched.

Then fetch at the resolved commit (so a branch moving mid-download cannot mix revisions)
and verify: each file's size, LFS files against the Hub's SHA-256 and git-stored files
against their git blob id; a file that fails is moved aside (`.NAME.corrupt`, or dropped
from the shared cache) so it never looks complete, and the run fails naming it. The
safetensors headers of the fetched shards are checked against the tensor plan (names,
dtypes, shapes, index placement, coverage), and a manifest (path, size, SHA-256, commit) is
written for offline re-checks with `ckpt validate --checksums`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import partial
from pathlib import Path
from typing import Literal

from pydantic import Field, computed_field

from . import hub
from .checkpoint import Checkpoint
from .errors import (
    ARGUMENT_PLACEHOLDER,
    ArgumentError,
    ConfigError,
    FormatError,
    HubError,
    MissingTensorError,
    VerificationError,
)
from .index import INDEX_FILE, SINGLE_FILE, read_index
from .inventory import inspect
from .manifest import (
    MANIFEST_FILE,
    Manifest,
    ManifestEntry,
    read_manifest,
    sha256_file,
    write_manifest,
)
from .policy import refuses
from .progress import Progress, or_null
from .results import Result
from .sources import CONFIG_FILE
from .tensor_plan import TensorPlan, TensorSpec
from .validate import validate

FileKind = Literal["config", "index", "tokenizer", "code", "weights", "other"]
FILE_KINDS: tuple[FileKind, ...] = ("config", "index", "tokenizer", "code", "weights", "other")
Mode = Literal["full", "layers", "config-only"]

# What `config_only` and `layers` fetch besides shards: enough to run info/diff/validate.
METADATA_KINDS: tuple[FileKind, ...] = ("config", "index", "tokenizer", "code")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack",
                   ".onnx")
TOKENIZER_FILES = {"special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
                   "chat_template.jinja", "chat_template.json"}
DEFAULT_WORKERS = 8  # as huggingface_hub's snapshot_download: downloads wait on the network


class PlannedFile(Result):
    path: str = Field(description="Path in the repository, '/'-separated")
    kind: FileKind
    size: int = Field(ge=0)
    lfs: bool
    sha256: str | None = Field(None, description="SHA-256 the Hub reports (LFS files)")
    present: bool = Field(description="Already at the destination with this size")


class DownloadPlan(Result):
    """What a download will fetch, before it fetches it."""

    repo_id: str
    revision: str = Field(description="As asked: branch, tag or commit")
    commit: str = Field(description="The commit the revision resolved to; every file comes from it")
    mode: Mode
    layers: tuple[int, int] | None = None
    destination: str
    files: list[PlannedFile]
    total_bytes: int
    lfs_bytes: int
    download_bytes: int = Field(description="Bytes of planned files not yet at the destination")
    repo_files: int
    repo_bytes: int
    tensors: int | None = Field(None, description="Tensors the tensor plan puts in the layers")
    free_bytes: int | None = Field(None, description="Free space at the destination")
    fits: bool

    @computed_field(description="The planned files fit in the free space")
    @property
    def ok(self) -> bool:
        return self.fits


class FileResult(Result):
    path: str
    size: int
    check: Literal["lfs-sha256", "git-blob", "size"] = Field(
        description="What the bytes were checked against")
    status: Literal["verified", "corrupt"]
    sha256: str | None = None
    transferred: int = Field(description="Bytes received in this run (0: already complete)")
    detail: str | None = None
    moved_to: str | None = Field(None, description="Where a corrupt file was moved ('' = deleted)")


class TensorCheck(Result):
    method: Literal["header", "validate"]
    shards: int
    tensors: int = Field(description="Tensors in the fetched shards, each checked against the plan")
    expected: int = Field(description="Plan tensors the selection must cover (the layers, or all "
                                      "when every shard was fetched; 0: per-shard checks only)")
    complete: bool = Field(description="Every expected tensor was found")
    problems: list[str]


class DownloadReport(Result):
    plan: DownloadPlan
    local_dir: str
    files: list[FileResult]
    transferred_bytes: int
    verified: bool = Field(description="Every file's bytes were hashed and matched the Hub")
    tensor_check: TensorCheck | None
    manifest: str | None
    notes: list[str] = []

    @computed_field(description="Every file verified and every fetched shard matches the "
                                "tensor plan")
    @property
    def ok(self) -> bool:
        tensors_ok = self.tensor_check is None or not self.tensor_check.problems
        return tensors_ok and all(f.status == "verified" for f in self.files)


# -- planning -------------------------------------------------------------------------------
def file_kind(path: str) -> FileKind:
    """Classify a repository file by name."""
    name = path.rsplit("/", 1)[-1]
    if name == INDEX_FILE or name.endswith(".safetensors.index.json"):
        return "index"
    if name.endswith(WEIGHT_SUFFIXES):
        return "weights"
    if "/" in path:
        return "other"
    if name in (CONFIG_FILE, "generation_config.json") or (
            name.startswith("configuration_") and name.endswith(".py")):
        return "config"
    if name.startswith("tokenizer") or name in TOKENIZER_FILES or name.endswith(".tiktoken"):
        return "tokenizer"
    return "code" if name.endswith(".py") else "other"


def _matches(path: str, patterns: Sequence[str]) -> bool:
    # huggingface_hub's convention: "dir/" means everything under dir
    return any(fnmatch.fnmatch(path, p + "*" if p.endswith("/") else p) for p in patterns)


def _check_layers(layers: tuple[int, int] | None) -> None:
    if layers is not None and not (0 <= layers[0] <= layers[1]):
        raise ArgumentError(f"layers {layers[0]}-{layers[1]}: expected 0 <= A <= B")


def _free_bytes(path: Path) -> int | None:
    for p in (path, *path.parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return None
    return None


def _index_shards(repo: hub.RemoteRepo, index_path: Path) -> list[str]:
    """The shards the index names; each must be a file of the repository (catches
    incomplete uploads before anything large is fetched)."""
    shards = read_index(index_path).shards
    names = {f.path for f in repo.files}
    absent = [s for s in shards if s not in names]
    if absent:
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        raise FormatError(f"{repo.repo_id}@{repo.commit[:12]}: {INDEX_FILE} names shard "
                          f"'{absent[0]}'{more}, which is not in the repository")
    return shards


def _layer_selection(repo: hub.RemoteRepo, fetch: Callable[[str], Path],
                     layers: tuple[int, int]) -> tuple[set[str], int]:
    """The shards holding every tensor of layers A..B (scales included), and the count."""
    names = {f.path for f in repo.files}
    where = f"{repo.repo_id}@{repo.commit[:12]}"
    if CONFIG_FILE not in names:
        raise FormatError(f"{where}: no {CONFIG_FILE}; {ARGUMENT_PLACEHOLDER} needs it to know "
                          f"the tensors", argument="layers", value=layers)
    root = fetch(CONFIG_FILE).parent
    if INDEX_FILE in names:
        fetch(INDEX_FILE)
        shards = set(_index_shards(repo, root / INDEX_FILE))
    elif SINGLE_FILE in names:
        shards = {SINGLE_FILE}  # one file holds every layer
    else:
        raise FormatError(f"{where}: neither {INDEX_FILE} nor {SINGLE_FILE} in the repository")
    with Checkpoint(root) as ckpt:
        config = ckpt.config
        count = config.num_hidden_layers + config.num_mtp_layers
        if layers[1] >= count:
            mtp = f" + {config.num_mtp_layers} MTP" if config.num_mtp_layers else ""
            raise ConfigError(f"{where}: layers {layers[0]}-{layers[1]} out of range: the model "
                              f"has layers 0-{count - 1} ({config.num_hidden_layers} decoder{mtp})")
        if shards == {SINGLE_FILE}:  # one file holds every layer; the layout is the config's
            return shards, len(_layer_specs(TensorPlan(config), layers))
        plan, weight_map = ckpt.plan, ckpt.index.weight_map  # layout as the index shows it
    wanted = _layer_specs(plan, layers)
    missing = [s for s in wanted if s.name not in weight_map]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MissingTensorError(f"{where}: {INDEX_FILE}: tensor '{missing[0].name}' of layer "
                                 f"{missing[0].layer} is not in the index{more}")
    return {weight_map[s.name] for s in wanted}, len(wanted)


def _layer_specs(plan: TensorPlan, layers: tuple[int, int]) -> list[TensorSpec]:
    """The plan's tensors in layers first..last: weights, scales, norms, router, experts."""
    return [s for s in plan.specs if s.layer is not None and layers[0] <= s.layer <= layers[1]]


def _plan(repo: hub.RemoteRepo, dest: Path, fetch: Callable[[str], Path], *,
          include: Sequence[str], exclude: Sequence[str], layers: tuple[int, int] | None,
          config_only: bool) -> DownloadPlan:
    files = {f.path: f for f in repo.files}
    kinds = {p: file_kind(p) for p in files}
    mode: Mode = "layers" if layers else "config-only" if config_only else "full"
    tensors = None
    required: set[str] = set()
    if mode == "full":
        chosen = {p for p in files
                  if (not include or _matches(p, include)) and not _matches(p, exclude)}
        if INDEX_FILE in chosen:
            _index_shards(repo, fetch(INDEX_FILE))
    else:
        chosen = {p for p in files if kinds[p] in METADATA_KINDS}
        if layers:
            shards, tensors = _layer_selection(repo, fetch, layers)
            required = shards | ({CONFIG_FILE, INDEX_FILE} & set(files))
            chosen |= shards
        chosen |= {p for p in files if include and _matches(p, include)}
        dropped = {p for p in chosen if _matches(p, exclude)}
        if dropped & required:
            raise ArgumentError(f"exclude removes '{sorted(dropped & required)[0]}', which "
                                f"{ARGUMENT_PLACEHOLDER} needs", argument="layers", value=layers)
        chosen -= dropped
    order = {k: i for i, k in enumerate(FILE_KINDS)}
    planned = []
    for p in sorted(chosen, key=lambda p: (order[kinds[p]], p)):
        f = files[p]
        local = dest / p
        present = local.is_file() and local.stat().st_size == f.size
        planned.append(PlannedFile(path=p, kind=kinds[p], size=f.size, lfs=f.lfs, sha256=f.sha256,
                                   present=present))
    download_bytes = sum(f.size for f in planned if not f.present)
    free = _free_bytes(dest)
    return DownloadPlan(
        repo_id=repo.repo_id, revision=repo.revision, commit=repo.commit, mode=mode, layers=layers,
        destination=str(dest), files=planned, total_bytes=sum(f.size for f in planned),
        lfs_bytes=sum(f.size for f in planned if f.lfs), download_bytes=download_bytes,
        repo_files=len(files), repo_bytes=sum(f.size for f in files.values()), tensors=tensors,
        free_bytes=free, fits=free is None or free >= download_bytes)


def _destination(repo: hub.RemoteRepo, local_dir: Path | None, settings: hub.HubSettings) -> Path:
    if local_dir is not None:
        return local_dir
    return hub.snapshot_dir(repo.repo_id, repo.commit, settings)


def plan_download(repo_id: str, *, revision: str = hub.DEFAULT_REVISION,
                  local_dir: str | Path | None = None, include: Sequence[str] = (),
                  exclude: Sequence[str] = (), layers: tuple[int, int] | None = None,
                  config_only: bool = False, token: str | bool | None = None,
                  cache_dir: str | Path | None = None) -> DownloadPlan:
    """The files a download would fetch, their bytes, and whether they fit on disk.

    Nothing is written to `local_dir`; for `layers`, config.json and the index are read
    through a temporary directory. Arguments as for `download`.

    Raises:
        ArgumentError: `repo_id` is not a repository id, or `layers` is not A <= B.
        HubError: repository/revision not found, unauthorised, network unreachable
            (OfflineError when HF_HUB_OFFLINE is set).
        ConfigError, FormatError, MissingTensorError: the layers cannot be planned.
    """
    _check_layers(layers)
    settings = hub.hub_settings(token=token, cache_dir=cache_dir)
    repo = hub.repo_files(repo_id, revision, settings=settings)
    dest = _destination(repo, Path(local_dir) if local_dir is not None else None, settings)
    with tempfile.TemporaryDirectory(prefix="ckpt-plan-") as tmp:
        fetch = partial(hub.fetch_file, repo_id, commit=repo.commit, local_dir=Path(tmp),
                        settings=settings)
        return _plan(repo, dest, _checked(repo, fetch), include=include, exclude=exclude,
                     layers=layers, config_only=config_only)


def require_fit(plan: DownloadPlan) -> None:
    """Raise when the plan's missing bytes exceed the free space at its destination."""
    if not plan.fits:
        raise HubError(f"{plan.destination}: not enough disk space: the download needs "
                       f"{plan.download_bytes:,} bytes, {plan.free_bytes:,} are free")


# -- fetching and verifying -----------------------------------------------------------------
class _LockedProgress:
    """Byte progress shared by download threads."""

    def __init__(self, progress: Progress):
        self._p, self._lock = progress, threading.Lock()

    def start(self, total: int, label: str) -> None:
        self._p.start(total, label)

    def advance(self, n: int) -> None:
        if n:
            with self._lock:
                self._p.advance(n)

    def finish(self) -> None:
        self._p.finish()


def git_blob_id(path: Path) -> str:
    """The git object id of a file (how the Hub identifies files stored in git)."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _move_aside(path: Path) -> str:
    """Make sure a bad file cannot pass for a complete one; returns where it went."""
    if path.is_symlink():  # the shared cache: drop link and blob, the next run fetches again
        blob = path.resolve()
        path.unlink()
        blob.unlink(missing_ok=True)
        return ""
    target = path.with_name(f".{path.name}.corrupt")
    os.replace(path, target)
    return str(target)


def _check_bytes(remote: hub.RemoteFile, path: Path, verify: bool,
                 advance: Callable[[int], None]) -> tuple[str, str | None, str | None]:
    """(check, sha256, problem) for one fetched file."""
    size = path.stat().st_size
    check = ("lfs-sha256" if remote.lfs else "git-blob" if remote.blob_id else "size") if verify \
        else "size"
    if size != remote.size:
        return check, None, f"expected {remote.size:,} bytes, found {size:,}"
    if not verify:
        return check, None, None
    digest = sha256_file(path, on_bytes=advance)
    if remote.lfs and digest != remote.sha256:
        return check, digest, f"SHA-256 {digest}, expected {remote.sha256} (the Hub's)"
    if not remote.lfs and remote.blob_id and (blob := git_blob_id(path)) != remote.blob_id:
        return check, digest, f"git blob id {blob}, expected {remote.blob_id} (the Hub's)"
    return check, digest, None


def _checked(repo: hub.RemoteRepo, fetch: Callable[..., Path]) -> Callable[[str], Path]:
    """`fetch` for the files planning reads (config, index): verified before they are used."""
    remote = {f.path: f for f in repo.files}

    def get(path: str) -> Path:
        local = fetch(path)
        _, _, problem = _check_bytes(remote[path], local, True, lambda n: None)
        if problem:
            moved = _move_aside(local)
            raise VerificationError(f"{local}: {problem}; {_where_moved(moved)}")
        return local

    return get


def _where_moved(moved: str) -> str:
    return f"moved to {moved}" if moved else "deleted from the cache"


def _fetch_verified(f: PlannedFile, remote: hub.RemoteFile, fetch, verify: bool,
                    advance: Callable[[int], None], cancel: threading.Event) -> FileResult:
    transferred = 0

    def hashed(n: int) -> None:
        if cancel.is_set():  # do not finish hashing a 4 GB shard after Ctrl-C
            raise hub.Cancelled()
        advance(n)

    for attempt in range(2):
        got = 0

        def on_bytes(n: int) -> None:
            nonlocal got
            got += n
            advance(n)

        path = fetch(f.path, on_bytes=on_bytes, cancel=cancel, force=attempt > 0)
        transferred += got
        advance(f.size - got)  # bytes that needed no transfer count as done
        check, digest, problem = _check_bytes(remote, path, verify, hashed)
        if problem is None:
            return FileResult(path=f.path, size=f.size, check=check, status="verified",
                              sha256=digest, transferred=transferred)
        moved = _move_aside(path)
        if got:  # freshly received and still wrong: do not fetch it again
            break
        # a stale or damaged local copy: fetch once more from the Hub
    return FileResult(path=f.path, size=f.size, check=check, status="corrupt", sha256=digest,
                      transferred=transferred, detail=problem, moved_to=moved)


def _fetch_all(plan: DownloadPlan, repo: hub.RemoteRepo, fetch, *, verify: bool, workers: int,
               progress: Progress | None) -> list[FileResult]:
    bar = _LockedProgress(or_null(progress))
    bar.start(plan.total_bytes * (2 if verify else 1), "download+verify" if verify else "download")
    cancel = threading.Event()
    remote = {f.path: f for f in repo.files}
    results: dict[str, FileResult] = {}
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="ckpt-dl") as pool:
            futures = {pool.submit(_fetch_verified, f, remote[f.path], fetch, verify,
                                   bar.advance, cancel): f for f in plan.files}
            try:
                for fut in as_completed(futures):
                    results[futures[fut].path] = fut.result()
            except BaseException:
                cancel.set()  # running downloads stop at their next chunk
                for fut in futures:
                    fut.cancel()
                raise
    finally:
        bar.finish()
    return [results[f.path] for f in plan.files]


# -- the tensor plan ------------------------------------------------------------------------
def check_tensors(root: str | Path, shards: Iterable[str], *,
                  layers: tuple[int, int] | None = None) -> TensorCheck:
    """Header-level check of fetched shards against the tensor plan of `root`'s config.

    The inventory judges the fetched shards on their own entries (each in the plan with its
    dtype and shape, indexed in that shard, every indexed tensor of a fetched shard in it;
    the whole checkpoint when every indexed shard was fetched). Coverage: the plan's
    tensors of `layers` (or all of them, when every indexed shard was fetched) must be
    present. Problems carry the finding code `ckpt validate` gives.
    """
    root = Path(root)
    fetched = list(shards)
    listed = read_index(root / INDEX_FILE).shards if (root / INDEX_FILE).is_file() else fetched
    whole = set(listed) <= set(fetched)
    found = inspect(root) if whole else inspect(root, shards=fetched)
    if found.config is None:
        raise ConfigError(next(f.message for f in found.findings if f.code.startswith("config")))
    problems = [f"{f.message} [{f.code}]" for f in found.findings if refuses("download", f)]
    seen = found.inventory.entries
    if layers is not None:
        expected = [s.name for s in _layer_specs(found.plan, layers)]
        missing = [n for n in expected if n not in seen]
        problems += [f"tensor '{n}' of the tensor plan is in no fetched shard [tensor-missing]"
                     for n in missing]
    else:
        expected = list(found.plan.by_name) if whole else []
        missing = [n for n in expected if n not in seen]
    return TensorCheck(method="header", shards=len(fetched), tensors=len(seen),
                       expected=len(expected), complete=bool(expected) and not missing,
                       problems=problems)


def _check_result(dest: Path, plan: DownloadPlan, results: list[FileResult],
                  notes: list[str]) -> TensorCheck | None:
    """`ckpt validate` (headers, FP8 pairing, the plan) when the whole checkpoint was
    fetched; the header-level `check_tensors` of the fetched shards otherwise."""
    shards = [r.path for r in results if r.path.endswith(".safetensors") and "/" not in r.path]
    if not shards:
        return None
    fetched = {r.path for r in results}
    try:
        if plan.mode == "full" and {CONFIG_FILE, INDEX_FILE} <= fetched and set(
                read_index(dest / INDEX_FILE).shards) <= fetched:
            return _validate_all(dest, notes)
        return check_tensors(dest, shards, layers=plan.layers)
    except ConfigError as e:  # not a DeepSeek V2/V3 config: bytes verified, tensors not
        notes.append(f"tensor check skipped: {e}")
        return None


def _validate_all(dest: Path, notes: list[str]) -> TensorCheck:
    report = validate(dest)
    if "plan" not in report.checks:
        raise ConfigError(next((f.message for f in report.findings if f.code.startswith("config")),
                               "no usable config.json"))
    notes += [f"validate: {f.message}" for f in report.findings if f.severity == "warning"]
    problems = [f"{f.message} [{f.code}]" for f in report.findings if refuses("download", f)]
    return TensorCheck(method="validate", shards=report.files, tensors=report.tensors,
                       expected=report.tensors, complete=not problems, problems=problems)


def _summary(problems: list[str]) -> str:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more


def _write_manifest(dest: Path, plan: DownloadPlan, results: list[FileResult]) -> Path:
    """Record what was verified; entries of earlier runs at the same commit are kept while
    their files are still there with the same size."""
    path = dest / MANIFEST_FILE
    entries = {r.path: ManifestEntry(path=r.path, size=r.size, sha256=r.sha256)
               for r in results if r.sha256}
    if path.is_file():
        try:
            old = read_manifest(path)
        except FormatError:
            old = None
        if old is not None and (old.repo_id, old.revision) == (plan.repo_id, plan.commit):
            for e in old.files:
                local = dest / e.path
                if e.path not in entries and local.is_file() and local.stat().st_size == e.size:
                    entries[e.path] = e
    write_manifest(path, Manifest(repo_id=plan.repo_id, revision=plan.commit,
                                  files=sorted(entries.values(), key=lambda e: e.path)))
    return path


def download(repo_id: str, *, revision: str = hub.DEFAULT_REVISION,
             local_dir: str | Path | None = None, include: Sequence[str] = (),
             exclude: Sequence[str] = (), layers: tuple[int, int] | None = None,
             config_only: bool = False, verify: bool = True, workers: int = DEFAULT_WORKERS,
             token: str | bool | None = None, cache_dir: str | Path | None = None,
             progress: Progress | None = None) -> DownloadReport:
    """Plan, fetch and verify a checkpoint (or the part of it `layers` / `config_only` pick).

    Args:
        repo_id: "org/name" on the Hub (HF_ENDPOINT, HF_TOKEN and HF_HOME are honoured).
        revision: branch, tag or commit; it is resolved once and every file comes from it.
        local_dir: destination; None uses the shared Hugging Face cache (its snapshot
            directory is the result).
        include, exclude: glob patterns on repository paths. A full download keeps the
            files matching `include` (all if empty) minus `exclude`; with `layers` or
            `config_only` they add files to / remove files from that selection.
        layers: inclusive (first, last) layer numbers; MTP layers follow the decoder layers.
        config_only: config, index, tokenizer and code files only.
        verify: hash every file against the Hub and write the manifest; when False only
            sizes and safetensors headers are checked.
        workers: files downloaded at once.
        token: Hub token (default: HF_TOKEN, then the saved login); False sends none.
        cache_dir: the Hugging Face cache to use instead of HF_HUB_CACHE / HF_HOME/hub.
        progress: receives bytes downloaded and hashed.

    Raises:
        ArgumentError: `repo_id` is not a repository id, or `layers` is not A <= B.
        HubError: not found, unauthorised, unreachable, disk full, or the plan does not fit
            (OfflineError when HF_HUB_OFFLINE is set: a download must ask the Hub).
        VerificationError: a file's bytes differ from the Hub (it is moved aside) or the
            shards do not match the tensor plan.
    """
    _check_layers(layers)
    settings = hub.hub_settings(token=token, cache_dir=cache_dir)
    repo = hub.repo_files(repo_id, revision, settings=settings)
    target = Path(local_dir) if local_dir is not None else None
    dest = _destination(repo, target, settings)
    fetch = partial(hub.fetch_file, repo_id, commit=repo.commit, local_dir=target,
                    settings=settings)
    plan = _plan(repo, dest, _checked(repo, fetch), include=include, exclude=exclude,
                 layers=layers, config_only=config_only)
    require_fit(plan)
    results = _fetch_all(plan, repo, fetch, verify=verify, workers=workers, progress=progress)
    bad = [r for r in results if r.status == "corrupt"]
    if bad:
        problems = [f"{dest / r.path}: {r.detail}; {_where_moved(r.moved_to)}" for r in bad]
        raise VerificationError(f"{repo_id}@{repo.commit[:12]}: {len(bad)} file(s) differ from "
                                f"the Hub: {_summary(problems)}; rerun to fetch them again")
    manifest = _write_manifest(dest, plan, results) if verify else None
    notes: list[str] = []
    tensor_check = _check_result(dest, plan, results, notes)
    if tensor_check is not None and tensor_check.problems:
        raise VerificationError(f"{dest}: the files match the Hub but not the tensor plan of "
                                f"{CONFIG_FILE}: {_summary(tensor_check.problems)}")
    return DownloadReport(plan=plan, local_dir=str(dest), files=results,
                          transferred_bytes=sum(r.transferred for r in results), verified=verify,
                          tensor_check=tensor_check, manifest=str(manifest) if manifest else None,
                          notes=notes)
