"""`ckpt validate PATH`: every defect of a checkpoint, grouped by code; exit 1 on errors."""

from __future__ import annotations

import click

from ..remote.path import is_remote
from ..remote.stores import remote_spec
from ..inventory.findings import cause_label
from ..commands.validate import CODES, Finding, ValidationReport
from ..commands.validate import validate as run_validate
from .conventions import json_mode, progress, standard_options
from .render import (CONFIG, EXECUTOR, echo_nodes, emit_json, human_bytes, remote_option, safe_name,
                     say)

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


@click.command()
@click.argument("path")
@CONFIG
@click.option("--deep", is_flag=True,
              help="Also read every tensor once: NaN/Inf, FP8 NaN codes, scales > 0, all-zero.")
@click.option("--checksums", metavar="MANIFEST|hub",
              help="Check sizes and SHA-256 against a manifest (as written by download or "
                   "--write-manifest); 'hub' streams each file of an hf:// source once and "
                   "compares it with the Hub's LFS SHA-256, storing nothing.")
@click.option("--write-manifest", "manifest_out", is_flag=False, flag_value="", default=None,
              metavar="[FILE]",
              help="Record size and SHA-256 of every file in ckpt-manifest.json inside the "
                   "checkpoint (or in FILE); only when no error is found.")
@click.option("--strict", is_flag=True, help="Warnings fail too (exit 1).")
@click.option("--show", default=5, show_default=True, type=click.IntRange(min=0),
              help="Findings shown per code; the rest are counted.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes for --deep and hashing, one file each [default: every core "
                   "from 1 GiB up].")
@EXECUTOR
@remote_option
@standard_options
def validate(path: str, config_spec: str | None, deep: bool, checksums: str | None,
             manifest_out: str | None, strict: bool, show: int, workers: int | None,
             executor: str, remote: bool):
    """Check a checkpoint (HF or DeepSeek model-parallel directory, or one .safetensors file;
    local, or remote: hf://ORG/NAME[@REV][/DIR], s3://..., reading headers only) before anyone
    loads it: headers, index vs shards, the config's tensor plan, FP8 scales; with --deep
    every value; with --checksums every byte. Exit 0 when clean, 1 on errors (or on
    warnings with --strict).

    \b
    Examples:
      ckpt validate ./DeepSeek-V3 --deep
      ckpt validate ./my-ckpt --config v3 --strict
      ckpt validate hf://deepseek-ai/DeepSeek-V3 --checksums hub
    """
    path = remote_spec(path, remote)
    if checksums == "hub" and not is_remote(path):
        raise click.BadParameter("'hub' needs a remote source (hf://ORG/NAME or --remote)",
                                 param_hint="--checksums")
    reads_bytes = deep or checksums or manifest_out is not None
    write = False if manifest_out is None else (manifest_out or True)
    report = run_validate(path, config=config_spec, deep=deep, checksums=checksums,
                          write_manifest=write, progress=progress() if reads_bytes else None,
                          workers=workers, executor=executor, strict=strict)
    if json_mode():
        emit_json(report)
    else:
        say(render(report, show))
        echo_nodes(report.nodes)
    if not report.ok:
        raise click.exceptions.Exit(1)


def render(report: ValidationReport, show: int = 5) -> str:
    """Findings grouped by code, a finding that explains others first with what follows
    from it counted under it, then errors, warnings, notes (at most `show` of each code),
    then a verdict."""
    layout = f", {report.layout.upper()} layout" if report.layout else ""
    lines = [f"{safe_name(report.path)}: {report.tensors:,} tensors in {report.files:,} files "
             f"({human_bytes(report.tensor_bytes)}){layout}",
             f"checks: {', '.join(report.checks)}"
             + (f" (config: {safe_name(report.config)})" if report.config else "")]
    effects: dict[str, dict[str, int]] = {}  # cause -> code -> how many follow from it
    for finding in report.findings:
        if finding.explained_by is not None:
            counts = effects.setdefault(finding.explained_by, {})
            counts[finding.code] = counts.get(finding.code, 0) + 1
    groups: dict[str, list[Finding]] = {}
    for finding in report.findings:
        if finding.explained_by is None:
            groups.setdefault(finding.code, []).append(finding)
    causes = {code for code, items in groups.items()
              if any(cause_label(x) in effects for x in items)}
    for code, items in sorted(groups.items(), key=lambda kv: (
            kv[0] not in causes, SEVERITY_ORDER[kv[1][0].severity])):
        lines += ["", f"{items[0].severity} {code} ({len(items):,}): {CODES[code][1]}"]
        for x in items[:show]:
            lines.append(f"  {safe_name(x.message)}")
            if cause_label(x) in effects:
                counts = effects[cause_label(x)]
                what = ", ".join(f"{c} {n:,}" for c, n in counts.items())
                lines.append(f"    {sum(counts.values()):,} finding(s) follow from this "
                             f"({what}): not listed (--json lists them); fix this first")
        if len(items) > show:
            lines.append(f"  and {len(items) - show:,} more like this")
    if report.manifest_written:
        lines += ["", f"manifest written: {safe_name(report.manifest_written)}"]
    verdict = "OK" if report.ok else "FAILED"
    infos = len(report.findings) - report.errors - report.warnings
    follow = f" ({report.explained:,} follow from the first)" if report.explained else ""
    lines += ["", f"{verdict}: {report.errors:,} error(s){follow}, {report.warnings:,} "
                  f"warning(s)" + (f", {infos:,} note(s)" if infos else "")]
    return "\n".join(lines)
