"""Planning a download (`ckpt download`'s first step): which files of the repository, at one
commit, a full download, `config_only` or `layers=(A, B)` fetches, their bytes, and whether
they fit on disk. `layers` reads config.json and model.safetensors.index.json (verified
before use) and picks only the shards holding the tensors the tensor plan puts in layers
A..B (weights and their scales, wherever the index puts them). Nothing large is fetched.
"""

from __future__ import annotations

import fnmatch
import shutil
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Literal

from pydantic import Field, computed_field

from ..io import hub
from ..inventory.checkpoint import Checkpoint
from .download_fetch import verified_fetch
from ..errors import (
    ARGUMENT_PLACEHOLDER,
    ArgumentError,
    ConfigError,
    FormatError,
    HubError,
    MissingTensorError,
)
from ..io.index import INDEX_FILE, SINGLE_FILE, read_index
from ..results import Result
from ..configs.sources import CONFIG_FILE
from ..inventory.tensor_plan import TensorPlan, TensorSpec


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


def check_layers(layers: tuple[int, int] | None) -> None:
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
            return shards, len(layer_specs(TensorPlan(config), layers))
        plan, weight_map = ckpt.plan, ckpt.index.weight_map  # layout as the index shows it
    wanted = layer_specs(plan, layers)
    missing = [s for s in wanted if s.name not in weight_map]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MissingTensorError(f"{where}: {INDEX_FILE}: tensor '{missing[0].name}' of layer "
                                 f"{missing[0].layer} is not in the index{more}")
    return {weight_map[s.name] for s in wanted}, len(wanted)


def layer_specs(plan: TensorPlan, layers: tuple[int, int]) -> list[TensorSpec]:
    """The plan's tensors in layers first..last: weights, scales, norms, router, experts."""
    return [s for s in plan.specs if s.layer is not None and layers[0] <= s.layer <= layers[1]]


def plan_files(repo: hub.RemoteRepo, dest: Path, fetch: Callable[[str], Path], *,
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


def destination_dir(repo: hub.RemoteRepo, local_dir: Path | None,
                    settings: hub.HubSettings) -> Path:
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
    check_layers(layers)
    settings = hub.hub_settings(token=token, cache_dir=cache_dir)
    repo = hub.repo_files(repo_id, revision, settings=settings)
    dest = destination_dir(repo, Path(local_dir) if local_dir is not None else None, settings)
    with tempfile.TemporaryDirectory(prefix="ckpt-plan-") as tmp:
        fetch = partial(hub.fetch_file, repo_id, commit=repo.commit, local_dir=Path(tmp),
                        settings=settings)
        return plan_files(repo, dest, verified_fetch(repo, fetch), include=include, exclude=exclude,
                     layers=layers, config_only=config_only)


def require_fit(plan: DownloadPlan) -> None:
    """Raise when the plan's missing bytes exceed the free space at its destination."""
    if not plan.fits:
        raise HubError(f"{plan.destination}: not enough disk space: the download needs "
                       f"{plan.download_bytes:,} bytes, {plan.free_bytes:,} are free")

