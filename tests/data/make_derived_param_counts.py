"""Rewrite tests/data/derived_param_counts.json: transformers' parameter counts of the
DeepSeek-derived presets in tests/data/derived_presets/, built on the meta device (no memory).

    python tests/data/make_derived_param_counts.py        # needs the `reference` extra

Each entry says what it counts (docs/derived_families.md explains the figures):
- `parameters`: every nn.Parameter of the model transformers builds from the preset
  (`named_parameters()`, tied weights once), per top-level part and per kind of module;
- `persistent_buffers`: buffers saved in a checkpoint (the routers' `e_score_correction_bias`);
  `non_persistent_buffers`: rotary tables, never saved;
- `checkpoint_elements`: parameters + persistent buffers (what a transformers-saved checkpoint
  of that model holds, in transformers' fused-expert layout);
- `not_built`: parts the release stores that transformers does not build (MTP layers, which
  it ignores on load) and parts it builds that the release does not store (LongCat-Flash's
  expert weights allocated for zero-computation experts).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).parent
PRESETS = HERE / "derived_presets"
OUT = HERE / "derived_param_counts.json"


def _kind(name: str) -> str:
    """A parameter's module kind, layer numbers and expert indices folded away."""
    name = re.sub(r"\.\d+\.", ".N.", name)
    for kind, pattern in (
        ("embedding", r"embed_tokens"), ("lm_head", r"^lm_head"),
        ("vision_tower", r"vision_tower"), ("projector", r"multi_modal_projector"),
        ("indexer", r"\.indexer\."), ("routed_experts", r"\.experts\."),
        ("router", r"\.(gate|router)\.(weight|classifier|e_score)"),
        ("shared_experts", r"\.shared_experts\."), ("attention", r"\.self_attn\."),
        ("dense_mlp", r"\.mlps?\.(N\.)?(gate|up|down)_proj"), ("norm", r"norm"),
    ):
        if re.search(pattern, name):
            return kind
    return "other"


def count(preset_path: Path) -> dict:
    import torch
    import transformers

    raw = json.loads(preset_path.read_text())
    provenance = raw.pop("_provenance")
    arch = raw["architectures"][0]
    config = transformers.AutoConfig.for_model(**raw)
    with torch.device("meta"):
        model = getattr(transformers, arch)(config)
    by_kind: dict[str, int] = {}
    for name, p in model.named_parameters():
        by_kind[_kind(name)] = by_kind.get(_kind(name), 0) + p.numel()
    persistent = set(model.state_dict())
    buffers: dict[str, dict[str, int]] = {"persistent": {}, "non_persistent": {}}
    for name, b in model.named_buffers():
        side = "persistent" if name in persistent else "non_persistent"
        key = re.sub(r"\.\d+\.", ".N.", name)
        buffers[side][key] = buffers[side].get(key, 0) + b.numel()
    params = sum(by_kind.values())
    text = config.get_text_config()
    entry = {
        "preset": preset_path.name,
        "transformers": transformers.__version__,
        "class": arch,
        "parameters": params,
        "parameters_by_kind": dict(sorted(by_kind.items())),
        "persistent_buffers": sum(buffers["persistent"].values()),
        "persistent_buffers_by_name": buffers["persistent"],
        "non_persistent_buffers": sum(buffers["non_persistent"].values()),
        "checkpoint_elements": params + sum(buffers["persistent"].values()),
        "language_model_parameters": params - by_kind.get("vision_tower", 0)
        - by_kind.get("projector", 0),
        "not_built": _not_built(raw, text),
        "activated_per_token": _activated(by_kind, text),
        "published": provenance.get("published"),
    }
    return entry


def _activated(by_kind: dict[str, int], text) -> dict:
    """Parameters a token passes through (ckpt's rule: routed experts x top-k / experts, no
    input embedding, no other tower). LongCat-Flash's top-k mixes real and zero experts, so
    it is a range: all picks zero experts .. all picks real ones."""
    routed = by_kind.get("routed_experts", 0)
    fixed = sum(by_kind.values()) - routed - sum(
        by_kind.get(k, 0) for k in ("embedding", "vision_tower", "projector"))
    zero = getattr(text, "zero_expert_num", 0) or 0
    if zero:
        e, i, h, n = (text.n_routed_experts, text.expert_ffn_hidden_size, text.hidden_size,
                      text.num_layers)
        real = e * 3 * i * h * n  # gate, up and down of the real experts only
        return {"min": fixed, "max": fixed + real * text.moe_topk // e,
                "rule": "min: every pick a zero expert; max: every pick a real one"}
    k, e = text.num_experts_per_tok, text.n_routed_experts
    return {"value": fixed + routed * k // e, "rule": f"routed experts x {k}/{e}, no embedding"}


def _not_built(raw: dict, text) -> dict:
    """What the release and transformers' model disagree on, as element counts."""
    out = {}
    mtp = raw.get("num_nextn_predict_layers") or 0
    if mtp:
        out["mtp_layers"] = (f"{mtp} MTP layer(s) stored after the main layers; transformers "
                             f"ignores them on load (_keys_to_ignore_on_load_unexpected)")
    zero = getattr(text, "zero_expert_num", 0) or 0
    if zero:
        phantom = zero * 2 * text.expert_ffn_hidden_size * text.hidden_size * text.num_layers
        out["zero_expert_gate_up_elements"] = phantom
        out["zero_expert_note"] = ("LongcatFlashExperts allocates gate_up_proj for routed + zero "
                                   "experts; zero experts are identities with no weights in the "
                                   "release, so these elements are counted by transformers only")
    return out


def main() -> None:
    entries = {p.stem: count(p) for p in sorted(PRESETS.glob("*.json"))}
    OUT.write_text(json.dumps(entries, indent=2) + "\n")
    for name, e in entries.items():
        print(f"{name:18} {e['parameters']:>17,} params  {e['persistent_buffers']:>8,} buffers")


if __name__ == "__main__":
    sys.exit(main())
