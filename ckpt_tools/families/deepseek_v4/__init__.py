"""DeepSeek-V4 (Flash, Pro): the one table of its tensors, in every layout it has.

Names (docs/deepseek_v4.md, "Tensors"): the Hub stores DeepSeek's own (`native`: no
`model.` prefix, `layers.N.attn.*`, `layers.N.ffn.*`, hyper-connections `hc_*`, the MTP
block under `mtp.J.`); transformers' `DeepseekV4ForCausalLM` loads them under its names
(`hf`, the correspondence of its `conversion_mapping.py`, "deepseek_v4"), with the routed
experts of a layer stacked into `mlp.experts.gate_up_proj` [E, 2I, D] (gate rows first) and
`mlp.experts.down_proj` [E, D, I]; MTP has no transformers module and keeps DeepSeek's
names. DeepSeek's model-parallel files (its V4 `inference/convert.py`) keep the native
names and split on `split` (`wo_a` dequantised to BF16 first, `mp_dequantized`).

Number formats: dense linears `fp8` (F8_E4M3, one E8M0 scale per 128x128 block, at
`x.scale`), routed experts `expert` (MXFP4: I8 [out, in/2] with one E8M0 per 32 inputs, or
FP8 blocks after `--expert-dtype fp8`), the rest kept in BF16 / F32 / I64 (`tid2eid`).

This package's other modules are the hooks the entry names (imported on first use, never by
the registry): `tensor_plan` (the planner over these rows), `checks` (what validate adds:
E8M0 / MXFP4 pairing, hash tables, rank files), `tiny`, `convert` (upcast / quantize of its
formats), `mp_layout` + `mp` (DeepSeek's V4 model-parallel files) and `diff`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

from ...configs.v4 import DeepseekV4Config, parse_v4
from ...formats import MP_SCALE_SUFFIX as SCALE_SUFFIX  # "x.weight" -> "x.scale"
from ...formats import mp_scale_name as scale_name  # noqa: F401  (the family's naming)
from ..base import EXPERT, HF_LAYER_PREFIX, Block, Family, Row, stacked_expert_rows

CSA_RATIO = 4  # compressed sparse attention: overlapping windows, plus an indexer


def _row(role: str, section: str, native: str, hf: str | None, shape, component: str,
         kind: str = "bf16", split=None, when=None, mp_dequantized: bool = False) -> Row:
    """A V4 row: `kind` is its format ("fp8", "expert") or the dtype it keeps ("bf16",
    "f32", "i64"); the model-parallel files keep the native name."""
    fmt = kind if kind in ("fp8", "expert") else "none"
    keep = {"f32": "F32", "i64": "I64"}.get(kind, "BF16")
    return Row(role, section, hf, shape, component, mp=native, split=split, fmt=fmt, keep=keep,
               native=native, **({"when": when} if when else {}),
               **({"mp_dequantized": True} if mp_dequantized else {}))


def _coff(ratio: int) -> int:
    """Compressor output copies: CSA compresses overlapping windows (2 x), HCA does not."""
    return 2 if ratio == CSA_RATIO else 1


def _compressed(c, b: Block) -> bool:
    return b.ratio > 0


def _csa(c, b: Block) -> bool:
    return b.ratio == CSA_RATIO


def _compressor(role: str, native: str, hf: str, width: Callable, component: str,
                when) -> tuple[Row, ...]:
    """A compressor of `width` outputs (head_dim, or index_head_dim for the indexer's)."""
    def rows(c, b: Block) -> int:
        return _coff(b.ratio) * width(c)
    return (
        _row(role + "ape", "block", native + "ape", hf + "position_bias",
             lambda c, b: (b.ratio, rows(c, b)), component, "f32", when=when),
        _row(role + "wkv", "block", native + "wkv.weight", hf + "kv_proj.weight",
             lambda c, b: (rows(c, b), c.hidden_size), component, when=when),
        _row(role + "wgate", "block", native + "wgate.weight", hf + "gate_proj.weight",
             lambda c, b: (rows(c, b), c.hidden_size), component, when=when),
        _row(role + "norm", "block", native + "norm.weight", hf + "kv_norm.weight",
             lambda c, b: (width(c),), component, when=when),
    )


def _hc(where: str, hf: str) -> tuple[Row, ...]:
    """A block's hyper-connection mixing of `where` ("attn" / "ffn")."""
    return (
        _row(f"hc_{where}_fn", "block", f"hc_{where}_fn", f"{hf}.fn",
             lambda c, b: (c.hc_fn_rows, c.hc_mult * c.hidden_size), "hyper_connection", "f32"),
        _row(f"hc_{where}_base", "block", f"hc_{where}_base", f"{hf}.base",
             lambda c, b: (c.hc_fn_rows,), "hyper_connection", "f32"),
        _row(f"hc_{where}_scale", "block", f"hc_{where}_scale", f"{hf}.scale",
             lambda c, b: (3,), "hyper_connection", "f32"),
    )


def _qo(c) -> int:
    return c.num_attention_heads * c.head_dim


_I = "compressor.indexer."  # transformers keeps the indexer inside the compressor module
BLOCK_ROWS = (
    *_hc("attn", "attn_hc"),
    _row("attn_norm", "block", "attn_norm.weight", "input_layernorm.weight",
         lambda c, b: (c.hidden_size,), "norm"),
    _row("attn_sink", "block", "attn.attn_sink", "self_attn.sinks",
         lambda c, b: (c.num_attention_heads,), "attention", "f32", split=0),
    _row("wq_a", "block", "attn.wq_a.weight", "self_attn.q_a_proj.weight",
         lambda c, b: (c.q_lora_rank, c.hidden_size), "attention", "fp8"),
    _row("q_norm", "block", "attn.q_norm.weight", "self_attn.q_a_norm.weight",
         lambda c, b: (c.q_lora_rank,), "attention"),
    _row("wq_b", "block", "attn.wq_b.weight", "self_attn.q_b_proj.weight",
         lambda c, b: (_qo(c), c.q_lora_rank), "attention", "fp8", split=0),
    _row("wkv", "block", "attn.wkv.weight", "self_attn.kv_proj.weight",
         lambda c, b: (c.head_dim, c.hidden_size), "attention", "fp8"),
    _row("kv_norm", "block", "attn.kv_norm.weight", "self_attn.kv_norm.weight",
         lambda c, b: (c.head_dim,), "attention"),
    _row("wo_a", "block", "attn.wo_a.weight", "self_attn.o_a_proj.weight",
         lambda c, b: (c.o_groups * c.o_lora_rank, _qo(c) // c.o_groups), "attention", "fp8",
         split=0, mp_dequantized=True),
    _row("wo_b", "block", "attn.wo_b.weight", "self_attn.o_b_proj.weight",
         lambda c, b: (c.hidden_size, c.o_groups * c.o_lora_rank), "attention", "fp8", split=1),
    *_compressor("compressor.", "attn.compressor.", "self_attn.compressor.",
                 lambda c: c.head_dim, "compressor", _compressed),
    _row("indexer.wq_b", "block", "attn.indexer.wq_b.weight", f"self_attn.{_I}q_b_proj.weight",
         lambda c, b: (c.index_n_heads * c.index_head_dim, c.q_lora_rank), "indexer", "fp8",
         split=0, when=_csa),
    _row("indexer.weights_proj", "block", "attn.indexer.weights_proj.weight",
         f"self_attn.{_I}scorer.weights_proj.weight",
         lambda c, b: (c.index_n_heads, c.hidden_size), "indexer", split=0, when=_csa),
    *_compressor("indexer.compressor.", "attn.indexer.compressor.", f"self_attn.{_I}",
                 lambda c: c.index_head_dim, "indexer", _csa),
    *_hc("ffn", "ffn_hc"),
    _row("ffn_norm", "block", "ffn_norm.weight", "post_attention_layernorm.weight",
         lambda c, b: (c.hidden_size,), "norm"),
    _row("gate", "block", "ffn.gate.weight", "mlp.gate.weight",
         lambda c, b: (c.n_routed_experts, c.hidden_size), "router"),
    TID2EID := _row("gate.tid2eid", "block", "ffn.gate.tid2eid", "mlp.gate.tid2eid",
                    lambda c, b: (c.vocab_size, c.num_experts_per_tok), "router", "i64",
                    when=lambda c, b: b.hashed),
    _row("gate.bias", "block", "ffn.gate.bias", "mlp.gate.e_score_correction_bias",
         lambda c, b: (c.n_routed_experts,), "router", "f32", when=lambda c, b: not b.hashed),
)
# one routed expert (scope "ffn.experts.{E}."); transformers stacks them (STACKED_ROWS)
ROUTED_EXPERT_ROWS = tuple(
    _row(f"expert.{w}", "routed_expert", f"{w}.weight", None, shape, "routed_expert", "expert",
         split=EXPERT)
    for w, shape in (("w1", lambda c, b: (c.moe_intermediate_size, c.hidden_size)),
                     ("w2", lambda c, b: (c.hidden_size, c.moe_intermediate_size)),
                     ("w3", lambda c, b: (c.moe_intermediate_size, c.hidden_size))))
STACKED_ROWS = stacked_expert_rows("stacked_expert")  # transformers' layout only
SHARED_EXPERT_ROWS = tuple(
    _row(f"shared.{r.role.removeprefix('expert.')}", "shared_expert",
         f"ffn.shared_experts.{r.native}", f"mlp.shared_experts.{proj}.weight", r.shape,
         "shared_expert", "fp8")
    for r, proj in zip(ROUTED_EXPERT_ROWS, ("gate_proj", "down_proj", "up_proj")))
HC_HEAD_ROWS = (
    _row("hc_head_fn", "global_last", "hc_head_fn", "model.hc_head.hc_fn",
         lambda c, b: (c.hc_mult, c.hc_mult * c.hidden_size), "hyper_connection", "f32"),
    _row("hc_head_base", "global_last", "hc_head_base", "model.hc_head.hc_base",
         lambda c, b: (c.hc_mult,), "hyper_connection", "f32"),
    _row("hc_head_scale", "global_last", "hc_head_scale", "model.hc_head.hc_scale",
         lambda c, b: (1,), "hyper_connection", "f32"),
)
EMBED = _row("embed", "global_first", "embed.weight", "model.embed_tokens.weight",
             lambda c, b: (c.vocab_size, c.hidden_size), "embedding", split=0)
FINAL_NORM = _row("norm", "global_last", "norm.weight", "model.norm.weight",
                  lambda c, b: (c.hidden_size,), "norm")
LM_HEAD = _row("head", "global_last", "head.weight", "lm_head.weight",
               lambda c, b: (c.vocab_size, c.hidden_size), "lm_head", split=0)
FINAL_ROWS = (FINAL_NORM, LM_HEAD, *HC_HEAD_ROWS)
MTP_INPUT_ROWS = (
    _row("mtp.e_proj", "mtp_input", "e_proj.weight", None,
         lambda c, b: (c.hidden_size, c.hidden_size), "mtp", "fp8"),
    _row("mtp.h_proj", "mtp_input", "h_proj.weight", None,
         lambda c, b: (c.hidden_size, c.hidden_size), "mtp", "fp8"),
    _row("mtp.enorm", "mtp_input", "enorm.weight", None, lambda c, b: (c.hidden_size,), "mtp"),
    _row("mtp.hnorm", "mtp_input", "hnorm.weight", None, lambda c, b: (c.hidden_size,), "mtp"),
)
# the MTP block's own final norm and hyper-connection head, under its prefix, no hf name
MTP_OUTPUT_ROWS = tuple(replace(r, role="mtp." + r.role, section="mtp_output", hf=None)
                        for r in (FINAL_NORM, *HC_HEAD_ROWS))

ROWS = (EMBED, *BLOCK_ROWS, *ROUTED_EXPERT_ROWS, *STACKED_ROWS, *SHARED_EXPERT_ROWS,
        *FINAL_ROWS, *MTP_INPUT_ROWS, *MTP_OUTPUT_ROWS)

LAYER_PREFIX = "layers.{L}."
MTP_PREFIX = "mtp.{J}."
EXPERT_PREFIX = "ffn.experts.{E}."
SCOPES = {
    "global_first": {"native": "", "mp": "", "hf": ""},
    "global_last": {"native": "", "mp": "", "hf": ""},
    "block": {"native": LAYER_PREFIX, "mp": LAYER_PREFIX, "hf": HF_LAYER_PREFIX},
    "shared_expert": {"native": LAYER_PREFIX, "mp": LAYER_PREFIX, "hf": HF_LAYER_PREFIX},
    "routed_expert": {"native": LAYER_PREFIX + EXPERT_PREFIX, "mp": LAYER_PREFIX + EXPERT_PREFIX,
                      "hf": HF_LAYER_PREFIX},
    "stacked_expert": {"native": LAYER_PREFIX, "mp": LAYER_PREFIX, "hf": HF_LAYER_PREFIX},
    "mtp_input": {"native": MTP_PREFIX, "mp": MTP_PREFIX, "hf": MTP_PREFIX},
    "mtp_output": {"native": MTP_PREFIX, "mp": MTP_PREFIX, "hf": MTP_PREFIX},
}


_BY_ROLE = {r.role: r for r in ROWS}


def native_name(role: str, block: str = "", expert: int | None = None) -> str:
    """DeepSeek's (Hub) name of row `role` in the block whose prefix is `block` ("layers.3.",
    "mtp.0."; global rows have none), of routed expert `expert`: the reference decoder
    reads its weights by these."""
    row = _BY_ROLE[role]
    scope = SCOPES[row.section]["native"].replace(LAYER_PREFIX, block).replace(MTP_PREFIX, block)
    return scope.replace("{E}", str(expert)) + row.native


def weight_name(scale: str) -> str:
    return scale.removesuffix(SCALE_SUFFIX) + ".weight"


# -- names: one lookup from the rows, no renames by substring -------------------------------
_BLOCK = re.compile(r"(layers|mtp)\.(\d+)\.(.+)")
_BY_NATIVE = {r.native: r for r in ROWS if r.section in ("block", "shared_expert")}
_GLOBAL = {r.native: r for r in (EMBED, *FINAL_ROWS)}
_EXPERT = re.compile(r"ffn\.experts\.(\d+)\.(w[123])\.weight")


def row_of(name: str) -> Row | None:
    """The row a native (Hub / model-parallel) tensor name belongs to, scales included."""
    if name.endswith(SCALE_SUFFIX):
        name = weight_name(name)
    if name in _GLOBAL:
        return _GLOBAL[name]
    m = _BLOCK.fullmatch(name)
    if m is None:
        return None
    rest = m[3]
    if _EXPERT.fullmatch(rest):
        return ROUTED_EXPERT_ROWS[0]
    if m[1] == "mtp":
        for r in (*MTP_INPUT_ROWS, *MTP_OUTPUT_ROWS):
            if r.native == rest:
                return r
    return _BY_NATIVE.get(rest)


def hf_name(name: str) -> str | None:
    """transformers' name of a non-expert Hub tensor; None for MTP, routed experts and
    names V4 does not have."""
    if name in _GLOBAL:
        return _GLOBAL[name].hf
    m = _BLOCK.fullmatch(name)
    if m is None or m[1] != "layers":
        return None
    row = _BY_NATIVE.get(m[3])
    return None if row is None or row.hf is None else HF_LAYER_PREFIX.format(L=m[2]) + row.hf


def expert_of(name: str) -> tuple[int, int, str] | None:
    """(layer, expert, "w1" | "w2" | "w3") of a main-model routed-expert weight."""
    m = _BLOCK.fullmatch(name)
    if m is None or m[1] != "layers":
        return None
    e = _EXPERT.fullmatch(m[3])
    return (int(m[2]), int(e[1]), e[2]) if e else None


def stacked_names(layer: int) -> tuple[str, str]:
    """transformers' stacked expert tensors of a layer: (gate_up, down)."""
    gate_up, down = (HF_LAYER_PREFIX.format(L=layer) + r.hf for r in STACKED_ROWS)
    return gate_up, down


# -- recognising a checkpoint from its tensors, when no config says ---------------------------
SCALE_DTYPE = "F8_E8M0"


def looks_like(entries) -> bool:
    """DeepSeek-V4 tensors: E8M0 `.scale` tensors or V4's global names."""
    return EMBED.native in entries or "hc_head_fn" in entries or any(
        e.dtype == SCALE_DTYPE and n.endswith(SCALE_SUFFIX) for n, e in entries.items())


DEEPSEEK_V4 = Family(
    name="deepseek_v4", title="DeepSeek-V4", model_types=("deepseek_v4",),
    architectures=("DeepseekV4ForCausalLM", "DeepseekV4Model"), rows=ROWS, scopes=SCOPES,
    layouts=("bf16", "fp8", "hf"), formats=("bf16", "fp8-block-e8m0", "mxfp4-e8m0"),
    router="sqrt-softplus top-k with bias; hash routing (tid2eid) in the first layers",
    attention="v4 (sliding window + compressed sparse / heavily compressed, indexer)",
    presets=("v4-flash", "v4-pro"), scale_suffix=SCALE_SUFFIX, scale_dtype=SCALE_DTYPE,
    hidden_streams="hc_mult", config_model=DeepseekV4Config, config_parser=parse_v4,
    hooks={
        "plan": "ckpt_tools.families.deepseek_v4.tensor_plan:V4TensorPlan",
        "looks_like": "ckpt_tools.families.deepseek_v4:looks_like",
        "checkpoint_plan": "ckpt_tools.families.deepseek_v4.checks:checkpoint_plan",
        "check": "ckpt_tools.families.deepseek_v4.checks:check_v4",
        "check_mp": "ckpt_tools.families.deepseek_v4.checks:check_mp_v4",
        "scale_byte_limits": "ckpt_tools.families.deepseek_v4.checks:scale_byte_limits",
        "upcast": "ckpt_tools.families.deepseek_v4.convert:upcast_v4",
        "quantize": "ckpt_tools.families.deepseek_v4.convert:quantize_v4",
        "to_mp": "ckpt_tools.families.deepseek_v4.mp:to_deepseek_mp_v4",
        "from_mp": "ckpt_tools.families.deepseek_v4.mp:from_deepseek_mp_v4",
        "diff": "ckpt_tools.families.deepseek_v4.diff:compare",
        "tiny_config": "ckpt_tools.families.deepseek_v4.tiny:tiny_v4_config",
        "make_tiny": "ckpt_tools.families.deepseek_v4.tiny:make_tiny_v4",
        "summary": "ckpt_tools.commands.info:multi_stream_summary",
        "decoder": "ckpt_tools.reference.deepseek_v4:decoder",
        "reference_source": "ckpt_tools.reference.v4_checkpoint:open_source",
    },
    report_schemas={
        "upcast_v4_report": "ckpt_tools.families.deepseek_v4.convert:V4UpcastReport",
        "quantize_v4_report": "ckpt_tools.families.deepseek_v4.convert:V4QuantizeReport",
    })
