"""Check that converted weights compute the same function: `forward` and `verify`.

`forward` runs the NumPy reference decoder (reference/deepseek.py for V2/V3,
reference/deepseek_v4.py for V4) over any supported layout. `verify` runs a candidate
checkpoint against a reference (another checkpoint, or saved logits) on the same tokens. Against a checkpoint both run layer by layer in
lockstep, so the report names the first layer whose hidden states leave the tolerance, and
memory stays at one layer of each (a 671B checkpoint can be checked on an ordinary
machine, `layers` at a time). V4's hidden states are its `hc_mult` residual streams, compared
side by side as [T, hc_mult * hidden]; a divergence also names the stream.

Tolerance, per element: |cand - ref| <= atol + rtol * max(|ref|, rms(ref at that position)).
Large elements are judged relative to themselves, near-zero ones relative to the scale of
their position's vector (a plain elementwise rtol fails on them for any rounding change).
Relative error in the report is the largest |cand - ref| / max(|ref|, rms) of the tensor.
The defaults fit weights that were rounded once to BF16: a tiny FP8 model against its BF16
upcast stays near 0.03 after four layers, while one zeroed or negated expert gives 0.4-3.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from pydantic import Field, computed_field

from .dtypes import itemsize
from .errors import ArgumentError, ConfigError, FormatError, ShapeMismatchError
from .config_layouts import family_at
from .families import family_of
from .inventory import open_checkpoint, require
from .progress import Progress
from .reference import TensorSource
from .remote.path import RemotePath
from .remote.stores import as_path
from .results import Result
from .safe_paths import safe_member
from .safetensors_io import read_header
from .sources import no_such_path
from .tensor_plan import TensorPlan

# BF16 keeps 8 significant bits (relative step 2^-8 = 0.0039); a converted checkpoint whose
# weights round once to BF16 moves hidden states and logits by a few of those steps.
DEFAULT_ATOL = 1e-3
DEFAULT_RTOL = 0.05
DEFAULT_TOKEN_COUNT = 16

# config fields that decide tensor shapes; two sources must agree on them to be compared
_SHAPE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers")
_IGNORED_FIELDS = {"quantization_config", "torch_dtype", "dtype", "transformers_version",
                   "architectures", "auto_map", "_name_or_path"}


def open_tensor_source(path: str | Path) -> TensorSource:
    """A reader for a checkpoint directory, local or remote (hf://, s3://: read by range),
    once the inventory has found nothing that makes the forward pass wrong: HF layout
    (`Checkpoint`), DeepSeek's `model{i}-mp{N}.safetensors` files (`MpCheckpoint`, which
    needs the HF config.json), or the reader of a family with formats of its own (its
    `reference_source` hook: DeepSeek-V4's Hub, HF and model-parallel files)."""
    path = as_path(path)
    if not path.exists():
        raise no_such_path(path)
    if not path.is_dir():
        raise FormatError(f"{path}: not a checkpoint directory")
    family = family_at(path)
    if family.has_hook("reference_source"):  # a family with readers of its own formats
        return family.hook("reference_source")(path, require(path, "read").kind)
    return open_checkpoint(path, command="read")


def _source(source: str | Path | TensorSource) -> TensorSource:
    return open_tensor_source(source) if isinstance(source, (str, Path, RemotePath)) else source


def _multi_stream(config) -> bool:
    """Whether the family's layers pass on several residual streams (V4's hyper-connections)."""
    return family_of(config).hidden_streams is not None


def reference_model(source: str | Path | TensorSource):
    """The NumPy decoder of a source's family (its `decoder` hook: `reference.Model` for
    the table-driven families)."""
    source = _source(source)
    return family_of(source.config).hook("decoder")(source)


def _hidden(model, ids: list[int], layers: int) -> np.ndarray:
    """Hidden states after `layers` layers: [t, d], or the streams [t, m, d]."""
    return (model.streams(ids, layers) if _multi_stream(model.config)
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


class _LayerProgress:
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
                 watch: _LayerProgress) -> np.ndarray:
    """The hidden states (V4: streams [t, m, d]) after `layers` layers (all when None),
    reporting each decoder layer as it completes."""
    x = None
    for layer, x in model.hidden_states(ids, layers):
        watch.layer_done(layer)
    return x if x is not None else _hidden(model, ids, 0)  # layers == 0: the embeddings


def _run_layers(model, ids: list[int], layers: int | None,
                watch: _LayerProgress) -> np.ndarray:
    """`model.forward`, reporting each decoder layer as it completes."""
    x = _walk_layers(model, ids, layers, watch)
    if layers is None:
        return model.logits(x)
    return x.reshape(x.shape[0], -1)  # V4: the streams side by side, as model.forward


def forward_outputs(source: str | Path | TensorSource, tokens: Sequence[int] | None = None,
                    layers: int | None = None, *, mtp: bool = False,
                    progress: Progress | None = None) -> ForwardResult:
    """`forward`, with what was computed and on which tokens; `mtp=True` returns the first
    MTP module's logits [T-1, vocab] (row t predicts token t+2) instead of the main ones.
    `progress` advances by each decoder layer's bytes as it completes."""
    model = reference_model(source)
    ids = model.check_tokens(tokens if tokens is not None
                             else default_tokens(model.config.vocab_size)).tolist()
    watch = _LayerProgress(progress, model, None if mtp else layers, "forward")
    try:
        if mtp:
            hidden = _walk_layers(model, ids, model.config.num_hidden_layers, watch)
            if not _multi_stream(model.config):  # multi-stream MTP reads the streams
                hidden = model.final_norm(hidden)
            return ForwardResult(model.mtp_logits(ids, hidden), "mtp_logits", ids)
        return ForwardResult(_run_layers(model, ids, layers, watch),
                             "logits" if layers is None else "hidden_states", ids)
    finally:
        watch.finish()


def forward(source: str | Path | TensorSource, tokens: Sequence[int] | None = None,
            layers: int | None = None, *, progress: Progress | None = None) -> np.ndarray:
    """Float32 logits [T, vocab]; with `layers`, the hidden states [T, hidden] after them.

    Args:
        source: a checkpoint directory (HF or DeepSeek mp) or an open `TensorSource`.
        tokens: token ids at positions 0..T-1; `default_tokens(vocab)` when None.
        layers: stop after this many decoder layers (no final norm, no lm_head); only
            those layers' tensors are read.
        progress: advances by each decoder layer's bytes as it completes.
    """
    return forward_outputs(source, tokens, layers, progress=progress).array


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


# -- report ------------------------------------------------------------------------------
class StageComparison(Result):
    """One compared tensor: the hidden states after a layer, or the final output."""


    stage: str = Field(description="'layer N' (hidden states after decoder layer N) or 'output'")
    layer: int | None = Field(description="Decoder layer, None for the final output")
    max_abs_error: float
    max_rel_error: float = Field(description="max |candidate - reference| / max(|reference|, rms)")
    within_tolerance: bool
    first_bad_position: int | None = Field(description="First position out of tolerance")
    first_bad_stream: int | None = Field(
        None, description="V4: the residual stream (0..hc_mult-1) of the first bad element "
                          "at that position; None for V2/V3 and for outputs")


class PositionComparison(Result):
    """The final output at one position."""


    position: int
    token: int
    max_abs_error: float
    within_tolerance: bool
    top1_match: bool | None = Field(description="Same arg-max token (logits only)")
    top5_overlap: float | None = Field(
        description="Shared fraction of the top-5 tokens (logits only)")


class Divergence(Result):
    stage: str
    layer: int | None
    position: int
    token: int
    stream: int | None = Field(None, description="V4: residual stream of the first bad "
                                                 "element at that position")
    abs_error: float = Field(description="Largest |candidate - reference| at that position")


class VerifyReport(Result):
    """Result of `ckpt verify`: ok when every compared tensor is within tolerance."""


    candidate: str
    reference: str
    reference_kind: Literal["checkpoint", "logits"]
    output: Literal["logits", "hidden_states"]
    tokens: list[int]
    layers: int | None = Field(description="Decoder layers run (None = all, then logits)")
    atol: float
    rtol: float
    ok: bool
    max_abs_error: float = Field(description="Of the final output")
    max_rel_error: float = Field(description="Of the final output")
    top1_agreement: float | None = Field(description="Fraction of positions with the same arg-max")
    top5_agreement: float | None = Field(description="Mean top-5 overlap over positions")
    stages: list[StageComparison] = Field(description="Per layer (checkpoint reference) and output")
    positions: list[PositionComparison]
    first_divergence: Divergence | None = Field(
        description="Earliest stage, then position, out of tolerance")
    config_differences: list[str] = Field(
        description="Config fields that differ (dtype fields ignored)")


# -- comparison --------------------------------------------------------------------------
def _compare(stage: str, layer: int | None, cand: np.ndarray, ref: np.ndarray,
             atol: float, rtol: float) -> tuple[StageComparison, np.ndarray, np.ndarray]:
    """The stage summary, the out-of-tolerance mask [t, x] and the max error per row [t].

    V4 streams [t, m, d] are judged per stream (each its own rms) and reported flattened.
    """
    streams = cand.ndim == 3
    if streams:
        T, m, d = ref.shape
        summary, bad, row_err = _compare(stage, layer, cand.reshape(T * m, d),
                                         ref.reshape(T * m, d), atol, rtol)
        bad, row_err = bad.reshape(T, m * d), row_err.reshape(T, m).max(axis=1)
        rows = np.flatnonzero(bad.any(axis=-1))
        first = int(rows[0]) if rows.size else None
        stream = int(np.flatnonzero(bad[first])[0] // d) if rows.size else None
        return summary.model_copy(update={"first_bad_position": first,
                                          "first_bad_stream": stream}), bad, row_err
    ref = ref.astype(np.float64)
    err = np.abs(cand - ref)  # [t, x]; NaN stays NaN
    rms = np.sqrt(np.mean(ref * ref, axis=-1, keepdims=True))  # [t, 1]
    scale = np.maximum(np.abs(ref), rms)  # [t, x]
    bad = ~(err <= atol + rtol * scale)  # NaN counts as bad
    bad_rows = np.flatnonzero(bad.any(axis=-1))
    row_err = err.max(axis=-1)  # [t]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(err == 0, 0.0, err / scale)
    return StageComparison(stage=stage, layer=layer, max_abs_error=float(row_err.max()),
                           max_rel_error=float(rel.max()), within_tolerance=bad_rows.size == 0,
                           first_bad_position=int(bad_rows[0]) if bad_rows.size else None
                           ), bad, row_err


def _positions(cand: np.ndarray, ref: np.ndarray, bad: np.ndarray, row_err: np.ndarray,
               tokens: list[int], logits: bool) -> list[PositionComparison]:
    out = []
    for t, tok in enumerate(tokens):
        top1 = top5 = None
        if logits:
            c5 = set(np.argsort(-cand[t], kind="stable")[:5].tolist())
            r5 = np.argsort(-ref[t], kind="stable")[:5]
            top1 = bool(np.argmax(cand[t]) == np.argmax(ref[t]))
            top5 = len(c5.intersection(r5.tolist())) / len(r5)
        out.append(PositionComparison(position=t, token=tok, max_abs_error=float(row_err[t]),
                                      within_tolerance=not bool(bad[t].any()),
                                      top1_match=top1, top5_overlap=top5))
    return out


def _config_dict(config) -> dict:
    return config.to_json_dict() if hasattr(config, "to_json_dict") else dict(vars(config))


def _config_differences(a, b) -> list[str]:
    da, db = _config_dict(a), _config_dict(b)
    diffs = []
    for key in sorted(set(da) | set(db)):
        if key not in _IGNORED_FIELDS and da.get(key) != db.get(key):
            diffs.append(f"{key}: {da.get(key)!r} vs {db.get(key)!r}")
    for key in _SHAPE_FIELDS:
        if getattr(a, key) != getattr(b, key):
            raise ConfigError(f"configs are not comparable: {key} {getattr(a, key)} vs "
                              f"{getattr(b, key)}")
    return diffs


def verify(candidate: str | Path | TensorSource,
           reference: str | Path | TensorSource | np.ndarray | None = None,
           tokens: Sequence[int] | None = None, *, against: str | Path | TensorSource | None = None,
           logits: str | Path | None = None, layers: int | None = None,
           atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL,
           reference_label: str | None = None, progress: Progress | None = None
           ) -> VerifyReport:
    """Run `candidate` and compare it with a reference on the same tokens: `against`
    another checkpoint, `logits` stored in a file, or `reference` (either, or an array).

    Example:
        `verify("V3-bf16/", against="V3-fp8/")`, as `ckpt verify V3-bf16/ --against V3-fp8/`;
        `verify("V3-bf16/", logits="ref.npz")`, as `ckpt verify V3-bf16/ --logits ref.npz`.

    Args:
        candidate: checkpoint under test (directory or `TensorSource`).
        reference: a checkpoint (run in lockstep, layer by layer) or reference outputs
            [T, vocab] (or [T, hidden] with `layers`), e.g. written by `ckpt forward`.
        against: a reference checkpoint (the CLI's `--against`).
        logits: a .npy / .npz of reference outputs (the CLI's `--logits`); the tokens
            stored in a .npz are used when `tokens` is None.
        tokens: token ids; `default_tokens(vocab)` when None.
        layers: compare the hidden states after this many layers instead of logits.
        atol, rtol: per-element tolerance, see the module docstring.
        reference_label: how to name an in-memory reference in the report.
        progress: advances by each decoder layer's bytes (both models') as it completes.

    Returns:
        A `VerifyReport`; `ok` is False when any compared tensor leaves the tolerance, and
        `first_divergence` names the earliest layer (then position) that does.

    Raises:
        ArgumentError: not exactly one of `reference`, `against`, `logits`; `tokens` that
            differ from those stored with `logits`.
        ConfigError: configs of different shapes, bad tokens or layer count.
        ShapeMismatchError: reference outputs of the wrong shape.
    """
    given = [name for name, value in (("reference", reference), ("against", against),
                                      ("logits", logits)) if value is not None]
    if len(given) != 1:
        raise ArgumentError(f"give exactly one reference: against (a checkpoint) or logits "
                            f"(a .npy/.npz file); got {', '.join(given) or 'none'}")
    cand_model = reference_model(candidate)  # the candidate is checked first
    if against is not None:
        reference = against
    elif logits is not None:
        reference, stored = load_reference_outputs(logits)
        if tokens is not None and stored is not None and list(tokens) != stored:
            raise ArgumentError(f"{logits}: holds outputs for other tokens than those given; "
                                f"leave tokens out to use the stored ones")
        tokens = tokens if tokens is not None else stored
        reference_label = reference_label or str(logits)
    config = cand_model.config
    ids = list(tokens) if tokens is not None else default_tokens(config.vocab_size)
    ids = cand_model.check_tokens(ids).tolist()
    output = "logits" if layers is None else "hidden_states"
    stages: list[tuple[StageComparison, np.ndarray, np.ndarray]] = []
    diffs: list[str] = []

    if isinstance(reference, np.ndarray):
        kind, ref_label = "logits", reference_label or "reference outputs"
        width = config.vocab_size if layers is None else hidden_width(config)
        if reference.shape != (len(ids), width):
            raise ShapeMismatchError(f"{ref_label}: expected {output} of shape "
                                     f"{[len(ids), width]}, found {list(reference.shape)}")
        watch = _LayerProgress(progress, cand_model, layers, "verify")
        try:
            cand = _run_layers(cand_model, ids, layers, watch)
        finally:
            watch.finish()
        ref = reference.astype(np.float32)
        if layers is not None and _multi_stream(config):  # each stream on its own scale
            cand, ref = (a.reshape(len(ids), family_of(config).streams(config), -1)
                         for a in (cand, ref))
    else:
        kind = "checkpoint"
        ref_model = reference_model(reference)
        ref_label = reference_label or str(reference if isinstance(reference, (str, Path))
                                            else type(reference).__name__)
        diffs = _config_differences(config, ref_model.config)
        cand = ref = None
        pairs = zip(cand_model.hidden_states(ids, layers), ref_model.hidden_states(ids, layers))
        watch = _LayerProgress(progress, cand_model, layers, "verify", models=2)
        try:
            for (layer, cand), (_, ref) in pairs:
                stages.append(_compare(f"layer {layer}", layer, cand, ref, atol, rtol))
                watch.layer_done(layer)
        finally:
            watch.finish()
        if cand is None:  # layers == 0
            cand, ref = _hidden(cand_model, ids, 0), _hidden(ref_model, ids, 0)
        if layers is None:
            cand, ref = cand_model.logits(cand), ref_model.logits(ref)

    final, bad, row_err = _compare("output", None, cand, ref, atol, rtol)
    if layers is None or kind == "logits" or not stages:
        stages.append((final, bad, row_err))  # else the last layer already is the output
    divergence = None
    for stage, _, errors in stages:
        if not stage.within_tolerance:
            pos = stage.first_bad_position
            divergence = Divergence(stage=stage.stage, layer=stage.layer, position=pos,
                                    token=ids[pos], stream=stage.first_bad_stream,
                                    abs_error=float(errors[pos]))
            break
    positions = _positions(cand, ref, bad, row_err, ids, logits=layers is None)
    top1 = top5 = None
    if layers is None:
        top1 = sum(p.top1_match for p in positions) / len(positions)
        top5 = sum(p.top5_overlap for p in positions) / len(positions)
    return VerifyReport(
        candidate=(str(candidate) if isinstance(candidate, (str, Path))
                   else type(candidate).__name__),
        reference=ref_label, reference_kind=kind, output=output, tokens=ids, layers=layers,
        atol=atol, rtol=rtol, ok=divergence is None, max_abs_error=final.max_abs_error,
        max_rel_error=final.max_rel_error, top1_agreement=top1, top5_agreement=top5,
        stages=[s for s, _, _ in stages], positions=positions, first_divergence=divergence,
        config_differences=diffs)
