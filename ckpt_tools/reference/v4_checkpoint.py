"""Read a DeepSeek-V4 checkpoint directory by Hub tensor name, dequantising on the fly.

Layouts (detected from the tensor names):
- `deepseek`: DeepSeek's Hub names (`layers.N.attn.wq_a.weight`, `embed.weight`, ...), as
  released (dense FP8 e4m3 with an F8_E8M0 `.scale` per 128x128 block, routed experts as
  MXFP4: I8 bytes holding two e2m1 values, low nibble first, with one E8M0 `.scale` per 32
  inputs) or upcast (BF16 / F32, no scales).
- `hf`: transformers' names (`model.layers.N.self_attn.q_a_proj.weight`, routed experts
  stacked as `mlp.experts.gate_up_proj` [E, 2I, D] (w1 rows then w3 rows) and
  `mlp.experts.down_proj` [E, D, I]), the rename table of transformers' conversion_mapping.

Every read is by row range with pread (`read_float32_rows`): an FP8 weight is read whole
128-row blocks at a time with its scale rows, an FP4 expert row by row with its own scales,
so memory is bounded by the rows asked for. Nothing is cached.

The FP4 decoding, the Hub -> transformers name table and the config reading here are
stand-ins until the project's shared V4 config schema, number formats and name table
exist on main; they should then be replaced by those (one place for each fact).
"""

from __future__ import annotations

import json
import math
import re
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace

import ml_dtypes
import numpy as np

from ..dtypes import DTYPES
from ..errors import ConfigError, FormatError, MissingTensorError, ShapeMismatchError
from ..fp8 import dequantize
from ..index import INDEX_FILE, SINGLE_FILE, read_index
from ..remote import as_path
from ..safe_paths import safe_member
from ..safetensors_io import SafetensorsReader
from ..sources import CONFIG_FILE

SCALE_SUFFIX = ".scale"  # DeepSeek's name for the dequantisation scale of `X.weight`
FP8_BLOCK = 128
FP4_BLOCK = 32
# e2m1 code -> value; bit 3 is the sign (OCP MX spec; DeepSeek's convert.py table)
E2M1_VALUES = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6],
                       np.float32)

# Hub -> transformers names, applied in this order (transformers' conversion_mapping for
# deepseek_v4); the model prefix `model.` is added to everything but lm_head.
_HF_RENAMES = [(re.compile(a), b) for a, b in [
    (r"\.attn\.", ".self_attn."), (r"\.ffn\.", ".mlp."),
    (r"\.indexer\.compressor\.", ".compressor.indexer."),
    (r"^embed\.weight", "embed_tokens.weight"), (r"^head\.weight", "lm_head.weight"),
    (r"^hc_head_fn", "hc_head.hc_fn"), (r"^hc_head_base", "hc_head.hc_base"),
    (r"^hc_head_scale", "hc_head.hc_scale"),
    (r"\.attn_norm\.", ".input_layernorm."), (r"\.ffn_norm\.", ".post_attention_layernorm."),
    (r"\.hc_attn_fn", ".attn_hc.fn"), (r"\.hc_attn_base", ".attn_hc.base"),
    (r"\.hc_attn_scale", ".attn_hc.scale"), (r"\.hc_ffn_fn", ".ffn_hc.fn"),
    (r"\.hc_ffn_base", ".ffn_hc.base"), (r"\.hc_ffn_scale", ".ffn_hc.scale"),
    (r"\.attn_sink", ".sinks"),
    (r"\.indexer\.weights_proj\.", ".compressor.indexer.scorer.weights_proj."),
    (r"\.indexer\.wq_b\.", ".compressor.indexer.q_b_proj."),
    (r"\.norm\.", ".kv_norm."), (r"\.ape", ".position_bias"),
    (r"\.wq_a\.", ".q_a_proj."), (r"\.self_attn\.wq_b\.", ".self_attn.q_b_proj."),
    (r"\.wkv\.", ".kv_proj."), (r"\.wgate\.", ".gate_proj."),
    (r"\.wo_a\.", ".o_a_proj."), (r"\.wo_b\.", ".o_b_proj."), (r"\.q_norm\.", ".q_a_norm."),
    (r"\.gate\.bias", ".gate.e_score_correction_bias"),
    (r"\.shared_experts\.w1\.", ".shared_experts.gate_proj."),
    (r"\.shared_experts\.w2\.", ".shared_experts.down_proj."),
    (r"\.shared_experts\.w3\.", ".shared_experts.up_proj."),
]]
_EXPERT = re.compile(r"^(layers\.\d+\.)ffn\.experts\.(\d+)\.(w[123])\.weight$")

