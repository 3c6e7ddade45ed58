"""A checkpoint directory in HF layout: config.json, an index (or one file), shards.

Nothing is read until asked: headers on first use of a shard (or never, when the run's
`source.Source` holds them from the inventory), tensor data per tensor through mmap. Shard
file names from the index are checked to stay inside the directory.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property, partial
from pathlib import Path

import numpy as np

from ..configs.parse import Config, read_config_file
from ..io.dtypes import FP8_DTYPES
from ..errors import ArgumentError, CkptError, ConfigError, FormatError, MissingTensorError
from ..families import DEFAULT as DEFAULT_FAMILY
from ..configs.layouts import family_at, family_for_raw
from ..families import Family, family_of
from ..formats import FP8_BLOCK
from ..formats.fp8_block import dequantize, dequantize_rows
from ..io.index import INDEX_FILE, MP_FILE_GLOB, SINGLE_FILE, ShardIndex, read_index
from ..io.reader_pool import PooledFiles, ReaderPool
from ..remote.path import RemotePath
from ..io.safe_paths import hf_cache_blobs, safe_member  # noqa: F401  (re-exported)
from ..io.safetensors_io import SafetensorsHeader, SafetensorsReader, TensorEntry
from ..io.source import Source, locate
from ..configs.sources import CONFIG_FILE, ConfigSource, no_such_path
from .tensor_plan import SCALE_SUFFIX, TensorPlan


def checkpoint_dir(path: str | Path | RemotePath | Source) -> Path | RemotePath:
    """The checkpoint directory `path` names: itself, or the directory of an index file;
    a remote URL (hf://, s3://) as its `RemotePath`."""
    path = locate(path)  # the run's Source, or what a public function was given
    return path.parent if path.name == INDEX_FILE and path.is_file() else path


def family_given(path: Path | RemotePath, given: ConfigSource | None, hook: str,
                 action: str) -> Family:
    """The family the config a user gave declares (else PATH/config.json). A family whose
    `hook` does the work reads PATH/config.json there itself: a given config is refused."""
    if given is None:
        return family_at(path)
    family = family_of(given.config)
    if family.has_hook(hook):
        raise ArgumentError(f"{path}: a config given with --config is not available for "
                            f"{family.title} {action}; copy the model's {CONFIG_FILE} into "
                            f"{path}")
    return family


def model_parallel_refusal(path: Path) -> FormatError:
    """What a reader of the HF layout says about DeepSeek's model-parallel layout: the
    command that converts it."""
    return FormatError(f"{path}: holds DeepSeek's model-parallel layout "
                       f"(model{{i}}-mp{{N}}.safetensors); convert it to the HF layout first: "
                       f"`ckpt reshard SRC DST --to hf` (Python: reshard(src, dst, to='hf'))")


PREFETCH_MAX_BYTES = 1 << 20  # a scale grid is a few KB; never read ahead a large tensor
PREFETCH_THREADS = 16


class Checkpoint(PooledFiles):
    """Read-only view of a checkpoint directory."""

    def __init__(self, path: str | Path | Source, config: Config | None = None, *,
                 source: Source | None = None, given: ConfigSource | None = None):
        """`path`: the checkpoint directory, or its index file (as `validate` accepts), or
        the run's `Source`. `config`: one the caller already read (e.g. leniently, to
        describe it); by default DIR/config.json, read strictly on first use. `source`: the
        run's source of `path`, whose headers the readers use (default: `path`'s). `given`:
        the config the user gave (`--config`) for a directory without one, read instead of
        DIR/config.json (its `raw_config` is what an output's config.json becomes)."""
        self.source = source or Source.open(path)
        self.dir = checkpoint_dir(path)  # local, or remote (remote.path.RemotePath)
        if not self.dir.exists():
            raise no_such_path(self.dir)
        if not self.dir.is_dir():
            hint = (f"; pass its checkpoint directory {self.dir.parent}"
                    if self.dir.suffix == ".safetensors" else "")
            raise FormatError(f"{self.dir}: not a checkpoint directory{hint}")
        self._readers = ReaderPool(self.dir, self.shard_path, source=self.source)
        self._prefetched: dict[str, np.ndarray] = {}  # remote: read ahead, taken by read()
        if config is not None:
            self.__dict__["config"] = config  # fills the cached property
        if given is not None:  # fills the cached properties
            self.__dict__.update(config=given.config, raw_config=given.raw(),
                                 config_path=given.file)

    # -- metadata -----------------------------------------------------------------------
    @cached_property
    def config_path(self) -> Path:
        return self.dir / CONFIG_FILE

    @cached_property
    def raw_config(self) -> dict:
        if not self.config_path.is_file():
            raise ConfigError(f"{self.dir}: directory has no {CONFIG_FILE}")
        return json.loads(self.config_path.read_text(encoding="utf-8"))

    @cached_property
    def config(self) -> Config:
        if not self.config_path.is_file():
            raise ConfigError(f"{self.dir}: directory has no {CONFIG_FILE}")
        return read_config_file(self.config_path)

    @cached_property
    def family(self) -> Family:
        """The family config.json declares, read without judging it (`families`)."""
        try:
            return family_for_raw(self.raw_config)
        except (CkptError, OSError, ValueError):
            return DEFAULT_FAMILY

    @cached_property
    def plan(self) -> TensorPlan:
        """The config's plan in the layout found (DeepSeek-V4: expert format from the tensors)."""
        family = family_of(self.config)
        if family.has_hook("checkpoint_plan"):  # read from the tensors (V4's expert format)
            entries = {n: self.locate(n)[1] for n in self.index.weight_map}
            return family.hook("checkpoint_plan")(self.config, entries)
        # V2/V3: with the dtypes it stores where the plan allows alternatives (e.g.
        # transformers' float32 V3.2 `weights_proj`)
        plan = family.plan(self.config, self.layout)
        stored = plan.stored_dtypes_in(self._stored_dtype)
        return family.plan(self.config, self.layout, stored_dtypes=stored) if stored else plan

    def _stored_dtype(self, name: str) -> str | None:
        """The dtype a shard's header gives `name`; None when it is not indexed or its shard
        is absent or unreadable (a partial download: the plan then keeps its own dtype)."""
        shard = self.index.weight_map.get(name)
        if shard is None or not self.shard_path(shard).is_file():
            return None
        try:
            return self.locate(name)[1].dtype
        except CkptError:
            return None

    @cached_property
    def index_path(self) -> Path | None:
        p = self.dir / INDEX_FILE
        return p if p.is_file() else None

    @cached_property
    def index(self) -> ShardIndex:
        """From the index file; for a single-file checkpoint, built from its header."""
        if self.index_path is not None:
            return read_index(self.index_path)
        single = self.dir / SINGLE_FILE
        if single.is_file():
            names = self.header(SINGLE_FILE).entries
            return ShardIndex({n: SINGLE_FILE for n in names},
                              sum(e.nbytes for e in names.values()))
        if any(self.dir.glob(MP_FILE_GLOB)):
            raise model_parallel_refusal(self.dir)
        raise FormatError(f"{self.dir}: neither {INDEX_FILE} nor {SINGLE_FILE} found")

    @property
    def shard_names(self) -> list[str]:
        return self.index.shards

    @cached_property
    def layout(self) -> str:
        """'fp8' when any indexed tensor is a weight_scale_inv, else 'bf16' (a family that
        reads its layout from the tensors: its plan's; transformers' names are BF16)."""
        if self.family.has_hook("checkpoint_plan"):
            return "bf16" if self.plan.layout == "hf" else self.plan.layout
        return "fp8" if any(n.endswith(SCALE_SUFFIX) for n in self.index.weight_map) else "bf16"

    def shard_path(self, shard: str) -> Path:
        return safe_member(self.dir, shard, what="shard")

    def prefetch_headers(self) -> None:
        """Fetch every shard's header concurrently when the checkpoint is remote (for a
        caller about to read them all: one round trip instead of one per shard)."""
        if not isinstance(self.dir, RemotePath):
            return
        try:
            shards = self.shard_names
        except CkptError:
            return  # no index: reported where the caller reads it
        self.dir.tree.prefetch_headers([(self.dir / s).rel for s in shards
                                        if s not in self._readers])

    def header(self, shard: str) -> SafetensorsHeader:
        return self.reader(shard).header

    def reader(self, shard: str) -> SafetensorsReader:
        return self._readers(shard)

    # -- tensors ------------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self.index.weight_map

    def locate(self, name: str) -> tuple[str, TensorEntry]:
        shard = self.index.weight_map.get(name)
        if shard is None:
            raise MissingTensorError(f"{self.dir}: tensor '{name}' is not in the index")
        header = self.header(shard)
        if name not in header:
            raise MissingTensorError(f"{self.shard_path(shard)}: tensor '{name}' is indexed here "
                                     f"but absent from the file")
        return shard, header[name]

    def shape_of(self, name: str) -> tuple[int, ...]:
        """The stored shape of a tensor (header only)."""
        return self.locate(name)[1].shape

    def read(self, name: str) -> np.ndarray:
        """The stored array (read-only mmap view, stored dtype)."""
        hit = self._prefetched.pop(name, None)
        if hit is not None:
            return hit
        shard, _ = self.locate(name)
        return self.reader(shard).get(name)

    def prefetch(self, names: list[str]) -> None:
        """Read the small tensors among `names` (up to PREFETCH_MAX_BYTES each) of a remote
        checkpoint concurrently and keep them until `read` takes them: a window of FP8
        scales costs one round trip instead of one per scale. Nothing for a local one."""
        if not isinstance(self.dir, RemotePath):
            return
        wanted = [n for n in names if n in self and n not in self._prefetched
                  and self.locate(n)[1].nbytes <= PREFETCH_MAX_BYTES]
        readers = [self.reader(self.locate(n)[0]) for n in wanted]  # made here, not in threads
        with ThreadPoolExecutor(max(1, min(PREFETCH_THREADS, len(wanted)))) as pool:
            self._prefetched.update(zip(wanted, pool.map(lambda rn: rn[0].get(rn[1]),
                                                         zip(readers, wanted))))

    def _fp8_scale(self, name: str) -> tuple[str, tuple[int, int]]:
        """The weight_scale_inv name of an FP8 weight and the block it covers."""
        scale_name = name + SCALE_SUFFIX
        if scale_name not in self:
            raise MissingTensorError(f"{self.dir}: FP8 tensor '{name}' has no '{scale_name}'")
        qc = self.config.quantization_config
        return scale_name, tuple(qc.weight_block_size) if qc else FP8_BLOCK

    def read_float32(self, name: str) -> np.ndarray:
        """The tensor's value in float32; an FP8 weight is dequantised with its scale."""
        shard, entry = self.locate(name)
        array = self.reader(shard).get(name)
        if entry.dtype in FP8_DTYPES:
            scale_name, block = self._fp8_scale(name)
            return dequantize(array, self.read(scale_name), block)
        return array.astype(np.float32)

    def read_float32_rows(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of `read_float32(name)`, read with pread (no mmap pages kept).

        Lets a caller stream a huge tensor (an lm_head, a dense MLP) slice by slice with
        memory bounded by the slice; FP8 rows are dequantised with their scale rows, so the
        values equal the same rows of `read_float32`.
        """
        shard, entry = self.locate(name)
        reader = self.reader(shard)
        if entry.dtype not in FP8_DTYPES:
            return reader.read_rows(name, start, stop).astype(np.float32)
        scale_name, block = self._fp8_scale(name)
        scales = self.reader(self.locate(scale_name)[0])
        return dequantize_rows(partial(reader.read_rows, name),
                               partial(scales.read_rows, scale_name), entry.shape[0], start,
                               stop, block)
