"""`ckpt presets`: the bundled configs, their aliases and where their values come from."""

from __future__ import annotations

import click

from ..presets import all_presets
from .conventions import json_mode, standard_options
from .render import emit_json, say, table


@click.command()
@standard_options
def presets():
    """List the presets accepted wherever a config is (info, diff, make-tiny, validate
    --config, ...): name, model type, aliases and provenance (verbatim upstream file, or
    reconstructed, and from where: `ckpt info NAME` shows the source).

    \b
    Examples:
      ckpt presets
      ckpt presets --json | jq '.presets[].name'
    """
    found = all_presets()
    if json_mode():
        emit_json({"presets": [
            {"name": p.name, "title": p.title, "model_type": p.config.model_type,
             "hf_repo": p.hf_repo, "aliases": list(p.aliases),
             "provenance": {"kind": p.provenance_kind, "source": p.provenance},
             "published": dict(p.published)} for p in found.values()]})
        return
    rows = [[p.name, p.config.model_type, p.provenance_kind,
             ", ".join([p.hf_repo, *p.aliases])] for p in found.values()]
    say(table(rows, ["preset", "model_type", "provenance", "also accepted as"], "llll"))
    say("")
    say("`ckpt info NAME` shows a preset's architecture, figures and the source of its values.")
