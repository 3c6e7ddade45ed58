"""`ckpt info X`: architecture, provenance, parameters, tensors and bytes."""

from __future__ import annotations

import json

import click

from ..info import describe
from ..remote import remote_spec
from .plotting import plot_option, save_plot
from .render import emit_json, human_bytes, human_count, remote_option, table


@click.command()
@click.argument("source")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@remote_option
@plot_option
def info(source: str, as_json: bool, remote: bool, plot_path):
    """Describe a preset (v2-lite, v2, v2.5, v3, r1, v3.1, kimi-k2, moonlight, ...),
    a config.json (any layout: HF, transformers 5, DeepSeek inference, wrapped) or a
    checkpoint directory, local or remote (hf://ORG/NAME[@REV][/DIR], s3://...: its config
    and shard headers only)."""
    result = describe(remote_spec(source, remote))
    save_plot(plot_path, "info_figure", result)
    if as_json:
        emit_json(result)
        return
    a, p = result.architecture, result.parameters
    title = result.title or result.source
    click.echo(f"{title}  [{a.model_type}, {result.source_kind}]")
    if result.hf_repo:
        click.echo(f"hub repo:    {result.hf_repo}")
    click.echo(f"provenance:  {result.provenance.kind}: {result.provenance.source}")
    r = result.reading
    click.echo(f"recognised:  {r.architecture} ({r.recognised_by}); {r.layout} layout")
    click.echo(f"defaults:    {r.loader}"
               + (": " + ", ".join(f"{k}={json.dumps(v)}" for k, v in r.defaulted.items())
                  + " (absent, filled)" if r.defaulted else ": none needed"))
    if r.wrapper_key:
        others = ", ".join(r.outside_plan) or "nothing"
        click.echo(f"wrapped:     language model in {r.wrapper_key}, tensors under "
                   f"'{r.tensor_prefix}'; outside the plan: {others}")
    if r.quantization_scheme:
        click.echo(f"quantized:   {r.quantization_scheme} (plan shown unquantized; file dtypes "
                   f"from headers)")
    for item in r.leaves_out:
        click.echo(f"leaves out:  {item}")
    for w in r.warnings:
        click.echo(f"warning: {w}", err=True)
    for w in r.inconsistencies:
        click.echo(f"warning: inconsistent: {w} (validate fails; writers refuse)", err=True)
    click.echo("")
    q = "none (q_proj)" if a.q_lora_rank is None else str(a.q_lora_rank)
    rows = [
        ["layers", f"{a.num_hidden_layers} ({a.dense_layers} dense + {a.moe_layers} MoE)"
                   + (f" + {a.mtp_layers} MTP" if a.mtp_layers else "")],
        ["hidden / heads", f"{a.hidden_size} / {a.num_attention_heads}"],
        ["MLA ranks q / kv", f"{q} / {a.kv_lora_rank}"],
        ["experts", f"{a.routed_experts} routed + {a.shared_experts} shared, "
                    f"{a.experts_per_token} per token"],
        ["router", f"{a.router}, groups {a.groups_per_token} of {a.expert_groups}, "
                   f"scale x{a.routed_scaling_factor:g}"],
        ["vocab / context", f"{a.vocab_size} / {a.max_position_embeddings}"],
        ["quantization", a.quantization or "none (BF16)"],
    ]
    click.echo(table(rows, align="ll"))
    click.echo("")
    rows = [
        ["total (main model)", f"{p.main:,}", human_count(p.main)],
        ["activated per token", f"{p.activated:,}", human_count(p.activated)],
        ["MTP modules", f"{p.mtp:,}", human_count(p.mtp)],
        ["checkpoint total", f"{p.checkpoint:,}", human_count(p.checkpoint)],
    ]
    click.echo(table(rows, ["parameters", "count", ""], "lrr"))
    if result.published:
        pub = result.published
        verdict = "agree" if pub.total_agrees and pub.activated_agrees else "DISAGREE"
        click.echo(f"published:   {pub.total} total / {pub.activated} activated ({verdict}); "
                   f"{pub.source}")
    click.echo("")
    for label, t in (("plan", result.plan), ("files", result.files)):
        if t is None:
            continue
        rows = [[d, f"{b:,}", human_bytes(b)] for d, b in sorted(t.bytes_by_dtype.items())]
        rows.append(["total", f"{t.total_bytes:,}", human_bytes(t.total_bytes)])
        click.echo(f"{label}: {t.tensors:,} tensors, {t.layout} layout")
        click.echo(table(rows, ["dtype", "bytes", ""], "lrr"))
        click.echo("")
    if result.sparse_attention is not None:
        _sparse_attention(result.sparse_attention)


def _sparse_attention(d) -> None:
    """V3.2: where the indexer's parameters and bytes sit, and what DSA saves."""
    click.echo(f"DeepSeek Sparse Attention: lightning indexer of {d.index_n_heads} heads x "
               f"{d.index_head_dim}, each query attends to its top {d.index_topk:,} keys")
    rows = [
        ["indexer, one layer", f"{d.indexer_per_layer:,}", human_count(d.indexer_per_layer),
         human_bytes(d.indexer_bytes_per_layer)],
        ["indexer, main model", f"{d.indexer_main:,}", human_count(d.indexer_main), ""],
        ["indexer, MTP layers", f"{d.indexer_mtp:,}", human_count(d.indexer_mtp), ""],
        ["indexer, stored (all layers)", "", "", human_bytes(d.indexer_bytes)],
    ]
    click.echo(table(rows, ["self_attn.indexer.*", "parameters", "", f"bytes ({d.layout})"],
                     "lrrr"))
    click.echo(f"extra KV cache per token: {d.kv_extra_per_token_bf16:,} B as BF16 "
               f"(+{d.kv_extra_over_mla:.0%} over MLA's), {d.kv_extra_per_token_fp8:,} B as "
               f"DeepSeek deploys it (FP8 keys + F32 scales)")
    rows = [[f"{c.context:,}", human_flops(c.dense_mla_flops), human_flops(c.dsa_flops),
             f"{c.dsa_over_dense:.2f}x"] for c in d.flops]
    click.echo(table(rows, ["context", "dense MLA", "DSA", "DSA/dense"], "rrrr"))
    cheaper = (f"DSA is cheaper from {d.crossover_context:,} tokens of context"
               if d.crossover_context else "DSA is never cheaper: its indexer costs more per "
               "key than MLA")
    click.echo(f"attention FLOPs per token; {cheaper}")
    click.echo("")


def human_flops(n: int) -> str:
    return f"{n / 1e9:,.2f} GFLOP"
