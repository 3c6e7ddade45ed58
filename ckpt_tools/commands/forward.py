"""`forward`: the NumPy reference decoder over any supported layout, and what both `forward`
and `verify` (verify.py) need to run one: the reader of a checkpoint directory, the decoder
of its family, the default tokens, progress by layer bytes, and reference outputs saved by
`ckpt forward`.

The decoders are reference/deepseek.py for V2/V3 and reference/deepseek_v4.py for V4; V4's
hidden states are its `hc_mult` residual streams.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from pydantic import Field, computed_field

from ..io.dtypes import itemsize
from ..inventory.checkpoint import family_given
from ..configs.parse import Config
from ..errors import ArgumentError, FormatError
from ..families import family_of
from ..inventory.inspect import open_checkpoint, reader_of, require
from ..execution.progress import Progress
from ..reference import TensorSource
from ..remote.path import RemotePath
from ..results import Result
from ..io.safe_paths import safe_member
from ..io.safetensors_io import read_header
from ..io.source import Source
from ..configs.sources import CONFIG_FILE, given_config, no_such_path
from ..inventory.tensor_plan import TensorPlan

DEFAULT_TOKEN_COUNT = 16


def open_tensor_source(path: str | Path, *,
                       config: str | Path | Config | None = None) -> TensorSource:
    """A reader for a checkpoint directory, local or remote (hf://, s3://: read by range),
    once the inventory has found nothing that makes the forward pass wrong: HF layout
    (`Checkpoint`), DeepSeek's `model{i}-mp{N}.safetensors` files (`MpCheckpoint`, which
    needs the HF config.json), or the reader of a family with formats of its own (its
    `reference_source` hook: DeepSeek-V4's Hub, HF and model-parallel files). `config`: the
    model's config for a directory without config.json (a preset name, a config.json, a
    checkpoint directory or a parsed config), read instead of PATH/config.json."""
    source = Source.open(path)  # the one place the forward pass resolves its source
    path = source.path
    if not path.exists():
        raise no_such_path(path)
    if not path.is_dir():
        raise FormatError(f"{path}: not a checkpoint directory")
    given = given_config(config)
    family = family_given(path, given, "reference_source", "forward pass")
    if family.has_hook("reference_source"):  # a family with readers of its own formats
        return family.hook("reference_source")(source, require(source, "read").kind)
    if given is None:
        return open_checkpoint(source, command="read")
    found = require(source, "read", config=given.config)
    if found.kind == "mp" and given.file is None:
        raise ArgumentError(f"{path}: DeepSeek's model-parallel files are read with a "
                            f"{CONFIG_FILE}; give one (or a checkpoint directory) to --config")
    return reader_of(found, given.file, given=given)


def _source(source: str | Path | TensorSource, config=None) -> TensorSource:
    if isinstance(source, (str, Path, RemotePath)):
        return open_tensor_source(source, config=config)
    return source


def multi_stream(config) -> bool:
    """Whether the family's layers pass on several residual streams (V4's hyper-connections)."""
    return family_of(config).hidden_streams is not None


def reference_model(source: str | Path | TensorSource, *,
                    config: str | Path | Config | None = None):
    """The NumPy decoder of a source's family (its `decoder` hook: `reference.Model` for
    the table-driven families); `config` as `open_tensor_source`'s."""
    source = _source(source, config)
    return family_of(source.config).hook("decoder")(source)


def hidden_after(model, ids: list[int], layers: int) -> np.ndarray:
    """Hidden states after `layers` layers: [t, d], or the streams [t, m, d]."""
    return (model.streams(ids, layers) if multi_stream(model.config)
            else model.forward(ids, layers))


def hidden_width(config) -> int:
    """Width of the hidden states `forward(..., layers=K)` returns (x the family's streams)."""
    return config.hidden_size * family_of(config).streams(config)


def default_tokens(vocab_size: int, count: int = DEFAULT_TOKEN_COUNT) -> list[int]:
    """`count` token ids drawn with a fixed seed from the vocabulary (same for every run)."""
    return [int(t) for t in np.random.default_rng(0).integers(0, vocab_size, count)]


Output = Literal["logits", "hidden_states", "mtp_logits"]


class ForwardResult(NamedTuple):
    array: np.ndarray  # float32
    output: Output
    tokens: list[int]


class ForwardReport(Result):
    """What `ckpt forward` wrote."""


    path: str
    output: Output = Field(description="logits [T, vocab], hidden_states [T, hidden] after "
                                       "`layers` (V4: [T, hc_mult * hidden], the streams side "
                                       "by side), or mtp_logits [T-1, vocab]")
    shape: list[int]
    dtype: Literal["float32"] = "float32"
    tokens: list[int]
    layers: int | None

    @computed_field(description="Always true: forward raises when it cannot run")
    @property
    def ok(self) -> bool:
        return True


class LayerProgress:
    """Progress of a run through decoder layers, in bytes of the checkpoint's layers (as
    the plan stores them, or for V4 as its files hold them), so a V3 run moves in 61 steps
    of about 11 GB."""

    def __init__(self, progress: Progress | None, model, layers: int | None, label: str,
                 models: int = 1):
        self.progress = progress
        if progress is None:
            return
        config = model.config
        n = config.num_hidden_layers if layers is None else layers
        # a family whose stored bytes depend on formats read from the tensors: its files
        self.by_layer = (_file_layer_bytes(model.weights.source, n)
                         if family_of(config).has_hook("checkpoint_plan")
                         else _plan_layer_bytes(config, n))
        self.models = models
        progress.start(sum(self.by_layer.values()) * models, label)

    def layer_done(self, layer: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.by_layer.get(layer, 0) * self.models)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress.finish()


