"""`ckpt info X`: architecture, provenance, parameters, tensors and bytes."""

from __future__ import annotations

import json

import click

from ..commands.info import describe
from ..presets import find_preset
from .conventions import json_mode, note, standard_options
from .plotting import plot_option, save_plot
from .render import emit_json, human_bytes, human_count, remote_option, say, table


@click.command()
@click.argument("source")
@remote_option
@plot_option
@standard_options
def info(source: str, remote: bool, plot_path):
    """Describe a preset (v2-lite, v2, v2.5, v3, r1, v3.1, kimi-k2, moonlight, ...),
    a config.json (any layout: HF, transformers 5, DeepSeek inference, wrapped) or a
    checkpoint directory, local or remote (hf://ORG/NAME[@REV][/DIR], s3://...: its config
    and shard headers only).

    \b
    Examples:
      ckpt info v3
      ckpt info ./DeepSeek-V3/config.json --plot info.png
      ckpt info hf://deepseek-ai/DeepSeek-V3
    """
    spec = source
    if remote:  # the remote clients only for a remote source
        from ..remote.stores import remote_spec

        spec = remote_spec(source, remote)
    result = describe(spec)
    _say_which_preset(source, result.source_kind)
    save_plot(plot_path, "info_figure", result)
    if json_mode():
        emit_json(result)
        return
    a, p = result.architecture, result.parameters
    title = result.title or result.source
    say(f"{title}  [{a.model_type}, {result.source_kind}]")
    if result.hf_repo:
        say(f"hub repo:    {result.hf_repo}")
    say(f"provenance:  {result.provenance.kind}: {result.provenance.source}")
    r = result.reading
    say(f"recognised:  {r.architecture} ({r.recognised_by}); {r.layout} layout")
    say(f"defaults:    {r.loader}"
        + (": " + ", ".join(f"{k}={json.dumps(v)}" for k, v in r.defaulted.items())
           + " (absent, filled)" if r.defaulted else ": none needed"))
    if r.wrapper_key:
        others = ", ".join(r.outside_plan) or "nothing"
        say(f"wrapped:     language model in {r.wrapper_key}, tensors under "
            f"'{r.tensor_prefix}'; outside the plan: {others}")
    if r.quantization_scheme:
        say(f"quantized:   {r.quantization_scheme} (plan shown unquantized; file dtypes "
            f"from headers)")
    for item in r.leaves_out:
        say(f"leaves out:  {item}")
    for w in r.warnings:
        note(f"warning: {w}")
    for w in r.inconsistencies:
        note(f"warning: inconsistent: {w} (validate fails; writers refuse)")
    say("")
    q = "none (q_proj)" if a.q_lora_rank is None else str(a.q_lora_rank)
    rows = [
        ["layers", f"{a.num_hidden_layers} ({a.dense_layers} dense + {a.moe_layers} MoE)"
                   + (f" + {a.mtp_layers} MTP" if a.mtp_layers else "")],
        ["hidden / heads", f"{a.hidden_size} / {a.num_attention_heads}"],
    ]
    if a.attention_schedule is None:
        rows.append(["MLA ranks q / kv", f"{q} / {a.kv_lora_rank}"])
    else:  # an attention schedule of its own (sliding / compressed layers, hash routing)
        rows += [["attention", f"shared-KV MQA, head_dim {a.head_dim}, q rank {q}"],
                 ["schedule", a.attention_schedule],
                 ["routing", f"{a.hash_layers} hash (tid2eid) layers, then learned"],
                 ["hyper-conn.", f"{a.hyper_connection_streams} residual streams"]]
    rows += [
        ["experts", f"{a.routed_experts} routed + {a.shared_experts} shared, "
                    f"{a.experts_per_token} per token"],
        ["router", f"{a.router}, groups {a.groups_per_token} of {a.expert_groups}, "
                   f"scale x{a.routed_scaling_factor:g}"],
        ["vocab / context", f"{a.vocab_size} / {a.max_position_embeddings}"],
        ["quantization", a.quantization or f"none ({a.weights_dtype})"],
    ]
    say(table(rows, align="ll"))
    say("")
    rows = [
        ["total (main model)", f"{p.main:,}", human_count(p.main)],
        *([["  without router buffers", f"{p.main - p.buffers:,}",
            human_count(p.main - p.buffers)]] if p.buffers else []),
        *([["activated per token, fewest", f"{p.activated_min:,}",
            human_count(p.activated_min)]] if p.activated_min is not None else []),
        [f"activated per token{', most' if p.activated_min is not None else ''}",
         f"{p.activated:,}", human_count(p.activated)],
        ["MTP modules", f"{p.mtp:,}", human_count(p.mtp)],
        ["checkpoint total", f"{p.checkpoint:,}", human_count(p.checkpoint)],
    ]
    say(table(rows, ["parameters", "count", ""], "lrr"))
    if result.published:
        pub = result.published
        verdict = "agree" if pub.total_agrees and pub.activated_agrees else "DISAGREE"
        activated = f" / {pub.activated} activated" if pub.activated else ""
        say(f"published:   {pub.total} total{activated} ({verdict}); "
                   f"{pub.source}")
    say("")
    rows = [[c.component, human_count(c.total), human_count(c.activated), human_count(c.mtp)]
            for c in result.components]
    say(table(rows, ["component", "total", "activated", "MTP"], "lrrr"))
    say("")
    for label, t in (("plan", result.plan), ("files", result.files)):
        if t is None:
            continue
        rows = [[d, f"{b:,}", human_bytes(b)] for d, b in sorted(t.bytes_by_dtype.items())]
        rows.append(["total", f"{t.total_bytes:,}", human_bytes(t.total_bytes)])
        say(f"{label}: {t.tensors:,} tensors, {t.layout} layout")
        say(table(rows, ["dtype", "bytes", ""], "lrr"))
        say("")
    if result.sparse_attention is not None:
        _sparse_attention(result.sparse_attention)


