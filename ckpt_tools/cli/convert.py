"""`ckpt upcast SRC DST` (FP8 -> BF16/F32) and `ckpt quantize SRC DST` (BF16 -> FP8)."""

from __future__ import annotations

import click

from .conventions import json_mode, note, note_kept, progress, standard_options
from .render import (CONFIG, EXECUTOR, SOURCE_OR_PATH, echo_nodes, emit_json, human_bytes,
                     safe_name, say)
from .reshard import SizeParam

_WORKERS = click.option("--workers", type=click.IntRange(1), default=None,
                        help="Worker processes, one shard each [default: the machine's cores; "
                             "1 below 1 GiB].")
_OVERWRITE = click.option("--overwrite", is_flag=True,
                          help="Replace the checkpoint in a non-empty DST (files of your own "
                               "there are kept).")
_SRC = click.argument("src", type=SOURCE_OR_PATH)  # a local path, or hf://, s3://, ...
_DST = click.argument("dst", type=SOURCE_OR_PATH)
COMPILED_KERNELS = "ckpt_tools.formats.compiled"  # what formats.kernels imports on first use


def _prepare_workers(src, workers, executor) -> None:
    """A large local conversion with several workers imports numba's kernels once, here,
    while it plans, instead of once in each worker (execution.parallel.prepare_workers)."""
    # here: `ckpt upcast --help` imports neither the executor nor the kernels' chooser
    from ..execution.parallel import prepare_workers
    from ..formats.kernels import choice as kernels_choice
    from ..io.index import local_safetensors_bytes

    if kernels_choice() != "numpy":
        prepare_workers(local_safetensors_bytes(src), workers, executor, [COMPILED_KERNELS])


def _echo_written(report, what: str) -> None:
    rate = f" ({human_bytes(report.total_size / report.seconds)}/s)" if report.seconds > 0 else ""
    kept = f", {report.resumed_files} kept from the interrupted run" if report.resumed_files else ""
    say(f"wrote {safe_name(str(report.destination))}: {len(report.files)} shard(s), {what}, "
        f"{human_bytes(report.total_size)} in {report.seconds:.1f} s{rate}{kept}")
    echo_nodes(report.nodes)
    note_kept(report)
    for text in report.notes:
        note(f"  {text}")



@click.command()
@_SRC
@_DST
@click.option("--dtype", type=click.Choice(["bf16", "f32"]), default="bf16", show_default=True,
              help="Output dtype of the dequantised weights (f32 also widens BF16 tensors).")
@click.option("--max-shard-size", type=SizeParam(), default=None, metavar="SIZE",
              help="Re-shard the output (500MB, 5GB, 5GiB) instead of keeping shard names.")
@click.option("--layout", type=click.Choice(["deepseek", "hf"]), default=None,
              help="DeepSeek-V4 output names: deepseek (the source's, default) or hf "
                   "(transformers' DeepseekV4ForCausalLM, experts stacked).")
@_WORKERS
@EXECUTOR
@_OVERWRITE
@click.option("--allow-copy", is_flag=True,
              help="Write the output even when SRC has no FP8 weight (it would be a copy).")
@CONFIG
@standard_options
def upcast(src, dst, dtype, max_shard_size, layout, workers, executor, overwrite, allow_copy,
           config_spec):
    """Dequantise an FP8 checkpoint (V3, R1, V3.1, V3.2, V4 with MXFP4 experts, Kimi-K2)
    to BF16 or F32, exactly, on any CPU.

    Every FP8 weight becomes dtype(float32(w) x its block's weight_scale_inv), bit for bit
    DeepSeek's definition; other tensors are copied; the index, config.json and the
    tokenizer files come out ready to load. Nothing is written if a scale is missing or
    malformed. Rerun the same command after an interruption to resume. SRC may be remote
    (hf://ORG/NAME[@REV], s3://...: read by range), DST an object store (s3://BUCKET/PREFIX).

    \b
    Examples:
      ckpt upcast ./DeepSeek-V3 ./DeepSeek-V3-bf16
      ckpt upcast ./DeepSeek-V4-Flash ./V4-bf16 --layout hf --workers 4
      ckpt upcast ./weights-only ./V3-bf16 --config v3
    """
    _prepare_workers(src, workers, executor)
    from ..commands.convert import upcast as run

    report = run(src, dst, dtype=dtype, workers=workers, max_shard_size=max_shard_size,
                 overwrite=overwrite, allow_copy=allow_copy, progress=progress(),
                 executor=executor, layout=layout, config=config_spec)
    if json_mode():
        emit_json(report)
        return
    _echo_written(report, f"{report.tensors} tensors")
    fp4 = getattr(report, "fp4_dequantized", 0)
    what = f"FP8 weights (+ {fp4} MXFP4 experts)" if fp4 else "FP8 weights"
    say(f"  {report.dequantized - fp4} {what} dequantised to {dtype.upper()}, "
        f"{report.scales_dropped} scales dropped, {report.copied} tensors copied"
        + (f", {report.widened} widened to F32" if report.widened else "")
        + (f", {report.experts_stacked} expert stacks ({report.layout} layout)"
           if getattr(report, "experts_stacked", 0) else ""))


@click.command()
@_SRC
@_DST
@click.option("--scale-fmt", type=click.Choice(["float", "ue8m0"]), default=None,
              help="Scales amax/448 (V3, R1; the default) or powers of two at or above it "
                   "(V3.1; DeepSeek-V4 always).")
@click.option("--expert-dtype", type=click.Choice(["fp4", "fp8"]), default=None,
              help="DeepSeek-V4 routed experts: MXFP4 (default) or FP8 128-blocks; on an FP4 "
                   "checkpoint, fp8 re-packs the experts losslessly.")
@_WORKERS
@EXECUTOR
@_OVERWRITE
@CONFIG
@standard_options
def quantize(src, dst, scale_fmt, expert_dtype, workers, executor, overwrite, config_spec):
    """Quantise a BF16/F32 checkpoint to DeepSeek's block FP8 (e4m3, 128x128 scales).

    Exactly the weights V3's own checkpoint keeps in FP8 are quantised; values beyond the
    e4m3 range saturate. Reports, per tensor, the error of upcasting the result back. SRC
    may be remote (hf://, s3://), DST an object store (s3://BUCKET/PREFIX).

    \b
    Examples:
      ckpt quantize ./V3-bf16 ./V3-fp8
      ckpt quantize ./V3.1-bf16 ./V3.1-fp8 --scale-fmt ue8m0
    """
    _prepare_workers(src, workers, executor)
    from ..commands.convert import quantize as run

    report = run(src, dst, scale_fmt=scale_fmt, workers=workers, overwrite=overwrite,
                 progress=progress(), executor=executor, expert_dtype=expert_dtype,
                 config=config_spec)
    if json_mode():
        emit_json(report)
        return
    _echo_written(report, f"{report.quantized} weights quantised ({report.scale_fmt} scales), "
                          f"{report.copied} tensors copied")
    if report.errors:
        worst_abs = max(report.errors, key=lambda e: e.max_abs_error)
        worst_rel = max(report.errors, key=lambda e: e.rel_l2_error)
        say(f"  round trip to F32: max abs error {worst_abs.max_abs_error:.3g} "
            f"({safe_name(worst_abs.name)}), worst relative L2 {worst_rel.rel_l2_error:.3g} "
            f"({safe_name(worst_rel.name)})")
        nonfinite = sum(e.nonfinite for e in report.errors)
        if nonfinite:
            note(f"  {nonfinite} NaN/inf source values (NaN kept, inf saturated)")