def _plan_layer_bytes(config, n: int) -> dict[int, int]:
    """Bytes of each of the first `n` decoder layers as the V2/V3 tensor plan stores them."""
    by_layer: dict[int, int] = {}
    for g in TensorPlan(config).groups:
        if g.layer is not None and not g.mtp and g.layer < n:
            by_layer[g.layer] = by_layer.get(g.layer, 0) + g.numel * itemsize(g.dtype)
    return by_layer


_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def _file_layer_bytes(source, n: int) -> dict[int, int]:
    """Bytes of each of the first `n` decoder layers in the files (any stored naming);
    empty for a source without files, whose run then reports no bytes."""
    weight_map = getattr(source, "weight_map", None)
    if not weight_map:
        return {}
    by_layer: dict[int, int] = {}
    for shard in sorted(set(weight_map.values())):
        header = read_header(safe_member(source.dir, shard, what="shard"))
        for entry in header.entries.values():
            m = _LAYER.search(entry.name)
            if m and not entry.name.startswith("mtp.") and int(m.group(1)) < n:
                layer = int(m.group(1))
                by_layer[layer] = by_layer.get(layer, 0) + entry.nbytes
    return by_layer


def _walk_layers(model, ids: list[int], layers: int | None,
                 watch: LayerProgress) -> np.ndarray:
    """The hidden states (V4: streams [t, m, d]) after `layers` layers (all when None),
    reporting each decoder layer as it completes."""
    x = None
    for layer, x in model.hidden_states(ids, layers):
        watch.layer_done(layer)
    return x if x is not None else hidden_after(model, ids, 0)  # layers == 0: the embeddings


def run_layers(model, ids: list[int], layers: int | None,
                watch: LayerProgress) -> np.ndarray:
    """`model.forward`, reporting each decoder layer as it completes."""
    x = _walk_layers(model, ids, layers, watch)
    if layers is None:
        return model.logits(x)
    return x.reshape(x.shape[0], -1)  # V4: the streams side by side, as model.forward


def forward_outputs(source: str | Path | TensorSource, tokens: Sequence[int] | None = None,
                    layers: int | None = None, *, mtp: bool = False,
                    progress: Progress | None = None,
                    config: str | Path | Config | None = None) -> ForwardResult:
    """`forward`, with what was computed and on which tokens; `mtp=True` returns the first
    MTP module's logits [T-1, vocab] (row t predicts token t+2) instead of the main ones.
    `progress` advances by each decoder layer's bytes as it completes."""
    model = reference_model(source, config=config)
    ids = model.check_tokens(tokens if tokens is not None
                             else default_tokens(model.config.vocab_size)).tolist()
    watch = LayerProgress(progress, model, None if mtp else layers, "forward")
    try:
        if mtp:
            hidden = _walk_layers(model, ids, model.config.num_hidden_layers, watch)
            if not multi_stream(model.config):  # multi-stream MTP reads the streams
                hidden = model.final_norm(hidden)
            return ForwardResult(model.mtp_logits(ids, hidden), "mtp_logits", ids)
        return ForwardResult(run_layers(model, ids, layers, watch),
                             "logits" if layers is None else "hidden_states", ids)
    finally:
        watch.finish()


def forward(source: str | Path | TensorSource, tokens: Sequence[int] | None = None,
            layers: int | None = None, *, progress: Progress | None = None,
            config: str | Path | Config | None = None) -> np.ndarray:
    """Float32 logits [T, vocab]; with `layers`, the hidden states [T, hidden] after them.

    Args:
        source: a checkpoint directory (HF or DeepSeek mp) or an open `TensorSource`.
        tokens: token ids at positions 0..T-1; `default_tokens(vocab)` when None.
        layers: stop after this many decoder layers (no final norm, no lm_head); only
            those layers' tensors are read.
        progress: advances by each decoder layer's bytes as it completes.
        config: the model's config for a directory without config.json (a preset name, a
            config.json, a checkpoint directory or a parsed config).
    """
    return forward_outputs(source, tokens, layers, progress=progress, config=config).array


def load_reference_outputs(path: str | Path) -> tuple[np.ndarray, list[int] | None]:
    """Reference outputs from a .npy (the array) or .npz ('logits' or 'hidden_states', and
    optionally 'tokens'), as written by `ckpt forward` or kept as golden files."""
    path = Path(path)
    if not path.exists():
        raise no_such_path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise FormatError(f"{path}: not a NumPy .npy/.npz file ({e})") from e
    if isinstance(data, np.ndarray):
        array, tokens = data, None
    else:
        with data:
            key = next((k for k in ("logits", "hidden_states") if k in data.files), None)
            if key is None:
                raise FormatError(f"{path}: expected an array named 'logits' or "
                                  f"'hidden_states', found {sorted(data.files)}")
            array = data[key]
            tokens = data["tokens"].astype(int).tolist() if "tokens" in data.files else None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
        raise FormatError(f"{path}: expected a 2-D float array [tokens, width], found "
                          f"{array.dtype} {list(array.shape)}")
    return array, tokens
