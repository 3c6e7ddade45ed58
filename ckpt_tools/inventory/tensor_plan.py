"""The tensor plan: every tensor a checkpoint of a given config holds, as data.

Names and shape formulas come from the config's family's rows (`ckpt_tools.families`), dtypes
from one policy (docs/architecture.md, "FP8"): in the FP8 layout every linear weight
except the router gate and the MTP `eh_proj` is F8_E4M3 with an F32 `weight_scale_inv` of
ceil(rows/block) x ceil(cols/block); embeddings, lm_head, norms and the router are BF16; the
aux-loss-free `e_score_correction_bias` is F32 in every layout. V3.2's lightning indexer
(`self_attn.indexer.*`) follows DeepSeek's release: `wq_b` and `wk` FP8 like the other
projections, `weights_proj` BF16 without a scale, the `k_norm` LayerNorm (weight and bias)
F32; `alt_dtypes` names what else a writer may legitimately have stored (transformers keeps
`weights_proj` in float32; `k_norm` in BF16), and a checkpoint's plan adopts what it stores
(`stored_dtypes`).

Everything else (validate, diff, upcast, quantize, reshard, the forward pass, make-tiny)
asks this module instead of knowing names itself.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, NamedTuple

from ..configs.parse import Config
from ..io.dtypes import itemsize
from ..families import family_of
from ..families.base import HF_EXPERT_PREFIX as EXPERT_PREFIX  # noqa: F401  (API)
from ..families.base import HF_LAYER_PREFIX as LAYER_PREFIX  # noqa: F401  (API)
from ..families.base import Block, Component, Family, Shape, wrapped_name
from ..formats import FP8_BLOCK, block_grid
from ..io.index import SCALE_SUFFIX

Layout = Literal["bf16", "fp8"]

# the one tensor of these families transformers registers as a buffer, not a parameter
ROUTER_BUFFER = "e_score_correction_bias"


class TensorSpec(NamedTuple):
    """One tensor of the plan (a NamedTuple: V3 has 92k of them, and they must be cheap)."""

    name: str
    # the template with {L} / {E} left in, e.g. model.layers.{L}.mlp.experts.{E}.up_proj.weight
    family: str
    shape: Shape
    dtype: str  # safetensors dtype name
    component: Component
    layer: int | None = None
    expert: int | None = None
    mtp: bool = False
    scale_name: str | None = None  # on an FP8 weight: its weight_scale_inv
    scale_of: str | None = None  # on a weight_scale_inv: the weight it scales

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * itemsize(self.dtype)

    @property
    def is_parameter(self) -> bool:
        """Scales are storage, not parameters (DeepSeek's counting convention)."""
        return self.scale_of is None


def scale_name_for(weight_name: str) -> str:
    return weight_name + SCALE_SUFFIX


@dataclass(frozen=True)
class ParameterCounts:
    main: int  # the main model: embeddings, all decoder layers, final norm, lm_head
    activated: int  # per token, DeepSeek's convention: input embedding excluded
    activated_with_embedding: int
    mtp: int  # MTP modules including their copies of embedding and head
    mtp_unique: int  # MTP modules without the embedding/head copies
    checkpoint: int  # main + mtp
    scale_elements: int  # FP8 weight_scale_inv elements (not parameters)
    by_component: dict[str, int] = field(default_factory=dict)  # main model only
    # of `main`, elements transformers keeps as saved buffers, not nn.Parameters (the routers'
    # e_score_correction_bias): main - buffers is its parameter count of the model
    buffers: int = 0
    # per token when every routed pick is a zero-computation expert (LongCat-Flash); equal
    # to `activated` when the router has no such slots
    activated_min: int | None = None


@dataclass(frozen=True)
class Group:
    """Tensors of one family in one layer (all experts of a routed-expert family at once)."""

    family: str
    shape: Shape
    dtype: str
    component: Component
    layer: int | None
    experts: int | None  # number of routed experts this group expands to
    mtp: bool
    scale_family: str | None  # on an FP8 weight family: its scale family
    scale_of_family: str | None  # on a scale family: the weight family
    alt_dtypes: tuple[str, ...] = ()  # also accepted as stored (the template's)

    @property
    def count(self) -> int:
        return self.experts or 1

    @property
    def numel(self) -> int:
        return math.prod(self.shape) * self.count

    @property
    def names(self) -> list[str]:
        """The tensor names of this group, by expert (much cheaper than `TensorPlan.specs`)."""
        if self.layer is None:
            return [self.family]
        if self.experts is None:
            return [self.family.format(L=self.layer)]
        fmt = self.family.format
        return [fmt(L=self.layer, E=e) for e in range(self.experts)]


class TensorPlan:
    """The ordered tensors of one config in one layout ("bf16" or "fp8").

    Built from a few thousand `Group`s (family x layer), so figures are cheap; the
    per-tensor `specs` (92k for V3) are expanded from them on first use.
    """

    def __init__(self, config: Config, layout: Layout | None = None, *, include_mtp: bool = True,
                 prefix: str | None = None, stored_dtypes: dict[str, str] | None = None,
                 architecture: Family | None = None):
        """`stored_dtypes`: family -> one of its template's `alt_dtypes`, for a checkpoint
        that stores that family so (see `stored_dtypes_in`); the plan then says so too.
        `architecture`: the family whose rows are planned (default: the config's)."""
        self.config = config
        self.architecture: Family = architecture or family_of(config)
        # a wrapper's language model lives under a prefix (`language_model.`, `language.`)
        self.prefix = config.reading.tensor_prefix if prefix is None else prefix
        self.layout: Layout = layout or ("fp8" if config.is_fp8 else "bf16")
        qc = config.quantization_config
        self.block: tuple[int, int] = tuple(qc.weight_block_size) if qc else FP8_BLOCK
        self.include_mtp = include_mtp
        self.stored_dtypes: dict[str, str] = dict(stored_dtypes or {})
        self.groups: list[Group] = list(self._generate())
        for family in self.stored_dtypes.keys() - self.families.keys():
            raise ValueError(f"stored_dtypes: no family {family} in this plan")

    def without_mtp(self) -> TensorPlan:
        """The same plan without the MTP layers (what DeepSeek's convert.py keeps)."""
        return TensorPlan(self.config, self.layout, include_mtp=False, prefix=self.prefix,
                          stored_dtypes=self.stored_dtypes, architecture=self.architecture)

    @property
    def precision(self) -> Layout:
        """"bf16" or "fp8": the layout's number format, whatever its names."""
        return self.layout

    def stored_dtypes_in(self, dtype_of: Callable[[str], str | None]) -> dict[str, str]:
        """The families whose first readable tensor is stored in one of their `alt_dtypes`,
        with that dtype (`dtype_of(name)`: the stored dtype, None when unknown, e.g. in a
        shard not downloaded). Asks only about the few families that have alternatives
        (V3.2's indexer norms and weights_proj), one tensor each."""
        out = {}
        for family, groups in self.families.items():
            if not groups[0].alt_dtypes:
                continue
            found = (dtype_of(g.names[0]) for g in groups)
            dtype = next((d for d in found if d is not None), None)
            if dtype in groups[0].alt_dtypes:
                out[family] = dtype
        return out

    # -- generation ---------------------------------------------------------------------
    def _scoped(self, section: str, layer=None, experts=None, mtp=False,
                copy: int = 0) -> Iterator[Group]:
        c, family = self.config, self.architecture
        block = Block(layer, mtp, copy=copy)
        for t in family.section(section):
            if not t.exists(c, block):
                continue
            family_name = wrapped_name(self.prefix,
                                       family.template(t, "hf").replace("{I}", str(copy)))
            if mtp:  # an MTP block named by its own index (LongCat-Flash's model.mtp.layers.0.)
                family_name = family_name.replace("{J}", str(layer - c.num_hidden_layers))
            shape = t.shape_of(c, block)
            quantized = t.fp8 and self.layout == "fp8"
            planned = "F8_E4M3" if quantized else t.keep
            dtype = self.stored_dtypes.get(family_name, planned)
            if dtype != planned and dtype not in t.alt_dtypes:
                raise ValueError(f"stored_dtypes: {family_name} cannot be stored as {dtype}")
            # what else a tensor of the family may be stored as: the other alternatives, and
            # the planned dtype once a stored alternative was adopted
            alt = () if quantized else tuple(d for d in (planned, *t.alt_dtypes) if d != dtype)
            scale = scale_name_for(family_name) if quantized else None
            yield Group(family_name, shape, dtype, t.component, layer, experts, mtp, scale, None,
                        alt if t.alt_dtypes else ())
            if quantized:
                yield Group(scale, block_grid(shape, self.block), "F32", t.component, layer,
                            experts, mtp, None, family_name)

    def _layer(self, layer: int, mtp: bool) -> Iterator[Group]:
        c = self.config
        sections = self.architecture.block_sections(mtp)
        if sections is not None:  # the family's own layout: every section, every copy
            for section, copies in sections:
                experts = c.n_routed_experts if section == "routed_expert" else None
                for copy in range(copies):
                    yield from self._scoped(section, layer, experts, mtp, copy)
            return
        yield from self._scoped("attention", layer, mtp=mtp)
        if not c.is_moe_layer(layer):
            yield from self._scoped("dense_mlp", layer, mtp=mtp)
            return
        yield from self._scoped("router", layer, mtp=mtp)
        yield from self._scoped("routed_expert", layer, c.n_routed_experts, mtp)
        yield from self._scoped("shared_expert", layer, mtp=mtp)

    def _generate(self) -> Iterator[Group]:
        c = self.config
        yield from self._scoped("global_first")
        for layer in range(c.num_hidden_layers):
            yield from self._layer(layer, mtp=False)
        yield from self._scoped("global_last")  # final norm, lm_head
        if not self.include_mtp:
            return
        for layer in range(c.num_hidden_layers, c.num_hidden_layers + c.num_mtp_layers):
            if self.architecture.mtp_sections is not None:
                yield from self._layer(layer, mtp=True)
                continue
            # the MTP module's own tensors around a full MoE layer
            yield from self._scoped("mtp_input", layer, mtp=True)
            yield from self._layer(layer, mtp=True)
            yield from self._scoped("mtp_output", layer, mtp=True)

    @staticmethod
    def scale_name_of(weight_name: str) -> str:
        return weight_name + SCALE_SUFFIX

    @staticmethod
    def weight_name_of(scale_name: str) -> str:
        return scale_name.removesuffix(SCALE_SUFFIX)

    def _expand(self, g: Group) -> Iterator[TensorSpec]:
        # weight and scale of one expert stay adjacent: `specs` interleaves expert groups
        experts = [None] if g.experts is None else range(g.experts)
        for name, expert in zip(g.names, experts):
            scale_name = self.scale_name_of(name) if g.scale_family else None
            scale_of = self.weight_name_of(name) if g.scale_of_family else None
            yield TensorSpec(name, g.family, g.shape, g.dtype, g.component, g.layer, expert,
                             g.mtp, scale_name, scale_of)

    @cached_property
    def specs(self) -> list[TensorSpec]:
        out: list[TensorSpec] = []
        pending: list[Group] = []  # routed-expert groups of the current layer, expanded per expert

        def flush():
            if pending:
                n = pending[0].experts
                expanded = [list(self._expand(g)) for g in pending]
                for e in range(n):
                    out.extend(specs[e] for specs in expanded)
                pending.clear()

        for g in self.groups:
            if g.experts is not None:
                pending.append(g)
                continue
            flush()
            out.extend(self._expand(g))
        flush()
        return out

    @cached_property
    def by_name(self) -> dict[str, TensorSpec]:
        return {s.name: s for s in self.specs}

    # -- queries ------------------------------------------------------------------------
    def __iter__(self) -> Iterator[TensorSpec]:
        return iter(self.specs)

    def __len__(self) -> int:
        return sum(g.count for g in self.groups)

    def __contains__(self, name: str) -> bool:
        return name in self.by_name

    def get(self, name: str) -> TensorSpec | None:
        return self.by_name.get(name)

    def layer_specs(self, layer: int) -> list[TensorSpec]:
        return [s for s in self.specs if s.layer == layer]

    @cached_property
    def families(self) -> dict[str, list[Group]]:
        """Groups by family (template), in plan order."""
        out: dict[str, list[Group]] = {}
        for g in self.groups:
            out.setdefault(g.family, []).append(g)
        return out

    @cached_property
    def bytes_by_dtype(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for g in self.groups:
            total[g.dtype] += g.numel * itemsize(g.dtype)
        return dict(total)

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_by_dtype.values())

    @cached_property
    def parameters(self) -> ParameterCounts:
        c = self.config
        main = mtp = mtp_copies = scales = routed = embed = buffers = 0
        by_component: Counter[str] = Counter()
        for g in self.groups:
            if g.scale_of_family is not None:
                scales += g.numel
            elif g.mtp:
                mtp += g.numel
                if g.family.endswith(("embed_tokens.weight", "shared_head.head.weight")):
                    mtp_copies += g.numel
            else:
                main += g.numel
                by_component[g.component] += g.numel
                routed += g.numel if g.component == "routed_expert" else 0
                embed += g.numel if g.component == "embedding" else 0
                buffers += g.numel if g.family.endswith(ROUTER_BUFFER) else 0
        k, E = c.num_experts_per_tok, c.n_routed_experts
        active_with_embed = main - routed * (E - k) // E
        return ParameterCounts(
            main=main,
            activated=active_with_embed - embed,
            # zero experts hold no weights: a token whose picks all land on them runs none
            activated_min=main - routed - embed if getattr(c, "zero_experts", 0) else None,
            activated_with_embedding=active_with_embed,
            mtp=mtp,
            mtp_unique=mtp - mtp_copies,
            checkpoint=main + mtp,
            scale_elements=scales,
            by_component=dict(by_component),
            buffers=buffers,
        )


def plan_for(config, layout: str | None = None, **options) -> TensorPlan:
    """The plan of any supported config, by its family's planner (`families`)."""
    return family_of(config).plan(config, layout, **options)
