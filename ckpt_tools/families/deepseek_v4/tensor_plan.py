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
from collections.abc import Iterator
from functools import cached_property
from typing import Literal

from ..base import Block, Family
from . import (
    DEEPSEEK_V4,
    LAYER_PREFIX,
    MTP_PREFIX,
    SCALE_SUFFIX,
    scale_name,
    weight_name,
)
from ...inventory.tensor_plan import Group, ParameterCounts, Shape, TensorPlan
from ...configs.v4 import DeepseekV4Config, ExpertDtype
from ...formats import block_grid, fp4_scale_shape

V4_SCALE_SUFFIX = SCALE_SUFFIX
v4_scale_name, v4_weight_name = scale_name, weight_name
C = DeepseekV4Config
Layout = Literal["bf16", "fp8", "hf"]


def default_expert_dtype(config: C) -> ExpertDtype:
    """The config's declaration, else FP4 (both releases; a Pro config omits the key).
    A checkpoint's real format is read from its tensors (checks.detect_layout)."""
    return config.declared_expert_dtype or "fp4"


class V4TensorPlan(TensorPlan):
    """The ordered tensors of one V4 config: layout "fp8" (the release), "bf16" (upcast,
    DeepSeek's names) or "hf" (upcast to transformers' names, routed experts stacked)."""

    scale_suffix = V4_SCALE_SUFFIX

    def __init__(self, config: C, layout: Layout | None = None, *,
                 expert_dtype: ExpertDtype | None = None, include_mtp: bool = True,
                 architecture: Family | None = None):
        self.expert_dtype: ExpertDtype = expert_dtype or default_expert_dtype(config)
        super().__init__(config, layout, include_mtp=include_mtp,  # type: ignore[arg-type]
                         architecture=architecture or DEEPSEEK_V4)

    @property
    def precision(self) -> Literal["bf16", "fp8"]:
        return "bf16" if self.layout == "hf" else self.layout

    def without_mtp(self) -> V4TensorPlan:
        return V4TensorPlan(self.config, self.layout, expert_dtype=self.expert_dtype,
                            include_mtp=False, architecture=self.architecture)

    # -- naming (the base class calls these) -----------------------------------------------
    @staticmethod
    def scale_name_of(weight_name: str) -> str:
        return v4_scale_name(weight_name)

    @staticmethod
    def weight_name_of(scale_name: str) -> str:
        return v4_weight_name(scale_name)

    # -- generation (from the family's rows) --------------------------------------------------
    def _stored(self, row, shape: Shape) -> tuple[Shape, str, Shape | None]:
        """(stored shape, dtype, scale shape or None) of one tensor of logical `shape`."""
        if row.fmt == "none" or self.layout in ("bf16", "hf"):
            return shape, row.keep, None
        if row.fmt == "expert" and self.expert_dtype == "fp4":
            packed = (shape[0], shape[1] // 2)  # two e2m1 codes per byte
            return packed, "I8", fp4_scale_shape(packed)
        return shape, "F8_E4M3", block_grid(shape)

    def _scoped(self, section: str, prefix: str | None = None, block: Block = Block(),
                experts: int | None = None) -> Iterator[Group]:
        """The rows of `section` in `block`; `prefix` replaces the scope's block prefix (an
        MTP block's "mtp.J."). transformers' layout names the main model's tensors its way
        (MTP keeps DeepSeek's: it has no transformers module)."""
        c, f = self.config, self.architecture
        names = "hf" if self.layout == "hf" and not block.mtp else "native"
        for row in f.section(section):
            if not row.exists(c, block):
                continue
            shape, dtype, sshape = self._stored(row, row.shape_of(c, block))
            family = f.template(row, names)
            if prefix is not None:  # an MTP block: "mtp.J." where the scope says "layers.{L}."
                scope = next(p for p in (LAYER_PREFIX, MTP_PREFIX) if family.startswith(p))
                family = prefix + family[len(scope):]
            scale = scale_name(family) if sshape else None
            layer = block.layer
            yield Group(family, shape, dtype, row.component, layer, experts, block.mtp, scale, None)
            if sshape:
                yield Group(scale, sshape, "F8_E8M0", row.component, layer, experts, block.mtp,
                            None, family)

    def _block(self, block: int, mtp: bool, prefix: str | None = None) -> Iterator[Group]:
        c = self.config
        b = Block(block, mtp, c.compress_ratio(block), c.is_hash_layer(block) and not mtp)
        yield from self._scoped("block", prefix, b)
        if self.layout == "hf" and not mtp:
            yield from self._scoped("stacked_expert", prefix, b)
        else:
            yield from self._scoped("routed_expert", prefix, b, c.n_routed_experts)
        yield from self._scoped("shared_expert", prefix, b)

    def _generate(self) -> Iterator[Group]:
        c = self.config
        yield from self._scoped("global_first")
        for layer in range(c.num_hidden_layers):
            yield from self._block(layer, False)
        yield from self._scoped("global_last")
        if not self.include_mtp:
            return
        for j in range(c.num_mtp_layers):
            prefix = MTP_PREFIX.replace("{J}", str(j))
            block = c.num_hidden_layers + j
            yield from self._scoped("mtp_input", prefix, Block(block, True))
            yield from self._block(block, True, prefix)
            yield from self._scoped("mtp_output", prefix, Block(block, True))

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

