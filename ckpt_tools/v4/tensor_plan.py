"""The tensor plan of DeepSeek-V4: every tensor of the Hub layout, with shape and dtype.

Names are DeepSeek's own (no `model.` prefix): `embed`, `head`, `layers.N.attn.*`,
`layers.N.ffn.*`, hyper-connection tensors `hc_*`, and the MTP block `mtp.J.*`. A
quantized weight `x.weight` has its scale at `x.scale` (F8_E8M0, a power of two per byte).

Dtype policy of the release (docs/deepseek_v4.md, "Tensors"):
- dense linears (attention projections, indexer `wq_b`, shared experts, MTP `e_proj` /
  `h_proj`): F8_E4M3 with one E8M0 scale per 128x128 block;
- routed experts: MXFP4, I8 [out, in/2] (two e2m1 codes per byte) with one E8M0 scale per
  32 inputs [out, in/32]; or FP8 128-blocks after DeepSeek's `--expert-dtype fp8` re-pack;
- compressor and indexer projections, embed, head, norms, router gate: BF16 (no scale);
- hyper-connection weights, `attn_sink`, compressor `ape`, router `bias`: F32;
- the hash router table `tid2eid`: I64 [vocab, top-k].
The "bf16" layout (what `ckpt upcast --layout deepseek` writes) keeps the names, drops the
scales and stores every quantized weight as BF16.

Parameters follow DeepSeek's counting: a packed FP4 byte is two parameters, scales and the
integer `tid2eid` table are not parameters; "activated" excludes the input embedding.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from ..tensor_plan import Group, ParameterCounts, Shape, TensorPlan, scale_shape
from .config import CSA_RATIO, FP4_BLOCK, FP8_BLOCK, DeepseekV4Config, ExpertDtype

V4_SCALE_SUFFIX = ".scale"  # "x.weight" -> "x.scale"
Kind = Literal["fp8", "expert", "bf16", "f32", "i64"]
C = DeepseekV4Config


@dataclass(frozen=True)
class V4Template:
    """One tensor family of a V4 block; `when(config, ratio, hashed)` selects it."""

    pattern: str
    shape: Callable[[C], Shape]
    component: str
    kind: Kind = "bf16"
    when: Callable[[C, int, bool], bool] = lambda c, r, h: True


def _coff(ratio: int) -> int:
    """Compressor output copies: CSA compresses overlapping windows (2 x), HCA does not."""
    return 2 if ratio == CSA_RATIO else 1


@dataclass(frozen=True)
class _RatioTemplate:
    """A template whose shape depends on the block's compress ratio too."""

    pattern: str
    shape2: Callable[[C, int], Shape]
    component: str
    kind: Kind
    when: Callable[[C, int, bool], bool]


def _compressor(prefix: str, width: Callable[[C], int], component: str,
                when: Callable[[C, int, bool], bool], ratio_of: Callable[[int], int]):
    """A compressor of `width` outputs (head_dim, or index_head_dim for the indexer's)."""
    def rows(c: C, r: int) -> int:
        return _coff(ratio_of(r)) * width(c)
    return (
        _RatioTemplate(prefix + "ape", lambda c, r: (ratio_of(r), rows(c, r)), component, "f32", when),
        _RatioTemplate(prefix + "wkv.weight", lambda c, r: (rows(c, r), c.hidden_size), component,
                       "bf16", when),
        _RatioTemplate(prefix + "wgate.weight", lambda c, r: (rows(c, r), c.hidden_size), component,
                       "bf16", when),
        _RatioTemplate(prefix + "norm.weight", lambda c, r: (width(c),), component, "bf16", when),
    )


def _hd(c: C) -> int:
    return c.head_dim


_compressed = lambda c, r, h: r > 0
_csa = lambda c, r, h: r == CSA_RATIO

