"""A checkpoint directory in HF layout: config.json, an index (or one file), shards.

Nothing is read until asked: headers on first use of a shard, tensor data per tensor
through mmap. Shard file names from the index are checked to stay inside the directory.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np

from .config import DeepseekV2Config, DeepseekV3Config, read_config_file
from .dtypes import FP8_DTYPES
from .errors import ConfigError, FormatError, MissingTensorError
from .fp8 import dequantize
from .index import INDEX_FILE, SINGLE_FILE, ShardIndex, read_index
from .safe_paths import hf_cache_blobs, safe_member  # noqa: F401  (re-exported)
from .safetensors_io import SafetensorsHeader, SafetensorsReader, TensorEntry
from .sources import CONFIG_FILE
from .tensor_plan import SCALE_SUFFIX, TensorPlan
from .tensor_plan_v4 import V4_SCALE_SUFFIX


class Checkpoint:
    """Read-only view of a checkpoint directory."""

    def __init__(self, path: str | Path, config: DeepseekV2Config | DeepseekV3Config | None = None):
        """`config`: one the caller already read (e.g. leniently, to describe it); by default
        DIR/config.json, read strictly on first use."""
        self.dir = Path(path)
        if not self.dir.exists():
            raise FormatError(f"{self.dir}: no such directory")
        if not self.dir.is_dir():
            raise FormatError(f"{self.dir}: not a directory")
        self._readers: dict[str, SafetensorsReader] = {}
        if config is not None:
            self.__dict__["config"] = config  # fills the cached property

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for r in self._readers.values():
            r.close()
        self._readers.clear()

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
    def config(self) -> DeepseekV2Config | DeepseekV3Config:
        if not self.config_path.is_file():
            raise ConfigError(f"{self.dir}: directory has no {CONFIG_FILE}")
        return read_config_file(self.config_path)

    @cached_property
    def plan(self) -> TensorPlan:
        return self.plan_with(include_mtp=True)

    def plan_with(self, *, include_mtp: bool) -> TensorPlan:
        """The config's plan in the layout found (DeepSeek-V4: expert format from the tensors)."""
        if self.config.model_type == "deepseek_v4":
            from .tensor_plan_v4 import V4TensorPlan
            from .validate_v4 import detect_layout

            entries = {n: self.locate(n)[1] for n in self.index.weight_map}
            layout, experts = detect_layout(entries)
            return V4TensorPlan(self.config, layout, expert_dtype=experts, include_mtp=include_mtp)
        return TensorPlan(self.config, self.layout, include_mtp=include_mtp)

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
        raise FormatError(f"{self.dir}: neither {INDEX_FILE} nor {SINGLE_FILE} found")

    @property
    def shard_names(self) -> list[str]:
        return self.index.shards

    @cached_property
    def layout(self) -> str:
        """'fp8' when any indexed tensor is a weight_scale_inv (DeepSeek-V4: a `.scale`),
        else 'bf16'."""
        suffixes = (SCALE_SUFFIX, V4_SCALE_SUFFIX)
        return "fp8" if any(n.endswith(suffixes) for n in self.index.weight_map) else "bf16"

    def shard_path(self, shard: str) -> Path:
        return safe_member(self.dir, shard, what="shard")

    def header(self, shard: str) -> SafetensorsHeader:
        return self.reader(shard).header

    def reader(self, shard: str) -> SafetensorsReader:
        r = self._readers.get(shard)
        if r is None:
            r = self._readers[shard] = SafetensorsReader(self.shard_path(shard))
        return r

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
        shard, _ = self.locate(name)
        return self.reader(shard).get(name)

    def _fp8_scale(self, name: str) -> tuple[str, tuple[int, int]]:
        """The weight_scale_inv name of an FP8 weight and the block it covers."""
        scale_name = name + SCALE_SUFFIX
        if scale_name not in self:
            raise MissingTensorError(f"{self.dir}: FP8 tensor '{name}' has no '{scale_name}'")
        qc = self.config.quantization_config
        return scale_name, tuple(qc.weight_block_size) if qc else (128, 128)

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
        # widen to whole row blocks so each scale row covers the rows it was computed on
        first, last = start // block[0], -(-stop // block[0])
        lo, hi = first * block[0], min(last * block[0], entry.shape[0])
        scale = self.reader(self.locate(scale_name)[0]).read_rows(scale_name, first, last)
        values = dequantize(reader.read_rows(name, lo, hi), scale, block)
        return values if (lo, hi) == (start, stop) else values[start - lo:stop - lo].copy()
