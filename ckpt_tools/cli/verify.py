"""`ckpt forward` and `ckpt verify`: the NumPy reference forward pass from the command line."""

from __future__ import annotations

import math
import os
from pathlib import Path

import click

from ..remote.stores import remote_spec
from ..commands.verify_defaults import DEFAULT_ATOL, DEFAULT_RTOL
from .conventions import json_mode, note, progress, standard_options
from .plotting import plot_option, save_plot
from .render import CONFIG, emit_json, remote_option, say, table

MAX_TOKEN_ID = 1 << 31
TOKENS_HELP = "Comma-separated token ids, e.g. 0,15,3 (default: 16 fixed ids from the vocabulary)."


def _parse_tokens(_ctx, _param, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        ids = [int(t) for t in value.replace(" ", "").split(",") if t != ""]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not ids:
        raise click.BadParameter("expected at least one token id")
    bad = next((t for t in ids if not 0 <= t < MAX_TOKEN_ID), None)
    if bad is not None:  # the vocabulary is checked once the config is read
        raise click.BadParameter(f"token id {bad} is outside [0, {MAX_TOKEN_ID}) (no "
                                 f"vocabulary is larger)")
    return ids


def _npy_or_npz(_ctx, _param, value: str) -> str:
    """Checked before the forward pass runs: NumPy data never lands under another name."""
    if Path(value).suffix not in (".npy", ".npz"):
        raise click.BadParameter(f"{value}: the output is NumPy data; name it .npy (the "
                                 f"array) or .npz (the array and the tokens)")
    return value


def _finite(_ctx, param, value: float) -> float:
    """A tolerance that decides something: NaN always fails, inf always passes."""
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite tolerance (expected 0 <= "
                                 f"{param.name} < inf)")
    return value


def _save(path: Path, result) -> None:
    """.npy: the array; .npz: the array under its kind plus the tokens. Written under a
    temporary name, then renamed: never a half-written file under `path`."""
    import numpy as np  # here: `ckpt forward --help` imports no numpy

    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            if path.suffix == ".npz":
                np.savez(f, **{result.output: result.array,
                               "tokens": np.asarray(result.tokens, np.int64)})
            else:
                np.save(f, result.array, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@click.command("forward")
@remote_option
@click.argument("ckpt")
@click.option("--tokens", callback=_parse_tokens, help=TOKENS_HELP)
@click.option("--layers", type=click.IntRange(0), default=None,
              help="Stop after K decoder layers and write the hidden states [T, hidden].")
@click.option("--mtp", is_flag=True,
              help="Write the MTP module's logits [T-1, vocab] (row t predicts token t+2).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), callback=_npy_or_npz,
              help="Output file: .npy (the float32 array) or .npz (array and tokens).")
@CONFIG
@standard_options
def forward(remote, ckpt, tokens, layers, mtp, out, config_spec):
    """Run the NumPy reference decoder on CKPT (HF BF16/FP8, DeepSeek mp files, or V4 with
    Hub or HF names, FP8/FP4 or upcast; local or remote) and write float32 logits
    [T, vocab], or hidden states [T, hidden] with --layers (V4: its hc_mult streams side by
    side).

    \b
    Examples:
      ckpt forward ./V3-bf16 --tokens 0,15,3 --out logits.npy
      ckpt forward ./V3-bf16 --layers 2 --out hidden.npz
    """
    if mtp and layers is not None:
        raise click.UsageError("--mtp runs the whole model; it cannot be combined with --layers")
    from ..commands.forward import ForwardReport, forward_outputs  # numpy: not for --help

    result = forward_outputs(remote_spec(ckpt, remote), tokens, layers, mtp=mtp,
                             progress=progress(), config=config_spec)
    out = Path(out)
    _save(out, result)
    report = ForwardReport(path=str(out), output=result.output, shape=list(result.array.shape),
                           tokens=result.tokens, layers=layers)
    if json_mode():
        emit_json(report)
    else:
        say(f"wrote {out}: {report.output} float32 {report.shape} "
                   f"for {len(report.tokens)} token(s)")


@click.command("verify")
@remote_option
@click.argument("ckpt")
@click.option("--against",
              help="Reference checkpoint, run layer by layer next to CKPT (local or remote).")
@click.option("--logits", "ref_path",
              help="Reference outputs (.npy from `ckpt forward`, or .npz with 'logits' and "
                   "'tokens').")
@click.option("--tokens", callback=_parse_tokens, help=TOKENS_HELP)
@click.option("--layers", type=click.IntRange(0), default=None,
              help="Compare the hidden states after K layers (only K layers are computed).")
@click.option("--atol", type=click.FloatRange(0), default=DEFAULT_ATOL, show_default=True,
              callback=_finite,
              help="Absolute tolerance: an element passes within atol + rtol x its scale.")
@click.option("--rtol", type=click.FloatRange(0), default=DEFAULT_RTOL, show_default=True,
              callback=_finite,
              help="Relative to max(|ref|, rms of ref at that position).")
@plot_option
@CONFIG
@standard_options
@click.pass_context
def verify(ctx, remote, ckpt, against, ref_path, tokens, layers, atol, rtol, plot_path,
           config_spec):
    """Check that CKPT computes what a reference computes: exit 0 within tolerance, 1 when
    not, naming the first layer and position that diverge.

    \b
    Examples:
      ckpt verify ./V3-bf16 --against ./V3-fp8
      ckpt verify ./V3-mp --logits logits.npy --atol 1e-2
    """
    if (against is None) == (ref_path is None):
        raise click.UsageError("give exactly one of --against OTHER or --logits REF.npy")
    from ..commands.verify import verify as run_verify  # numpy: not for --help

    report = run_verify(remote_spec(ckpt, remote), tokens=tokens, layers=layers, atol=atol,
                        against=remote_spec(against, remote) if against else None,
                        logits=ref_path, rtol=rtol, progress=progress(), config=config_spec)
    if json_mode():
        emit_json(report)
    else:
        _render(report)
    save_plot(plot_path, "verify_figure", report)
    if not report.ok:
        ctx.exit(1)


def _render(report) -> None:
    say(f"{report.candidate} vs {report.reference} ({report.reference_kind}), "
               f"{len(report.tokens)} tokens, {report.output}"
               + (f" after {report.layers} layer(s)" if report.layers is not None else ""))
    for diff in report.config_differences:
        note(f"config differs: {diff}")
    rows = [[s.stage, f"{s.max_abs_error:.3g}", f"{s.max_rel_error:.3g}",
             "ok" if s.within_tolerance else f"DIVERGES at position {s.first_bad_position}"]
            for s in report.stages]
    say(table(rows, ["stage", "max abs", "max rel", "verdict"], "lrrl"))
    if report.top1_agreement is not None:
        say(f"top-1 agreement {report.top1_agreement:.1%}, "
                   f"top-5 overlap {report.top5_agreement:.1%}")
    d = report.first_divergence
    if d is None:
        say(f"OK: within atol {report.atol:g}, rtol {report.rtol:g}")
    else:
        where = f"layer {d.layer}" if d.layer is not None else "the output (final norm, lm_head)"
        if d.stream is not None:
            where += f" (residual stream {d.stream})"
        say(f"FAILED: {where} diverges first, at position {d.position} (token {d.token}), "
            f"max abs error {d.abs_error:.3g} (atol {report.atol:g}, rtol {report.rtol:g})")