# byte -> its two values (low nibble first): one gather decodes a row
_E2M1_PAIRS = np.stack([E2M1_VALUES[np.arange(256) & 0x0F], E2M1_VALUES[np.arange(256) >> 4]],
                       axis=1)  # [256, 2]


def hf_name(hub: str) -> str:
    """transformers' name of a (non-routed-expert) Hub tensor."""
    name = hub
    for pattern, repl in _HF_RENAMES:
        name = pattern.sub(repl, name)
    return name if name.startswith("lm_head.") else "model." + name


class _Where:
    """Where a Hub tensor's rows live: stored tensor, first row, row count, row shape."""

    __slots__ = ("name", "offset", "rows", "row_shape")

    def __init__(self, name: str, offset: int, rows: int, row_shape: tuple[int, ...]):
        self.name, self.offset, self.rows, self.row_shape = name, offset, rows, row_shape


# config.json keys the decoder reads (Hub spelling), and the ones with a default
REQUIRED_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim",
    "qk_rope_head_dim", "q_lora_rank", "o_groups", "o_lora_rank", "n_routed_experts",
    "num_experts_per_tok", "moe_intermediate_size", "index_n_heads", "index_head_dim",
    "index_topk", "sliding_window", "hc_mult", "hc_sinkhorn_iters", "hc_eps",
    "compress_rope_theta", "compress_ratios")
DEFAULTS = {"num_hash_layers": 0, "num_nextn_predict_layers": 0, "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0, "rope_scaling": None, "n_shared_experts": 1,
            "scoring_func": "sqrtsoftplus", "routed_scaling_factor": 1.0, "swiglu_limit": 0.0}


