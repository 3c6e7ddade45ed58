"""`ckpt reshard SRC DST`: HF shards of any size, DeepSeek's model-parallel layout, and back."""

from __future__ import annotations


import click

from ..errors import ArgumentError
from ..sizes import parse_size
from .conventions import json_mode, note, note_kept, progress, standard_options
from .render import (
    CONFIG,
    EXECUTOR,
    SOURCE_OR_PATH,
    echo_nodes,
    emit_json,
    human_bytes,
    human_count,
    safe_name,
    say,
    table,
)


# Far above any deployment (DeepSeek serves V3 on 16-128 ranks); a bound checked before a
# rank list is built, so an absurd one is a usage error, not a MemoryError.
MAX_MODEL_PARALLEL = 1 << 16


def parse_ranks(text: str) -> list[int]:
    """Ranks from '0-7', '3' or '0,2,4-5'."""
    ranks: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise ValueError(f"{text!r} is not a rank list like 0-7 or 0,2,4-5")
        first, last = int(lo), int(hi) if dash else int(lo)
        if last < first:
            raise ValueError(f"{part.strip()!r}: the range runs backwards")
        if last >= MAX_MODEL_PARALLEL:
            raise ValueError(f"rank {last} is beyond {MAX_MODEL_PARALLEL - 1}, the largest "
                             f"rank of the largest model-parallel layout this tool writes")
        ranks += range(first, last + 1)
    return ranks


class RanksParam(click.ParamType):
    name = "ranks"

    def convert(self, value, param, ctx):
        try:
            return parse_ranks(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


class SizeParam(click.ParamType):
    name = "size"

    def convert(self, value, param, ctx):
        try:
            return parse_size(value)
        except ArgumentError:
            self.fail(f"{value!r} is not a positive size like 500MB, 5GB or 5GiB", param, ctx)


@click.command()
@click.argument("src", type=SOURCE_OR_PATH)
@click.argument("dst", type=SOURCE_OR_PATH)
@click.option("--max-shard-size", type=SizeParam(),
              help="HF layout with shards of at most SIZE (500MB, 5GB, 5GiB); with --to hf, "
                   "the shard size of the result (default 5GB).")
@click.option("--to", "to", type=click.Choice(["deepseek-mp", "hf"]),
              help="deepseek-mp: DeepSeek's model{i}-mp{N}.safetensors inference layout; "
                   "hf: back from it.")
@click.option("--model-parallel", type=click.IntRange(1, MAX_MODEL_PARALLEL), metavar="N",
              help="Ranks for --to deepseek-mp.")
@click.option("--keep-mtp", is_flag=True,
              help="Keep the MTP layer in --to deepseek-mp (dropped by default, as DeepSeek's "
                   "convert.py does).")
@click.option("--ranks", type=RanksParam(), metavar="LIST",
              help="With --to deepseek-mp: write only these ranks' files (0-7, 0,2,4-5), e.g. "
                   "on the serving node that loads them.")
@click.option("--rank-resource", metavar="NAME",
              help="With --executor ray: rank i's job runs on the node holding custom "
                   "resource NAMEi (ray start --resources '{\"NAME3\": 1}').")
@CONFIG
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Output files written in parallel (default: every core from 1 GiB up).")
@EXECUTOR
@click.option("--overwrite", is_flag=True,
              help="Replace the checkpoint in a non-empty DST (files of your own there are kept).")
@standard_options
def reshard(src, dst, max_shard_size, to, model_parallel, keep_mtp, ranks, rank_resource,
            config_spec, workers, executor, overwrite):
    """Rewrite SRC into DST in another layout, streaming, with a coverage proof.

    \b
    Examples:
    ckpt reshard SRC DST --max-shard-size 5GB
    ckpt reshard SRC DST --to deepseek-mp --model-parallel 16 --ranks 0-7
    ckpt reshard SRC DST --to hf [--max-shard-size 5GB]

    SRC may be remote (hf://ORG/NAME[@REV], s3://...: read by range), DST an object store
    (s3://BUCKET/PREFIX).

    The coverage proof is also written beside DST, as DST.reshard-report.json.
    """
    from ..commands.reshard import reshard as run

    if to is None and max_shard_size is None:
        raise click.UsageError("pass --max-shard-size SIZE, --to deepseek-mp or --to hf")
    if to == "deepseek-mp":
        if model_parallel is None:
            raise click.UsageError("--to deepseek-mp needs --model-parallel N")
        if max_shard_size is not None:
            raise click.UsageError("--max-shard-size does not apply to --to deepseek-mp "
                                   "(one file per rank)")
        bad = [r for r in ranks or () if r >= model_parallel]
        if bad:
            raise click.UsageError(f"--ranks: rank {bad[0]} is outside 0-{model_parallel - 1} "
                                   f"of --model-parallel {model_parallel}")
    elif model_parallel is not None or keep_mtp or ranks is not None:
        raise click.UsageError("--model-parallel, --keep-mtp and --ranks go with --to deepseek-mp")
    if rank_resource is not None and (executor != "ray" or to != "deepseek-mp"):
        raise click.UsageError("--rank-resource goes with --to deepseek-mp --executor ray")
    report = run(src, dst, max_shard_size=max_shard_size, to=to, model_parallel=model_parallel,
                 keep_mtp=keep_mtp, config=config_spec, workers=workers, overwrite=overwrite,
                 progress=progress(), executor=executor, ranks=ranks,
                 rank_resource=rank_resource)
    if json_mode():
        emit_json(report)
        return
    _render(report)
    note_kept(report)


def _render(report) -> None:
    c = report.coverage
    files = report.files
    shown = files if len(files) <= 12 else files[:5] + files[-5:]
    rows = [[safe_name(f.name), f"{f.tensors:,}", human_bytes(f.bytes)] for f in shown]
    if len(shown) < len(files):
        rows.insert(5, [f"... {len(files) - 10} more", "", ""])
    say(table(rows, ["file", "tensors", "size"]))
    resumed = (f" ({report.resumed_files} kept from an interrupted run)"
               if report.resumed_files else "")
    say(f"\n{len(files)} file(s), {human_bytes(report.total_size)} written to "
               f"{safe_name(report.destination)} in {report.seconds:.1f} s{resumed}")
    extra = []
    if c.replica_elements:
        extra.append(f"{human_count(c.replica_elements)} replicated on every rank")
    if c.compared_elements:
        extra.append(f"{human_count(c.compared_elements)} rank replicas checked identical")
    if c.dropped_tensors:
        extra.append(f"{c.dropped_tensors:,} MTP tensors dropped")
    say(f"coverage: all {c.source_tensors:,} source tensors "
               f"({human_count(c.source_elements)} elements) accounted for exactly once"
               + (f"; {', '.join(extra)}" if extra else ""))
    echo_nodes(report.nodes)
    for text in report.notes:
        note(f"note: {text}")
