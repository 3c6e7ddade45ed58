"""`ckpt download REPO_ID`: plan, fetch only what is needed, verify every byte."""

from __future__ import annotations

from pathlib import Path

import click

from .conventions import json_mode, note, progress, standard_options
from .render import emit_json, human_bytes, safe_name, say, table


class LayerRange(click.ParamType):
    """'A-B' (inclusive) or 'A'."""

    name = "A-B"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        first, sep, last = str(value).partition("-")
        try:
            a, b = int(first), int(last) if sep else int(first)
        except ValueError:
            self.fail(f"{value!r}: expected A-B or A (layer numbers)", param, ctx)
        if a < 0 or b < a:
            self.fail(f"{value!r}: expected 0 <= A <= B", param, ctx)
        return a, b


def _render_plan(plan) -> None:  # a download.DownloadPlan
    what = {"full": "all selected files", "config-only": "config, index, tokenizer and code",
            "layers": f"layers {plan.layers[0]}-{plan.layers[1]}" if plan.layers else ""}[plan.mode]
    tensors = f", {plan.tensors:,} tensors" if plan.tensors is not None else ""
    say(f"{plan.repo_id} @ {plan.revision} (commit {plan.commit[:12]}): {what}{tensors}")
    rows = [[safe_name(f.path), f.kind, "lfs" if f.lfs else "git", f"{f.size:,}",
             "present" if f.present else "fetch"] for f in plan.files]
    say(table(rows, ["file", "kind", "store", "bytes", "action"], "lllrl"))
    free = human_bytes(plan.free_bytes) if plan.free_bytes is not None else "unknown"
    say(f"{len(plan.files)} of {plan.repo_files} files, {human_bytes(plan.total_bytes)} of "
               f"{human_bytes(plan.repo_bytes)}; to fetch {human_bytes(plan.download_bytes)} into "
               f"{plan.destination} ({free} free{'' if plan.fits else ', DOES NOT FIT'})")


@click.command()
@click.argument("repo_id")
@click.option("--revision", default="main", show_default=True, help="Branch, tag or commit id.")
@click.option("--local-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Download into this directory (default: the Hugging Face cache, HF_HOME).")
@click.option("--include", multiple=True, metavar="PAT",
              help="Glob on repo paths; only these (full download) or these too (--layers, "
                   "--config-only). Repeatable.")
@click.option("--exclude", multiple=True, metavar="PAT",
              help="Glob on repo paths to skip. Repeatable.")
@click.option("--layers", type=LayerRange(), default=None,
              help="Only config, index, tokenizer and the shards holding layers A-B (inclusive).")
@click.option("--config-only", is_flag=True, help="Only config, index, tokenizer and code files.")
@click.option("--dry-run", is_flag=True,
              help="Print the plan and check disk space; fetch no weights.")
@click.option("--no-verify", is_flag=True,
              help="Skip SHA-256 (sizes and headers are still checked); no manifest is written.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="The Hugging Face cache to use (default: HF_HUB_CACHE, or HF_HOME/hub).")
@click.option("--token", metavar="TOKEN",
              help="Hub token for private or gated repositories (default: HF_TOKEN, then "
                   "the token saved by `hf auth login`).")
@click.option("--max-workers", "--workers", "workers", type=click.IntRange(1, 64), default=8,
              show_default=True, help="Files downloaded at once (--workers is an alias).")
@standard_options
def download(repo_id, revision, local_dir, include, exclude, layers, config_only, dry_run,
             no_verify, cache_dir, token, workers):
    """Download a checkpoint from the Hugging Face Hub, or only part of it, and verify it.

    Honours HF_ENDPOINT, HF_TOKEN, HF_HOME and HF_HUB_CACHE; with HF_HUB_OFFLINE=1 it
    stops and says so (a download must ask the Hub for the file list). Every file is
    checked against the Hub's
    SHA-256 (LFS) or git blob id, the shards' headers against the tensor plan of
    config.json, and ckpt-manifest.json is written for `ckpt validate --checksums`.

    \b
    Examples:
      ckpt download deepseek-ai/DeepSeek-V3 --local-dir V3 --dry-run
      ckpt download deepseek-ai/DeepSeek-V3 --local-dir V3 --layers 3-5
    """
    if layers and config_only:
        raise click.UsageError("--layers and --config-only exclude each other")
    # here, not at the top: `ckpt download --help` stays clear of the Hub client (~1 s)
    from ..commands.download import download as fetch_checkpoint
    from ..commands.download_plan import plan_download, require_fit

    options = dict(revision=revision, local_dir=local_dir, include=include, exclude=exclude,
                   layers=layers, config_only=config_only, token=token, cache_dir=cache_dir)
    if dry_run:
        plan = plan_download(repo_id, **options)
        if json_mode():
            emit_json(plan)
        else:
            _render_plan(plan)
        require_fit(plan)
        return
    report = fetch_checkpoint(repo_id, **options, verify=not no_verify, workers=workers,
                              progress=progress())
    if json_mode():
        emit_json(report)
        return
    plan = report.plan
    say(f"{plan.repo_id} @ {plan.revision} (commit {plan.commit[:12]}) -> "
        f"{report.local_dir}")
    say(f"files: {len(report.files)}, {human_bytes(plan.total_bytes)} "
        f"({human_bytes(report.transferred_bytes)} transferred this run)")
    checks = sorted({r.check for r in report.files})
    say("bytes: " + (f"verified ({', '.join(checks)})" if report.verified
                     else "sizes only (--no-verify)"))
    t = report.tensor_check
    if t is not None:
        scope = (f"all {t.expected:,} expected present" if t.complete
                 else "checked per shard: not every shard was fetched")
        say(f"tensors: {t.tensors:,} in {t.shards} shard(s) match the tensor plan; {scope}")
    for text in report.notes:
        note(f"note: {text}")
    if report.manifest:
        say(f"manifest: {report.manifest}")
