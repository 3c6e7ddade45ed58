"""`ckpt make-tiny DST`: a small random checkpoint with a preset's architecture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from ..errors import OutputError
from .conventions import json_mode, note, progress, standard_options
from .render import emit_json, human_bytes, say


def _parse_override(_ctx, _param, values):
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _require_room(dst: str, plan) -> None:
    """Refuse, before anything is allocated, a checkpoint the disk under DST cannot hold or
    whose largest tensor (built in memory) this machine cannot: a --set gone wrong."""
    from ..reference.deepseek import available_memory

    where = Path(dst).resolve()
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    largest = max(s.nbytes for s in plan.specs)
    memory = available_memory()
    if memory is not None and 2 * largest > memory:  # the tensor and its random source
        raise click.BadParameter(f"its largest tensor would need {human_bytes(2 * largest)} "
                                 f"of memory to build, {human_bytes(memory)} available",
                                 param_hint="'--set' / '--config'")
    if plan.total_bytes > free:  # a full disk, not a wrong option: a failure (exit 1)
        raise OutputError(f"{dst}: No space left for the {human_bytes(plan.total_bytes)} "
                          f"checkpoint: {where} has {human_bytes(free)} free")


@click.command("make-tiny")
@click.argument("dst", type=click.Path(file_okay=False))
@click.option("--config", "--preset", "source", default="v3", show_default=True, metavar="X",
              help="Architecture to shrink: a preset, a config.json (any layout ckpt reads) "
                   "or a checkpoint directory.")
@click.option("--fp8", is_flag=True,
              help="Block-FP8 weights with weight_scale_inv, like V3's release.")
@click.option("--shards", default=2, show_default=True, type=click.IntRange(1),
              help="Number of shards.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1),
              help="Random seed; the same seed writes byte-identical files.")
@click.option("--real-widths", is_flag=True,
              help="Keep the preset's widths (hidden, heads, ranks, vocab); shrink only counts.")
@click.option("--set", "overrides", multiple=True, callback=_parse_override, metavar="KEY=VALUE",
              help="Override a config field (JSON value), e.g. --set n_routed_experts=32.")
@click.option("--expert-dtype", type=click.Choice(["fp4", "fp8"]), default=None,
              help="DeepSeek-V4 with --fp8: routed experts MXFP4 (the release) or FP8 blocks.")
@click.option("--overwrite", is_flag=True, help="Replace the contents of a non-empty DST.")
@standard_options
def make_tiny(dst, source, fp8, shards, seed, real_widths, overrides, expert_dtype, overwrite):
    """Write a real, small, deterministic checkpoint (config.json, index, shards) to DST.

    \b
    Examples:
      ckpt make-tiny /tmp/v3-fp8 --preset v3 --fp8 --shards 3
      ckpt make-tiny /tmp/v4 --preset v4-flash --fp8 --expert-dtype fp8
      ckpt make-tiny /tmp/t --config ./my-finetune/ --set n_routed_experts=16
    """
    from ..commands.tiny import make_tiny as build  # here: `--help` stays clear of numpy
    from ..commands.tiny import tiny_plan

    _, plan = tiny_plan(source, fp8=fp8, real_widths=real_widths, overrides=overrides,
                        expert_dtype=expert_dtype, shards=shards)  # every option checked
    _require_room(dst, plan)
    note(f"writing {len(plan):,} tensors, {human_bytes(plan.total_bytes)}, to {dst}")
    result = build(dst, source, fp8=fp8, shards=shards, seed=seed, real_widths=real_widths,
                   overrides=overrides, overwrite=overwrite, progress=progress(),
                   expert_dtype=expert_dtype)
    if json_mode():
        emit_json(result)
        return
    say(f"wrote {result.path}: {source} ({result.layout}), {result.tensors} tensors in "
        f"{result.shards} shard(s), {human_bytes(result.total_bytes)}")
    if result.shrunk:
        note("shrunk: " + ", ".join(f"{k} {a}->{b}" for k, (a, b) in result.shrunk.items()))
