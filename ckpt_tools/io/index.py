"""File names of both layouts, and `model.safetensors.index.json` (which shard holds each
tensor, and the total byte size). NumPy-free: header-only commands import it."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..errors import FormatError

if TYPE_CHECKING:
    from ..remote.path import RemotePath
from ..formats import MP_SCALE_SUFFIX, SCALE_SUFFIX  # noqa: F401  (re-exported to older importers)

CONFIG_FILE = "config.json"
MANIFEST_FILE = "ckpt-manifest.json"  # sizes and SHA-256 of every file (download, validate)
INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
SHARD_NAME = "model-{i:05d}-of-{n:05d}.safetensors"
SHARD_NAME_RE = re.compile(r"model-(\d+)-of-(\d+)\.safetensors")
# DeepSeek's model-parallel files, model{i}-mp{N}.safetensors (one per rank)
MP_FILE = "model{rank}-mp{n}.safetensors"
MP_FILE_RE = re.compile(r"model(\d+)-mp(\d+)\.safetensors")
MP_FILE_GLOB = "model*-mp*.safetensors"
T = TypeVar("T")


def mp_file_name(rank: int, model_parallel: int) -> str:
    return MP_FILE.format(rank=rank, n=model_parallel)


def mp_layout_of(rank_tensor_names) -> str:
    """"fp8" when a rank file holds scales (DeepSeek converts FP8 with its scales), else "bf16"."""
    return "fp8" if any(n.endswith(MP_SCALE_SUFFIX) for n in rank_tensor_names) else "bf16"


def mp_rank_sets(root: Path) -> dict[int, dict[int, str]]:
    """N -> (rank -> file name) of the `model{i}-mp{N}.safetensors` files in `root`."""
    sets: dict[int, dict[int, str]] = {}
    for p in sorted(root.glob(MP_FILE_GLOB)):
        if m := MP_FILE_RE.fullmatch(p.name):
            sets.setdefault(int(m[2]), {})[int(m[1])] = p.name
    return sets


def chosen_mp_set(sets: dict[int, dict[int, str]]) -> int:
    """The N a model-parallel directory is read as: the one whose ranks 0..N-1 are all
    there, else the one with most files. Every other rank file is extra (a warning): the
    one rule validate, every writer and verify apply."""
    return max(sets, key=lambda k: (set(range(k)) <= set(sets[k]), len(sets[k])))


def is_model_parallel(root: Path) -> bool:
    """A directory in DeepSeek's model-parallel layout: rank files and no HF index or
    model.safetensors (an HF checkpoint with stray rank files is still HF)."""
    return (root.is_dir() and not (root / INDEX_FILE).exists()
            and not (root / SINGLE_FILE).exists()
            and any(MP_FILE_RE.fullmatch(p.name) for p in root.glob(MP_FILE_GLOB)))


def local_safetensors_bytes(spec: str | Path) -> int:
    """Bytes of the .safetensors files of a local checkpoint directory, or of one local
    file; 0 for anything else (a URL, a preset, a missing path). Read off the directory
    listing before any header: what a run will at most read."""
    path = Path(spec)
    try:
        if path.is_file():
            return path.stat().st_size
        with os.scandir(path) as entries:
            return sum(e.stat().st_size for e in entries
                       if e.name.endswith(".safetensors") and e.is_file())
    except (OSError, ValueError):
        return 0


def shard_file_name(i: int, n: int) -> str:
    """HF naming; one shard is plain `model.safetensors` (i counts from 1)."""
    return SINGLE_FILE if n == 1 else SHARD_NAME.format(i=i, n=n)


def pack_greedy(units: Iterable[tuple[list[T], int]], max_bytes: int) -> list[list[T]]:
    """Shards filled in order from (items, bytes) units that must share a shard (a weight
    and its scale); a unit larger than `max_bytes` gets a shard of its own, as
    transformers' save_pretrained does. The one packer of upcast and reshard."""
    shards: list[list[T]] = []
    current: list[T] = []
    size = 0
    for items, nbytes in units:
        if current and size + nbytes > max_bytes:
            shards.append(current)
            current, size = [], 0
        current.extend(items)
        size += nbytes
    if current:
        shards.append(current)
    return shards


@dataclass
class ShardIndex:
    weight_map: dict[str, str]  # tensor name -> shard file name, in insertion order
    total_size: int | None = None
    metadata: dict = field(default_factory=dict)  # other metadata keys, kept as found

    @property
    def shards(self) -> list[str]:
        """Shard file names in order of first appearance."""
        return list(dict.fromkeys(self.weight_map.values()))

    def tensors_in(self, shard: str) -> list[str]:
        return [n for n, s in self.weight_map.items() if s == shard]

    def to_json(self) -> dict:
        meta = dict(self.metadata)
        if self.total_size is not None:
            meta["total_size"] = self.total_size
        return {"metadata": meta, "weight_map": self.weight_map}


def read_index(path: Path | RemotePath) -> ShardIndex:
    """Parse an index file (local, or remote: its caller resolved where it is).

    Raises:
        FormatError: the file is missing, not JSON, or not shaped like an index.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("weight_map"), dict):
        raise FormatError(f"{path}: expected an object with a 'weight_map' object")
    weight_map = doc["weight_map"]
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard:
            raise FormatError(f"{path}: tensor '{name}': shard must be a file name, "
                              f"found {json.dumps(shard)}")
    meta = doc.get("metadata") or {}
    if not isinstance(meta, dict):
        raise FormatError(f"{path}: 'metadata' must be an object")
    meta = dict(meta)
    total = meta.pop("total_size", None)
    if total is not None:
        if isinstance(total, float) and total.is_integer():
            total = int(total)
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            raise FormatError(f"{path}: metadata.total_size must be a non-negative integer, "
                              f"found {json.dumps(total)}")
    return ShardIndex(dict(weight_map), total, meta)


def write_json_atomic(path: str | Path, doc) -> None:
    """Write JSON to `path.partial`, fsync, then rename into place."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_index(path: str | Path, index: ShardIndex) -> None:
    write_json_atomic(path, index.to_json())