def _sparse_attention(d) -> None:
    """V3.2: where the indexer's parameters and bytes sit, and what DSA saves."""
    say(f"DeepSeek Sparse Attention: lightning indexer of {d.index_n_heads} heads x "
               f"{d.index_head_dim}, each query attends to its top {d.index_topk:,} keys")
    rows = [
        ["indexer, one layer", f"{d.indexer_per_layer:,}", human_count(d.indexer_per_layer),
         human_bytes(d.indexer_bytes_per_layer)],
        ["indexer, main model", f"{d.indexer_main:,}", human_count(d.indexer_main), ""],
        ["indexer, MTP layers", f"{d.indexer_mtp:,}", human_count(d.indexer_mtp), ""],
        ["indexer, stored (all layers)", "", "", human_bytes(d.indexer_bytes)],
    ]
    say(table(rows, ["self_attn.indexer.*", "parameters", "", f"bytes ({d.layout})"],
                     "lrrr"))
    say(f"extra KV cache per token: {d.kv_extra_per_token_bf16:,} B as BF16 "
               f"(+{d.kv_extra_over_mla:.0%} over MLA's), {d.kv_extra_per_token_fp8:,} B as "
               f"DeepSeek deploys it (FP8 keys + F32 scales)")
    rows = [[f"{c.context:,}", human_flops(c.dense_mla_flops), human_flops(c.dsa_flops),
             f"{c.dsa_over_dense:.2f}x"] for c in d.flops]
    say(table(rows, ["context", "dense MLA", "DSA", "DSA/dense"], "rrrr"))
    cheaper = (f"DSA is cheaper from {d.crossover_context:,} tokens of context"
               if d.crossover_context else "DSA is never cheaper: its indexer costs more per "
               "key than MLA")
    say(f"attention FLOPs per token; {cheaper}")
    say("")


def _say_which_preset(source: str, kind: str) -> None:
    """An alias, a Hub id or a family name ("v4") is read as one preset: say which."""
    preset = find_preset(source) if kind == "preset" else None
    if preset is None or source.lower() == preset.name:
        return
    hub = (f"; for the Hub repository itself, write hf://{source}"
           if source.lower() == preset.hf_repo.lower() else "")
    note(f"{source}: the preset {preset.name} ({preset.title}){hub}; `ckpt presets` lists "
         f"every preset and its aliases")


def human_flops(n: int) -> str:
    return f"{n / 1e9:,.2f} GFLOP"
