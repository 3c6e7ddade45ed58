"""The architecture's modules, one row each: the single table every name table derives from.

A row says, for one tensor family: its role (DeepSeek's short name from `inference/model.py`,
which the reference forward pass uses), where it sits (`Section`), its HF name relative to
its section's scope, its shape as a formula of the config, whether the FP8 layout stores it
as F8_E4M3 with a `weight_scale_inv` (or keeps it in F32 everywhere), and its name and split
rule in DeepSeek's model-parallel layout (`inference/convert.py`). From these rows come
`tensor_plan`'s templates, `reference.weights.ROLES` and `mp_layout.MP_FAMILIES`, in the
spirit of gguf-py's tensor-name tables: a new model family is a new set of rows.

The facts, with their public sources, are in docs/architecture.md. NumPy-free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

from .config import Config

Shape = tuple[int, ...]
Section = Literal["global_first", "attention", "dense_mlp", "router", "routed_expert",
                  "shared_expert", "global_last", "mtp_input", "mtp_output"]
Component = Literal["embedding", "attention", "indexer", "norm", "dense_mlp", "router",
                    "routed_expert", "shared_expert", "lm_head", "mtp",
                    "compressor", "hyper_connection"]  # the last two: DeepSeek-V4's
COLUMN, ROW = 0, 1  # the dim a column-/row-parallel weight ([out, in]) is split on
EXPERT = "expert"  # routed experts go whole to one rank
Rule = int | Literal["expert"] | None  # None: replicated on every rank

LAYER_PREFIX = "model.layers.{L}."
EXPERT_PREFIX = "mlp.experts.{E}."
MP_LAYER_PREFIX = "layers.{L}."
# each section's scope: (HF prefix, DeepSeek model-parallel prefix)
SCOPES: dict[Section, tuple[str, str]] = {
    "global_first": ("", ""), "global_last": ("", ""),
    "routed_expert": (LAYER_PREFIX + EXPERT_PREFIX, MP_LAYER_PREFIX + "ffn.experts.{E}."),
    **{s: (LAYER_PREFIX, MP_LAYER_PREFIX) for s in ("attention", "dense_mlp", "router",
                                                    "shared_expert", "mtp_input",
                                                    "mtp_output")},
}


def _always(c: Config) -> bool:
    return True


class Module(NamedTuple):
    role: str
    section: Section
    hf: str  # HF name relative to the section's scope
    shape: Callable[[Config], Shape]
    component: Component
    mp: str  # DeepSeek's model-parallel name relative to the section's scope
    split: Rule = None
    fp8: bool = False  # F8_E4M3 + weight_scale_inv in the FP8 layout
    f32: bool = False  # float32 in every layout
    when: Callable[[Config], bool] = _always
    # also a legitimate stored dtype (another writer's choice); a checkpoint's plan adopts
    # it through `TensorPlan(stored_dtypes=...)`
    alt_dtypes: tuple[str, ...] = ()

    @property
    def hf_template(self) -> str:
        return SCOPES[self.section][0] + self.hf

    @property
    def mp_template(self) -> str:
        return SCOPES[self.section][1] + self.mp


def _qh(c: Config) -> int:
    return c.num_attention_heads * c.qk_head_dim


def _has_q_lora(c: Config) -> bool:
    return c.q_lora_rank is not None


def _no_q_lora(c: Config) -> bool:
    return c.q_lora_rank is None


def _shared_width(c: Config) -> int:
    return c.n_shared_experts * c.moe_intermediate_size


def _has_shared(c: Config) -> bool:
    return c.n_shared_experts > 0


def _has_score_bias(c: Config) -> bool:
    return c.has_score_bias


def _has_indexer(c: Config) -> bool:
    return c.has_indexer


_M = Module
# DeepSeek-V2/V3 (and R1, V3.1: the same tensors; V3.2 adds the indexer rows). Order within a section is the plan's.
DEEPSEEK_V3: tuple[Module, ...] = (
    _M("embed", "global_first", "model.embed_tokens.weight",  # ParallelEmbedding: vocab rows
       lambda c: (c.vocab_size, c.hidden_size), "embedding", "embed.weight", COLUMN),
    # attention, every layer
    _M("attn_norm", "attention", "input_layernorm.weight", lambda c: (c.hidden_size,), "norm",
       "attn_norm.weight"),
    _M("wq", "attention", "self_attn.q_proj.weight", lambda c: (_qh(c), c.hidden_size),
       "attention", "attn.wq.weight", COLUMN, fp8=True, when=_no_q_lora),
    _M("wq_a", "attention", "self_attn.q_a_proj.weight", lambda c: (c.q_lora_rank, c.hidden_size),
       "attention", "attn.wq_a.weight", fp8=True, when=_has_q_lora),
    _M("q_norm", "attention", "self_attn.q_a_layernorm.weight", lambda c: (c.q_lora_rank,),
       "attention", "attn.q_norm.weight", when=_has_q_lora),
    _M("wq_b", "attention", "self_attn.q_b_proj.weight", lambda c: (_qh(c), c.q_lora_rank),
       "attention", "attn.wq_b.weight", COLUMN, fp8=True, when=_has_q_lora),
    _M("wkv_a", "attention", "self_attn.kv_a_proj_with_mqa.weight",
       lambda c: (c.kv_lora_rank + c.qk_rope_head_dim, c.hidden_size), "attention",
       "attn.wkv_a.weight", fp8=True),
    _M("kv_norm", "attention", "self_attn.kv_a_layernorm.weight", lambda c: (c.kv_lora_rank,),
       "attention", "attn.kv_norm.weight"),
    _M("wkv_b", "attention", "self_attn.kv_b_proj.weight",
       lambda c: (c.num_attention_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank),
       "attention", "attn.wkv_b.weight", COLUMN, fp8=True),
    _M("wo", "attention", "self_attn.o_proj.weight",
       lambda c: (c.hidden_size, c.num_attention_heads * c.v_head_dim), "attention",
       "attn.wo.weight", ROW, fp8=True),
    # V3.2's lightning indexer: queries from MLA's compressed q, one shared key per token;
    # DeepSeek's convert.py replicates it whole on every rank. Its release stores k_norm
    # (a LayerNorm) in F32 and weights_proj in BF16; transformers keeps weights_proj in F32.
    _M("indexer.wq_b", "attention", "self_attn.indexer.wq_b.weight",
       lambda c: (c.index_n_heads * c.index_head_dim, c.q_lora_rank), "indexer",
       "attn.indexer.wq_b.weight", fp8=True, when=_has_indexer),
    _M("indexer.wk", "attention", "self_attn.indexer.wk.weight",
       lambda c: (c.index_head_dim, c.hidden_size), "indexer", "attn.indexer.wk.weight",
       fp8=True, when=_has_indexer),
    _M("indexer.k_norm", "attention", "self_attn.indexer.k_norm.weight",
       lambda c: (c.index_head_dim,), "indexer", "attn.indexer.k_norm.weight", f32=True,
       when=_has_indexer, alt_dtypes=("BF16",)),
    _M("indexer.k_norm_bias", "attention", "self_attn.indexer.k_norm.bias",
       lambda c: (c.index_head_dim,), "indexer", "attn.indexer.k_norm.bias", f32=True,
       when=_has_indexer, alt_dtypes=("BF16",)),
    _M("indexer.weights_proj", "attention", "self_attn.indexer.weights_proj.weight",
       lambda c: (c.index_n_heads, c.hidden_size), "indexer", "attn.indexer.weights_proj.weight",
       when=_has_indexer, alt_dtypes=("F32",)),
    _M("ffn_norm", "attention", "post_attention_layernorm.weight", lambda c: (c.hidden_size,),
       "norm", "ffn_norm.weight"),
    # dense MLP (w1 = gate_proj, w3 = up_proj, w2 = down_proj)
    _M("mlp.w1", "dense_mlp", "mlp.gate_proj.weight",
       lambda c: (c.intermediate_size, c.hidden_size), "dense_mlp", "ffn.w1.weight", COLUMN,
       fp8=True),
    _M("mlp.w3", "dense_mlp", "mlp.up_proj.weight",
       lambda c: (c.intermediate_size, c.hidden_size), "dense_mlp", "ffn.w3.weight", COLUMN,
       fp8=True),
    _M("mlp.w2", "dense_mlp", "mlp.down_proj.weight",
       lambda c: (c.hidden_size, c.intermediate_size), "dense_mlp", "ffn.w2.weight", ROW,
       fp8=True),
    # MoE router; the aux-loss-free bias is F32 in every layout (DeepSeek's Gate.bias)
    _M("gate", "router", "mlp.gate.weight", lambda c: (c.n_routed_experts, c.hidden_size),
       "router", "ffn.gate.weight"),
    _M("gate_bias", "router", "mlp.gate.e_score_correction_bias",
       lambda c: (c.n_routed_experts,), "router", "ffn.gate.bias", f32=True,
       when=_has_score_bias),
    # one routed expert
    _M("expert.w1", "routed_expert", "gate_proj.weight",
       lambda c: (c.moe_intermediate_size, c.hidden_size), "routed_expert", "w1.weight", EXPERT,
       fp8=True),
    _M("expert.w3", "routed_expert", "up_proj.weight",
       lambda c: (c.moe_intermediate_size, c.hidden_size), "routed_expert", "w3.weight", EXPERT,
       fp8=True),
    _M("expert.w2", "routed_expert", "down_proj.weight",
       lambda c: (c.hidden_size, c.moe_intermediate_size), "routed_expert", "w2.weight", EXPERT,
       fp8=True),
    _M("shared.w1", "shared_expert", "mlp.shared_experts.gate_proj.weight",
       lambda c: (_shared_width(c), c.hidden_size), "shared_expert",
       "ffn.shared_experts.w1.weight", COLUMN, fp8=True, when=_has_shared),
    _M("shared.w3", "shared_expert", "mlp.shared_experts.up_proj.weight",
       lambda c: (_shared_width(c), c.hidden_size), "shared_expert",
       "ffn.shared_experts.w3.weight", COLUMN, fp8=True, when=_has_shared),
    _M("shared.w2", "shared_expert", "mlp.shared_experts.down_proj.weight",
       lambda c: (c.hidden_size, _shared_width(c)), "shared_expert",
       "ffn.shared_experts.w2.weight", ROW, fp8=True, when=_has_shared),
    _M("norm", "global_last", "model.norm.weight", lambda c: (c.hidden_size,), "norm",
       "norm.weight"),
    _M("head", "global_last", "lm_head.weight", lambda c: (c.vocab_size, c.hidden_size),
       "lm_head", "head.weight", COLUMN),  # ColumnParallelLinear(dim, vocab)
    # The MTP module's own tensors, around a full MoE decoder layer. DeepSeek's demo model
    # has no MTP module: these model-parallel names are ours (kept only on request).
    _M("mtp.embed", "mtp_input", "embed_tokens.weight", lambda c: (c.vocab_size, c.hidden_size),
       "mtp", "embed.weight", COLUMN),
    _M("mtp.enorm", "mtp_input", "enorm.weight", lambda c: (c.hidden_size,), "mtp",
       "enorm.weight"),
    _M("mtp.hnorm", "mtp_input", "hnorm.weight", lambda c: (c.hidden_size,), "mtp",
       "hnorm.weight"),
    _M("mtp.eh_proj", "mtp_input", "eh_proj.weight", lambda c: (c.hidden_size, 2 * c.hidden_size),
       "mtp", "eh_proj.weight"),  # BF16 in V3's FP8 release
    _M("mtp.norm", "mtp_output", "shared_head.norm.weight", lambda c: (c.hidden_size,), "mtp",
       "shared_head.norm.weight"),
    _M("mtp.head", "mtp_output", "shared_head.head.weight", lambda c: (c.vocab_size, c.hidden_size),
       "mtp", "shared_head.head.weight", COLUMN),
)

# Every row of every family; the derived tables are built from this.
MODULES: tuple[Module, ...] = DEEPSEEK_V3


def section(name: Section) -> tuple[Module, ...]:
    return tuple(m for m in MODULES if m.section == name)


def roles() -> dict[str, str]:
    """role -> HF name template ({L} = layer, {E} = routed expert)."""
    return {m.role: m.hf_template for m in MODULES}