BLOCK = (
    V4Template("hc_attn_fn", lambda c: (c.hc_fn_rows, c.hc_mult * c.hidden_size), "hyper_connection", "f32"),
    V4Template("hc_attn_base", lambda c: (c.hc_fn_rows,), "hyper_connection", "f32"),
    V4Template("hc_attn_scale", lambda c: (3,), "hyper_connection", "f32"),
    V4Template("attn_norm.weight", lambda c: (c.hidden_size,), "norm"),
    V4Template("attn.attn_sink", lambda c: (c.num_attention_heads,), "attention", "f32"),
    V4Template("attn.wq_a.weight", lambda c: (c.q_lora_rank, c.hidden_size), "attention", "fp8"),
    V4Template("attn.q_norm.weight", lambda c: (c.q_lora_rank,), "attention"),
    V4Template("attn.wq_b.weight", lambda c: (c.num_attention_heads * c.head_dim, c.q_lora_rank),
               "attention", "fp8"),
    V4Template("attn.wkv.weight", lambda c: (c.head_dim, c.hidden_size), "attention", "fp8"),
    V4Template("attn.kv_norm.weight", lambda c: (c.head_dim,), "attention"),
    V4Template("attn.wo_a.weight", lambda c: (c.o_groups * c.o_lora_rank,
                                              c.num_attention_heads * c.head_dim // c.o_groups),
               "attention", "fp8"),
    V4Template("attn.wo_b.weight", lambda c: (c.hidden_size, c.o_groups * c.o_lora_rank),
               "attention", "fp8"),
    *_compressor("attn.compressor.", _hd, "compressor", _compressed, lambda r: r),
    V4Template("attn.indexer.wq_b.weight", lambda c: (c.index_n_heads * c.index_head_dim, c.q_lora_rank),
               "indexer", "fp8", _csa),
    V4Template("attn.indexer.weights_proj.weight", lambda c: (c.index_n_heads, c.hidden_size),
               "indexer", "bf16", _csa),
    *_compressor("attn.indexer.compressor.", lambda c: c.index_head_dim, "indexer", _csa,
                 lambda r: r),
    V4Template("hc_ffn_fn", lambda c: (c.hc_fn_rows, c.hc_mult * c.hidden_size), "hyper_connection", "f32"),
    V4Template("hc_ffn_base", lambda c: (c.hc_fn_rows,), "hyper_connection", "f32"),
    V4Template("hc_ffn_scale", lambda c: (3,), "hyper_connection", "f32"),
    V4Template("ffn_norm.weight", lambda c: (c.hidden_size,), "norm"),
    V4Template("ffn.gate.weight", lambda c: (c.n_routed_experts, c.hidden_size), "router"),
    V4Template("ffn.gate.tid2eid", lambda c: (c.vocab_size, c.num_experts_per_tok), "router", "i64",
               lambda c, r, h: h),
    V4Template("ffn.gate.bias", lambda c: (c.n_routed_experts,), "router", "f32", lambda c, r, h: not h),
)
# one routed expert; the scope adds "ffn.experts.{E}."
ROUTED_EXPERT = (
    V4Template("w1.weight", lambda c: (c.moe_intermediate_size, c.hidden_size), "routed_expert", "expert"),
    V4Template("w2.weight", lambda c: (c.hidden_size, c.moe_intermediate_size), "routed_expert", "expert"),
    V4Template("w3.weight", lambda c: (c.moe_intermediate_size, c.hidden_size), "routed_expert", "expert"),
)
SHARED_EXPERT = (
    V4Template("ffn.shared_experts.w1.weight", lambda c: (c.moe_intermediate_size, c.hidden_size),
               "shared_expert", "fp8"),
    V4Template("ffn.shared_experts.w2.weight", lambda c: (c.hidden_size, c.moe_intermediate_size),
               "shared_expert", "fp8"),
    V4Template("ffn.shared_experts.w3.weight", lambda c: (c.moe_intermediate_size, c.hidden_size),
               "shared_expert", "fp8"),
)
HC_HEAD = (
    V4Template("hc_head_fn", lambda c: (c.hc_mult, c.hc_mult * c.hidden_size), "hyper_connection", "f32"),
    V4Template("hc_head_base", lambda c: (c.hc_mult,), "hyper_connection", "f32"),
    V4Template("hc_head_scale", lambda c: (1,), "hyper_connection", "f32"),
)
EMBED = V4Template("embed.weight", lambda c: (c.vocab_size, c.hidden_size), "embedding")
FINAL_NORM = V4Template("norm.weight", lambda c: (c.hidden_size,), "norm")
LM_HEAD = V4Template("head.weight", lambda c: (c.vocab_size, c.hidden_size), "lm_head")
MTP_INPUT = (
    V4Template("e_proj.weight", lambda c: (c.hidden_size, c.hidden_size), "mtp", "fp8"),
    V4Template("h_proj.weight", lambda c: (c.hidden_size, c.hidden_size), "mtp", "fp8"),
    V4Template("enorm.weight", lambda c: (c.hidden_size,), "mtp"),
    V4Template("hnorm.weight", lambda c: (c.hidden_size,), "mtp"),
)
MTP_OUTPUT = (FINAL_NORM, *HC_HEAD)

LAYER_PREFIX = "layers.{L}."
MTP_PREFIX = "mtp.{J}."
EXPERT_PREFIX = "ffn.experts.{E}."

_STORED = {"bf16": "BF16", "f32": "F32", "i64": "I64"}


def v4_scale_name(weight_name: str) -> str:
    return weight_name.removesuffix(".weight") + V4_SCALE_SUFFIX


def v4_weight_name(scale_name: str) -> str:
    return scale_name.removesuffix(V4_SCALE_SUFFIX) + ".weight"


def fp4_scale_shape(shape: Shape) -> Shape:
    """MXFP4: one scale per 32 inputs of each row, shape given as the logical [out, in]."""
    rows, cols = shape
    return (rows, -(-cols // FP4_BLOCK))


def default_expert_dtype(config: C) -> ExpertDtype:
    """The config's declaration, else FP4 (both releases; a Pro config omits the key).
    A checkpoint's real format is read from its tensors (v4.validate.detect_expert_dtype)."""
    return config.declared_expert_dtype or "fp4"


class V4TensorPlan(TensorPlan):
    """The ordered tensors of one V4 config: layout "fp8" (the release) or "bf16"."""

    scale_suffix = V4_SCALE_SUFFIX

    def __init__(self, config: C, layout: Literal["bf16", "fp8"] | None = None, *,
                 expert_dtype: ExpertDtype | None = None, include_mtp: bool = True):
        self.expert_dtype: ExpertDtype = expert_dtype or default_expert_dtype(config)
        super().__init__(config, layout, include_mtp=include_mtp)  # type: ignore[arg-type]

    def without_mtp(self) -> V4TensorPlan:
        return V4TensorPlan(self.config, self.layout, expert_dtype=self.expert_dtype,
                            include_mtp=False)

    # -- naming (the base class calls these) -----------------------------------------------
    @staticmethod
    def scale_name_of(weight_name: str) -> str:
        return v4_scale_name(weight_name)

    @staticmethod
    def weight_name_of(scale_name: str) -> str:
        return v4_weight_name(scale_name)

    # -- generation ------------------------------------------------------------------------
    def _stored(self, kind: Kind, shape: Shape) -> tuple[Shape, str, Shape | None]:
        """(stored shape, dtype, scale shape or None) of one tensor of logical `shape`."""
        if kind in _STORED:
            return shape, _STORED[kind], None
        if self.layout == "bf16":
            return shape, "BF16", None
        if kind == "expert" and self.expert_dtype == "fp4":
            return (shape[0], shape[1] // 2), "I8", fp4_scale_shape(shape)
        return shape, "F8_E4M3", scale_shape(shape, (FP8_BLOCK, FP8_BLOCK))

    def _scoped(self, templates, prefix: str, layer=None, experts=None, mtp=False,
                ratio: int = 0, hashed: bool = False) -> Iterator[Group]:
        c = self.config
        for t in templates:
            if not t.when(c, ratio, hashed):
                continue
            logical = t.shape2(c, ratio) if isinstance(t, _RatioTemplate) else t.shape(c)
            shape, dtype, sshape = self._stored(t.kind, tuple(int(d) for d in logical))
            family = prefix + t.pattern
            scale = v4_scale_name(family) if sshape else None
            yield Group(family, shape, dtype, t.component, layer, experts, mtp, scale, None)
            if sshape:
                yield Group(scale, sshape, "F8_E8M0", t.component, layer, experts, mtp, None, family)

    def _block(self, prefix: str, block: int, mtp: bool) -> Iterator[Group]:
        c = self.config
        ratio, hashed = c.compress_ratio(block), c.is_hash_layer(block) and not mtp
        yield from self._scoped(BLOCK, prefix, block, None, mtp, ratio, hashed)
        yield from self._scoped(ROUTED_EXPERT, prefix + EXPERT_PREFIX, block, c.n_routed_experts, mtp)
        yield from self._scoped(SHARED_EXPERT, prefix, block, None, mtp)

    def _generate(self) -> Iterator[Group]:
        c = self.config
        yield from self._scoped([EMBED], "")
        for layer in range(c.num_hidden_layers):
            yield from self._block(LAYER_PREFIX, layer, False)
        yield from self._scoped([FINAL_NORM, LM_HEAD, *HC_HEAD], "")
        if not self.include_mtp:
            return
        for j in range(c.num_mtp_layers):
            prefix = MTP_PREFIX.replace("{J}", str(j))
            block = c.num_hidden_layers + j
            yield from self._scoped(MTP_INPUT, prefix, block, mtp=True)
            yield from self._block(prefix, block, True)
            yield from self._scoped(MTP_OUTPUT, prefix, block, mtp=True)

    # -- figures ---------------------------------------------------------------------------
    @staticmethod
    def parameters_of(g: Group) -> int:
        """Logical parameters of a group: 2 per packed FP4 byte; scales and I64 tables none."""
        if g.scale_of_family is not None or g.dtype == "I64":
            return 0
        return g.numel * (2 if g.dtype == "I8" else 1)

    @cached_property
    def parameters(self) -> ParameterCounts:
        c = self.config
        main = mtp = scales = routed = embed = 0
        by_component: Counter[str] = Counter()
        for g in self.groups:
            n = self.parameters_of(g)
            if g.scale_of_family is not None:
                scales += g.numel
            elif g.mtp:
                mtp += n
            else:
                main += n
                by_component[g.component] += n
                routed += n if g.component == "routed_expert" else 0
                embed += n if g.component == "embedding" else 0
        k, E = c.num_experts_per_tok, c.n_routed_experts
        active = main - routed * (E - k) // E
        return ParameterCounts(main=main, activated=active - embed, activated_with_embedding=active,
                               mtp=mtp, mtp_unique=mtp, checkpoint=main + mtp,
                               scale_elements=scales, by_component=dict(by_component))

    @cached_property
    def stored_elements(self) -> int:
        """Elements as stored (a packed byte is one), scales and tables included."""
        return sum(g.numel for g in self.groups)


def plan_for(config, layout: Literal["bf16", "fp8"] | None = None, **options) -> TensorPlan:
    """The plan of any supported config: V2/V3 (`tensor_plan`) or DeepSeek-V4 (this module)."""
    if config.model_type == "deepseek_v4":
        return V4TensorPlan(config, layout, **options)
    return TensorPlan(config, layout, **options)
