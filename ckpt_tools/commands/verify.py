"""Check that converted weights compute the same function: `verify` (`forward`, which runs
the NumPy reference decoder, is forward.py's and re-exported here).

`verify` runs a candidate checkpoint against a reference (another checkpoint, or saved
logits) on the same tokens. Against a checkpoint both run layer by layer in lockstep, so
the report names the first layer whose hidden states leave the tolerance, and memory stays
at one layer of each (a 671B checkpoint can be checked on an ordinary machine, `layers` at
a time). V4's hidden states are its `hc_mult` residual streams, compared
side by side as [T, hc_mult * hidden]; a divergence also names the stream.

Tolerance, per element: |cand - ref| <= atol + rtol * max(|ref|, rms(ref at that position)).
Large elements are judged relative to themselves, near-zero ones relative to the scale of
their position's vector (a plain elementwise rtol fails on them for any rounding change).
Relative error in the report is the largest |cand - ref| / max(|ref|, rms) of the tensor.
The defaults fit weights that were rounded once to BF16: a tiny FP8 model against its BF16
upcast stays near 0.03 after four layers, while one zeroed or negated expert gives 0.4-3.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from ..configs.parse import Config
from ..errors import ArgumentError, ConfigError, ShapeMismatchError
from ..families import family_of
from .forward import (  # noqa: F401  (forward and its report: this module's API before the split)
    ForwardReport,
    LayerProgress,
    default_tokens,
    forward,
    forward_outputs,
    hidden_after,
    hidden_width,
    load_reference_outputs,
    multi_stream,
    open_tensor_source,
    reference_model,
    run_layers,
)
from ..execution.progress import Progress
from .verify_defaults import DEFAULT_ATOL, DEFAULT_RTOL
from ..reference import TensorSource
from ..results import Result

# config fields that decide tensor shapes; two sources must agree on them to be compared
_SHAPE_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers")
_IGNORED_FIELDS = {"quantization_config", "torch_dtype", "dtype", "transformers_version",
                   "architectures", "auto_map", "_name_or_path"}


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
           reference_label: str | None = None, progress: Progress | None = None,
           config: str | Path | Config | None = None) -> VerifyReport:
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
        config: the candidate's config for a directory without config.json (a preset
            name, a config.json, a checkpoint directory or a parsed config).

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
    cand_model = reference_model(candidate, config=config)  # the candidate is checked first
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
        watch = LayerProgress(progress, cand_model, layers, "verify")
        try:
            cand = run_layers(cand_model, ids, layers, watch)
        finally:
            watch.finish()
        ref = reference.astype(np.float32)
        if layers is not None and multi_stream(config):  # each stream on its own scale
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
        watch = LayerProgress(progress, cand_model, layers, "verify", models=2)
        try:
            for (layer, cand), (_, ref) in pairs:
                stages.append(_compare(f"layer {layer}", layer, cand, ref, atol, rtol))
                watch.layer_done(layer)
        finally:
            watch.finish()
        if cand is None:  # layers == 0
            cand, ref = hidden_after(cand_model, ids, 0), hidden_after(ref_model, ids, 0)
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