def load_config(path: Path):
    """The config as an object with the Hub keys as attributes (ckpt_tools' V4 schema)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config ({e})") from None
    if raw.get("model_type") != "deepseek_v4":
        raise ConfigError(f"{path}: expected model_type 'deepseek_v4', found "
                          f"{raw.get('model_type')!r}")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise ConfigError(f"{path}: missing V4 config key(s) {', '.join(missing)}")
    for key, default in DEFAULTS.items():
        raw.setdefault(key, default)
    return SimpleNamespace(**raw)


class V4Checkpoint:
    """Read-only V4 checkpoint (see the module docstring); the `V4Weights` source."""

    def __init__(self, path: str | Path):
        self.dir = as_path(path)  # local, or remote (RemotePath: read by range)
        if not self.dir.is_dir():
            raise FormatError(f"{self.dir}: no such directory")
        config_path = self.dir / CONFIG_FILE
        if not config_path.is_file():
            raise ConfigError(f"{self.dir}: directory has no {CONFIG_FILE}")
        self.config = load_config(config_path)
        self._readers: dict[str, SafetensorsReader] = {}

    def close(self) -> None:
        for r in self._readers.values():
            r.close()
        self._readers.clear()

    # -- files ----------------------------------------------------------------------------
    @cached_property
    def weight_map(self) -> dict[str, str]:
        if (self.dir / INDEX_FILE).is_file():
            return read_index(self.dir / INDEX_FILE).weight_map
        if (self.dir / SINGLE_FILE).is_file():
            return {n: SINGLE_FILE for n in self._reader(SINGLE_FILE).names()}
        raise FormatError(f"{self.dir}: neither {INDEX_FILE} nor {SINGLE_FILE} found")

    @cached_property
    def layout(self) -> str:
        return "hf" if any(n.startswith("model.") for n in self.weight_map) else "deepseek"

    def _reader(self, shard: str) -> SafetensorsReader:
        r = self._readers.get(shard)
        if r is None:
            r = self._readers[shard] = SafetensorsReader(safe_member(self.dir, shard,
                                                                     what="shard"))
        return r

    def _entry(self, stored: str):
        shard = self.weight_map.get(stored)
        if shard is None:
            raise MissingTensorError(f"{self.dir}: tensor '{stored}' is not in the index")
        reader = self._reader(shard)
        if stored not in reader.header:
            raise MissingTensorError(f"{reader.path}: tensor '{stored}' is indexed here but "
                                     f"absent from the file")
        return reader, reader.header[stored]

    # -- names ----------------------------------------------------------------------------
    def _where(self, hub: str) -> _Where | None:
        stored = hub
        if self.layout == "hf":
            m = _EXPERT.match(hub)
            if m is None:
                stored = hf_name(hub)
            else:  # a slice of the stacked experts
                prefix, e, w = m.group(1), int(m.group(2)), m.group(3)
                stored = hf_name(prefix + "ffn.experts.") + (
                    "down_proj" if w == "w2" else "gate_up_proj")
                if stored not in self.weight_map:
                    return None
                _, entry = self._entry(stored)
                n_exp, rows, cols = entry.shape
                if w == "w2":
                    return _Where(stored, e * rows, rows, (cols,))
                half = rows // 2
                return _Where(stored, e * rows + (half if w == "w3" else 0), half, (cols,))
        if stored not in self.weight_map:
            return None
        _, entry = self._entry(stored)
        shape = tuple(entry.shape)
        return _Where(stored, 0, shape[0] if shape else 1, shape[1:])

    def __contains__(self, hub: str) -> bool:
        return self._where(hub) is not None

    def _located(self, hub: str) -> _Where:
        where = self._where(hub)
        if where is None:
            raise MissingTensorError(f"{self.dir}: tensor '{hub}' is missing")
        return where

    def shape_of(self, hub: str) -> tuple[int, ...]:
        """The logical (dequantised) shape: an FP4 expert's columns count two per byte."""
        where = self._located(hub)
        _, entry = self._entry(where.name)
        cols = where.row_shape
        if entry.dtype == "I8" and self._scale_name(where.name) is not None:
            cols = (cols[0] * 2,)
        return (where.rows, *cols)

    def _scale_name(self, stored: str) -> str | None:
        if not stored.endswith(".weight"):
            return None
        for suffix in (SCALE_SUFFIX, ".weight_scale_inv", "_scale_inv"):
            name = (stored[:-len(".weight")] + suffix if suffix != "_scale_inv"
                    else stored + suffix)
            if name in self.weight_map:
                return name
        return None

    # -- values ---------------------------------------------------------------------------
    def _rows(self, stored: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a stored tensor viewed as [rows, *row_shape], stored dtype."""
        reader, entry = self._entry(stored)
        row_shape = entry.shape[-1:] if len(entry.shape) == 3 else tuple(entry.shape[1:])
        dtype = DTYPES[entry.dtype].numpy
        row_bytes = math.prod(row_shape) * dtype.itemsize
        data = reader.read_range(stored, start * row_bytes, stop * row_bytes)
        return np.frombuffer(data, dtype).reshape((stop - start, *row_shape))

    def read_float32_rows(self, hub: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the tensor's float32 value (dequantised when stored so)."""
        where = self._located(hub)
        if not 0 <= start <= stop <= where.rows:
            raise ShapeMismatchError(f"{self.dir}: tensor '{hub}': rows [{start}, {stop}) "
                                     f"outside [0, {where.rows})")
        lo = where.offset
        _, entry = self._entry(where.name)
        scale = self._scale_name(where.name)
        if scale is None:
            return self._rows(where.name, lo + start, lo + stop).astype(np.float32)
        if entry.dtype == "I8":
            return _fp4_rows(self._rows(where.name, lo + start, lo + stop),
                             self._rows(scale, lo + start, lo + stop), hub)
        # FP8: whole 128-row blocks, so each scale row meets the rows it was computed on
        first, last = start // FP8_BLOCK, -(-stop // FP8_BLOCK)
        r0, r1 = first * FP8_BLOCK, min(last * FP8_BLOCK, where.rows)
        scales = self._rows(scale, first, last).astype(np.float32)
        values = dequantize(self._rows(where.name, lo + r0, lo + r1), scales,
                            (FP8_BLOCK, FP8_BLOCK))
        return values if (r0, r1) == (start, stop) else values[start - r0:stop - r0].copy()

    def read_float32(self, hub: str) -> np.ndarray:
        return self.read_float32_rows(hub, 0, self._located(hub).rows)


def _fp4_rows(packed: np.ndarray, scales: np.ndarray, name: str) -> np.ndarray:
    """MXFP4 rows: byte k holds elements 2k (low nibble) and 2k+1 (high nibble); element j
    is scaled by 2^(scale[j // 32] - 127).  packed [n, in/2] I8, scales [n, in/32] E8M0."""
    n, half = packed.shape
    if scales.shape != (n, 2 * half // FP4_BLOCK):
        raise ShapeMismatchError(f"tensor '{name}': FP4 scale must be {[n, 2 * half // FP4_BLOCK]}"
                                 f" for {2 * half} inputs, found {list(scales.shape)}")
    values = _E2M1_PAIRS[packed.view(np.uint8)].reshape(n, -1, FP4_BLOCK)  # [n, in/32, 32]
    values *= scales.view(ml_dtypes.float8_e8m0fnu).astype(np.float32)[:, :, None]
    return values.reshape(n, 2 * half)
