"""LongCat-Flash (`longcat_flash`): DeepSeek-V3's MLA and experts in a layer of another shape.

transformers' `modular_longcat_flash.py` builds each decoder layer from two MLA blocks
(`self_attn.0/1`, V3.2's attention without its indexer), two dense MLPs (`mlps.0/1`) and one
MoE (`mlp.*`) that runs beside the layer's second half ("shortcut-connected MoE"). Its router
scores `n_routed_experts + zero_expert_num` slots; a pick of a zero-computation slot returns
the token itself, so those slots have no tensors. The config spells the common fields its
own way (`num_layers`, `ffn_hidden_size`, `expert_ffn_hidden_size`, `moe_topk`): the config
model below reads and writes those names (pydantic aliases, transformers' `attribute_map`).
The release's MTP block sits under `model.mtp.` with one MLA block and a dense MLP
(docs/derived_families.md, with the sources).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Literal

from pydantic import Field, model_serializer, model_validator

from ..configs.defaults import HF_COMMON
from ..configs.models import DeepseekV3Config
from . import deepseek_v3
from .base import Block, Family, Row, derive

LOADER = "transformers LongcatFlashConfig"

# transformers' LongcatFlashConfig (models/longcat_flash/configuration_longcat_flash.py; its
# docstring checkpoint is meituan-longcat/LongCat-Flash-Chat), under its own key names.
CLASS_DEFAULTS: dict[str, Any] = {
    **HF_COMMON,
    "vocab_size": 131072, "hidden_size": 6144, "num_layers": 28, "num_attention_heads": 64,
    "num_key_value_heads": None,
    "ffn_hidden_size": 12288, "expert_ffn_hidden_size": 2048, "n_routed_experts": 512,
    "zero_expert_num": 256, "moe_topk": 12, "routed_scaling_factor": 6.0,
    "q_lora_rank": 1536, "v_head_dim": 128, "rms_norm_eps": 1e-5,
    "max_position_embeddings": 131072, "rope_theta": 10000000.0, "bos_token_id": 1,
    "eos_token_id": 2,
}
# What its modeling code fixes: LongcatFlashTopkRouter scores with a softmax, chooses by
# score + e_score_correction_bias over every slot (no groups), keeps the unbiased scores of the
# picks without renormalising, then scales; no shared expert, every layer has its MoE. The
# release stores one MTP block (model.mtp.), which transformers ignores on load.
IMPLIED: dict[str, Any] = {
    "topk_method": "noaux_tc", "scoring_func": "softmax", "n_group": 1, "topk_group": 1,
    "norm_topk_prob": False, "n_shared_experts": 0, "first_k_dense_replace": 0,
    "moe_layer_freq": 1, "num_nextn_predict_layers": 1,
}


class LongcatFlashConfig(DeepseekV3Config):
    """LongCat-Flash (`model_type: longcat_flash`): read and written under its own key names;
    `num_hidden_layers` here counts decoder layers (`num_layers`, each with two attention
    blocks: transformers' `num_hidden_layers` is twice it)."""

    model_type: Literal["longcat_flash"]  # type: ignore[assignment]
    default_loader: ClassVar[str] = LOADER
    num_hidden_layers: int = Field(gt=0, alias="num_layers",
                                   description="Decoder layers, two attention blocks each")
    intermediate_size: int = Field(gt=0, alias="ffn_hidden_size",
                                   description="Width of each of a layer's two dense MLPs")
    moe_intermediate_size: int = Field(gt=0, alias="expert_ffn_hidden_size",
                                       description="Width of one routed expert")
    num_experts_per_tok: int = Field(gt=0, alias="moe_topk",
                                     description="Slots picked per token (experts or zero)")
    zero_expert_num: int = Field(ge=0, description="Zero-computation (identity) router slots")
    router_bias: bool = Field(False, description="The router's classifier has a bias")

    @property
    def zero_experts(self) -> int:
        return self.zero_expert_num

    @property
    def attention_blocks(self) -> int:
        return 2 * self.num_hidden_layers

    @property
    def latent_scales(self) -> tuple[float, float]:
        # LongcatFlashMLA: q times sqrt(H / q_lora_rank), the normed kv latent times
        # sqrt(H / kv_lora_rank) (the remote code's mla_scale_q_lora / mla_scale_kv_lora)
        return ((self.hidden_size / self.q_lora_rank) ** 0.5,
                (self.hidden_size / self.kv_lora_rank) ** 0.5)

    @property
    def routing_method(self) -> str:
        return "LongcatFlashTopkRouter (softmax, biased choice, zero experts)"

    @property
    def router_kind(self) -> str:
        return (f"softmax over {self.n_routed_experts} experts + {self.zero_expert_num} zero "
                f"(identity) slots, top-{self.num_experts_per_tok} by score + bias, not "
                f"renormalised, x{self.routed_scaling_factor:g} (LongcatFlashTopkRouter)")

    @model_validator(mode="before")
    @classmethod
    def _router_is_fixed_by_the_model(cls, data: Any) -> Any:
        # LongcatFlashTopkRouter reads none of these keys; a file's value would describe
        # another router
        if isinstance(data, dict):
            data = {**data, **{k: IMPLIED[k] for k in ("topk_method", "scoring_func",
                                                        "n_group", "topk_group")}}
        return data

    @model_validator(mode="after")
    def _queries_are_compressed(self):
        if self.q_lora_rank is None:
            raise ValueError("q_lora_rank: LongCat-Flash's attention always compresses its "
                             "queries (q_a_proj, q_b_proj), so it cannot be null")
        return self

    @model_serializer(mode="wrap")
    def _spell_head_dim(self, handler):
        # LongcatFlashRotaryEmbedding rotates `head_dim` dims (default 64, the release's
        # qk_rope_head_dim): written out so a file of other widths rotates the right ones
        data = handler(self)
        data["head_dim"] = self.qk_rope_head_dim
        return data

    def routing_problems(self) -> list[str]:
        out = [p for p in super().routing_problems() if not p.startswith("scoring_func")]
        if self.num_experts_per_tok > self.router_slots:
            out.append(f"moe_topk: {self.num_experts_per_tok} is more than the "
                       f"{self.router_slots} router slots")
        return [p for p in out if not p.startswith("num_experts_per_tok")]


def _slots(c, b: Block) -> tuple[int, ...]:
    return (c.router_slots,)


def _has_router_bias(c, b: Block) -> bool:
    return c.router_bias


_V3 = deepseek_v3.ROWS
_ATTENTION = ("attn_norm", "wq_a", "q_norm", "wq_b", "wkv_a", "kv_norm", "wkv_b", "wo",
              "ffn_norm")
_LEAF = {"attn_norm": "input_layernorm.weight", "ffn_norm": "post_attention_layernorm.weight"}


def _indexed(role: str, hf: str) -> str:
    """A parent row's name with the copy index a LongCat layer puts in it:
    `self_attn.{I}.q_a_proj.weight`, `input_layernorm.{I}.weight`, `mlps.{I}.gate_proj.weight`."""
    if role in _LEAF:  # input_layernorm.{I}.weight
        return _LEAF[role].replace(".weight", ".{I}.weight")
    return hf.replace("self_attn.", "self_attn.{I}.").replace("mlp.", "mlps.{I}.")


def _mtp(row: Row, section: str, hf: str) -> Row:
    """A parent row as the MTP block's (role `mtp.<role>`, under model.mtp.layers.{J}.)."""
    return replace(row, role="mtp." + row.role, section=section, hf="layers.{J}." + hf,
                   mp=None)


# the MTP block as the release stores it (vLLM's longcat_flash_mtp.py reads these names):
# its input (embedding copy, eh_proj, the two norms, `.m.` in their names), one MLA block
# with its norms, a dense MLP under transformer_layer., and its final norm
_MTP_ROWS = (
    replace(next(r for r in _V3 if r.role == "mtp.embed"), hf="embed_tokens.weight", mp=None),
    # unlike V3's, eh_proj carries a block scale in the FP8 release
    replace(next(r for r in _V3 if r.role == "mtp.eh_proj"), hf="layers.{J}.eh_proj.weight",
            fmt="fp8", mp=None),
    replace(next(r for r in _V3 if r.role == "mtp.enorm"), hf="layers.{J}.enorm.m.weight",
            mp=None),
    replace(next(r for r in _V3 if r.role == "mtp.hnorm"), hf="layers.{J}.hnorm.m.weight",
            mp=None),
    *(_mtp(r, "mtp_attention", _LEAF.get(r.role, r.hf)) for r in _V3 if r.role in _ATTENTION),
    *(_mtp(r, "mtp_mlp", "transformer_layer." + r.hf) for r in _V3
      if r.section == "dense_mlp"),
    Row("mtp.norm", "mtp_output", "norm.weight", lambda c, b: (c.hidden_size,), "mtp"),
)

ROWS = derive(
    _V3,
    drop=("wq", "shared.w1", "shared.w3", "shared.w2", "mtp.embed", "mtp.enorm", "mtp.hnorm",
          "mtp.eh_proj", "mtp.norm", "mtp.head"),
    change={
        **{role: {"hf": _indexed(role, r.hf)} for r in _V3 for role in (r.role,)
           if role in _ATTENTION or r.section == "dense_mlp"},
        "gate": {"hf": "mlp.router.classifier.weight",
                 "shape": lambda c, b: (c.router_slots, c.hidden_size),
                 # transformers keeps the classifier in float32 (_keep_in_fp32_modules)
                 "alt_dtypes": ("F32",)},
        "gate_bias": {"hf": "mlp.router.e_score_correction_bias", "shape": _slots},
    },
    add_after={"gate_bias": (Row("gate.bias", "router", "mlp.router.classifier.bias", _slots,
                                 "router", when=_has_router_bias),)},
    add=_MTP_ROWS)

_MTP_SCOPE = {"hf": "model.mtp.", "mp": "mtp.{J}."}
SCOPES = {**deepseek_v3.DEEPSEEK_V3.scopes,
          **{s: _MTP_SCOPE for s in ("mtp_input", "mtp_attention", "mtp_mlp", "mtp_output")}}

LONGCAT_FLASH = Family(
    name="longcat_flash", title="LongCat-Flash", parent="deepseek_v3",
    model_types=("longcat_flash",),
    architectures=("LongcatFlashForCausalLM", "LongcatFlashModel"), rows=ROWS, scopes=SCOPES,
    layouts=("bf16", "fp8"), formats=("bf16", "fp8-block-f32"),
    router=("softmax over routed + zero-computation slots, top-k by score + bias, not "
            "renormalised, scaled"),
    attention="mla", presets=("longcat-flash",),
    # attention 0 + its norms, attention 1 + its norms, the two dense MLPs, then the MoE
    layer_sections=(("attention", 2), ("dense_mlp", 2), ("router", 1), ("routed_expert", 1)),
    mtp_sections=(("mtp_input", 1), ("mtp_attention", 1), ("mtp_mlp", 1), ("mtp_output", 1)),
    hooks={"decoder": "ckpt_tools.reference.shortcut_moe:ShortcutModel"},
    no_mp_layout=("DeepSeek's inference code has one attention block and one feed-forward per "
                  "layer; LongCat-Flash's layer has two attention blocks, two dense MLPs and a "
                  "MoE with zero-computation experts, which its model.py cannot load"),
    config_model=LongcatFlashConfig, loader=LOADER, class_defaults=CLASS_DEFAULTS,
    implied_defaults=IMPLIED)
