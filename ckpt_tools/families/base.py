"""What an architecture family is, as data: its rows (one per tensor family) and its entry.

A `Row` says, for one tensor of a block: its role (DeepSeek's short name from its
`inference/model.py`, which the reference forward pass uses), where it sits (`section`),
its name in every layout the family has (transformers' `hf`, DeepSeek's model-parallel
`mp`, DeepSeek's own `native` names where a release uses them; None: not in that layout),
its shape as a function of the config and the block it sits in, its number format
(`fmt`: "none", "fp8" block-quantised, "expert": the routed-expert format of the
checkpoint), the dtype it keeps when not quantised, its model-parallel split, and when it
exists. A `Family` is the registry entry: how a config is recognised, its rows, layouts
and formats, and the hooks the commands call instead of asking which family they hold.

A layer may hold several copies of a section (LongCat-Flash: two attention blocks and two
dense MLPs beside its MoE): `Family.layer_sections` lists a decoder layer's sections in
order with their copy counts, and a row's name marks the copy with `{I}`. An MTP block of
another shape than a decoder layer lists its own (`mtp_sections`, its block index `{J}`).

A derived family is its parent's rows with a few changes: `derive(parent_rows,
add_after={...}, drop=(...), change={...})`, the spirit of transformers' `modular_*.py`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple

from ..errors import UnsupportedModelError

Shape = tuple[int, ...]
Component = Literal["embedding", "attention", "indexer", "norm", "dense_mlp", "router",
                    "routed_expert", "shared_expert", "lm_head", "mtp",
                    "compressor", "hyper_connection"]
Format = Literal["none", "fp8", "expert"]
COLUMN, ROW = 0, 1  # the dim a column-/row-parallel weight ([out, in]) is split on
EXPERT = "expert"  # routed experts go whole to one rank
Rule = int | Literal["expert"] | None  # None: replicated on every rank
LayoutKind = Literal["hf", "mp", "native"]
# transformers' names of a decoder layer and of one routed expert in it (every family here)
HF_LAYER_PREFIX = "model.layers.{L}."
HF_EXPERT_PREFIX = "mlp.experts.{E}."


class Block(NamedTuple):
    """Where a row is being instantiated: its layer, whether it is an MTP block, and the
    block's attention kind (DeepSeek-V4: compress ratio, hash-routed or not)."""

    layer: int | None = None
    mtp: bool = False
    ratio: int = 0
    hashed: bool = False
    copy: int = 0  # which copy of its section ({I}), where a layer holds several


class Wrapper(NamedTuple):
    """A multimodal wrapper whose own configuration code builds this family's config class
    from its `text_config` / `language_config`, whatever that mapping names (Kimi-VL,
    DeepSeek-VL2): recognised by its model_type or by one of its classes."""

    loader: str  # whose defaults fill the language model's absent keys
    does: str  # what its code does, as `info` says why it recognised the file
    classes: tuple[str, ...] = ()  # its model / config classes (architectures, auto_map)
    # where its checkpoints keep the language model's tensors, when not under the wrapper
    # key's usual prefix (configs.layouts.WRAPPER_KEYS); see `wrapped_name`
    tensor_prefix: str | None = None


def wrapped_name(prefix: str, name: str) -> str:
    """A language model's tensor `name` inside a wrapper that keeps it under `prefix`. A
    prefix inside the model's own `model.` scope (transformers 5's multimodal wrappers,
    `model.language_model.`) replaces that scope and leaves what sits outside it
    (`lm_head.weight`) at the top; any other prefix (Kimi-K2.5's `language_model.`) goes
    before every name."""
    if prefix.startswith("model.") and name.startswith("model."):
        return prefix + name.removeprefix("model.")
    return name if prefix.startswith("model.") else prefix + name


class _Always:
    """A row that exists in every block (named, so signatures print it the same each run)."""

    def __call__(self, c: Any, b: Block) -> bool:
        return True

    def __repr__(self) -> str:
        return "always"


always = _Always()


@dataclass(frozen=True)
class Row:
    """One tensor family of an architecture (see the module docstring)."""

    role: str
    section: str
    hf: str | None  # transformers' name relative to the section's scope
    shape: Callable[[Any, Block], Shape]
    component: Component
    mp: str | None = None  # DeepSeek's model-parallel name relative to the section's scope
    split: Rule = None
    fmt: Format = "none"
    keep: str = "BF16"  # the dtype when not quantised ("F32" in every layout, "I64" tables)
    when: Callable[[Any, Block], bool] = always
    # also a legitimate stored dtype (another writer's choice); a checkpoint's plan adopts
    # it through `TensorPlan(stored_dtypes=...)`
    alt_dtypes: tuple[str, ...] = ()
    native: str | None = None  # DeepSeek's own names where a release stores them (V4)
    mp_dequantized: bool = False  # split after dequantising (DeepSeek-V4's wo_a)

    # -- the V2/V3 table's spellings (tensor_plan, mp_layout, reference.weights) ----------
    @property
    def fp8(self) -> bool:
        return self.fmt == "fp8"

    @property
    def f32(self) -> bool:
        return self.keep == "F32"

    def exists(self, config: Any, block: Block = Block()) -> bool:
        return self.when(config, block)

    def shape_of(self, config: Any, block: Block = Block()) -> Shape:
        return tuple(int(d) for d in self.shape(config, block))

    def name(self, layout: LayoutKind) -> str | None:
        return {"hf": self.hf, "mp": self.mp, "native": self.native}[layout]


def derive(parent: Iterable[Row], *, drop: Iterable[str] = (),
           change: Mapping[str, Mapping[str, Any]] | None = None,
           add_after: Mapping[str, Iterable[Row]] | None = None,
           add: Iterable[Row] = ()) -> tuple[Row, ...]:
    """A derived family's rows: the parent's, without `drop` (roles), with `change`
    (role -> field changes, e.g. {"wq_b": {"hf": "self_attn.q_up.weight"}}), with new rows
    inserted after a parent role (`add_after`) or appended (`add`). Unknown roles raise, so
    a parent that renames a row breaks its children loudly."""
    rows = list(parent)
    roles = {r.role for r in rows}
    change, add_after, drop = dict(change or {}), dict(add_after or {}), set(drop)
    unknown = (drop | change.keys() | add_after.keys()) - roles
    if unknown:
        raise KeyError(f"derive: no parent row {sorted(unknown)}")
    out: list[Row] = []
    for r in rows:
        if r.role not in drop:
            out.append(replace(r, **change[r.role]) if r.role in change else r)
        out.extend(add_after.get(r.role, ()))
    out.extend(add)
    if len({r.role for r in out}) != len(out):
        raise ValueError("derive: two rows share a role")
    return tuple(out)


def stacked_expert_rows(section: str) -> tuple[Row, Row]:
    """transformers' fused routed experts: one `gate_up_proj` [E, 2I, D] and one `down_proj`
    [E, D, I] per layer, counted as routed experts (totals and activated take k of E of
    them); `section` is the scope the family files them under."""
    return (
        Row("experts.gate_up", section, "mlp.experts.gate_up_proj",
            lambda c, b: (c.n_routed_experts, 2 * c.moe_intermediate_size, c.hidden_size),
            "routed_expert"),
        Row("experts.down", section, "mlp.experts.down_proj",
            lambda c, b: (c.n_routed_experts, c.hidden_size, c.moe_intermediate_size),
            "routed_expert"),
    )


def resolve(target: str) -> Any:
    """"package.module:attribute" -> the attribute. Hooks are named, not imported, so the
    registry stays below the commands that call them (the way mlx-lm imports
    `models.<model_type>` by name)."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Family:
    """One architecture family: recognition, rows, layouts, formats and command hooks.

    `hooks` name functions ("module:attribute") the commands call; a hook a family does
    not name falls back to `DEFAULT_HOOKS` (the table-driven V2/V3 machinery).
    """

    name: str  # the canonical model_type the config readers return
    title: str
    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    rows: tuple[Row, ...]
    scopes: Mapping[str, Mapping[LayoutKind, str]]  # section -> layout -> name prefix
    layouts: tuple[str, ...]  # plan layouts: "bf16", "fp8" (+ "hf" where names differ)
    formats: tuple[str, ...]  # number formats its checkpoints use
    router: str  # "softmax-topk" / "group-limited" / "sigmoid-noaux" / "sqrt-softplus+hash"
    attention: str  # "mla" / "mla+dsa" / "v4-csa-hca"
    presets: tuple[str, ...] = ()
    parent: str | None = None
    hooks: Mapping[str, str] = field(default_factory=dict)
    scale_suffix: str = ".weight_scale_inv"  # "x.weight" -> its scale (hf layout)
    scale_dtype: str = "F32"  # of block-FP8 scales ("F8_E8M0": powers of two by construction)
    # the config field counting the residual streams a decoder layer passes on (DeepSeek-V4's
    # hyper-connections: hc_mult); None: one hidden state
    hidden_streams: str | None = None
    # why DeepSeek's model-parallel layout (its inference/model.py and convert.py) is not
    # meaningful for this family, when it is not: reshard --to/from deepseek-mp refuse with it
    no_mp_layout: str | None = None
    # why DeepSeek's block FP8 (128x128 weight_scale_inv) does not apply to this family, when
    # it does not: quantize and make-tiny --fp8 refuse with it
    no_block_fp8: str | None = None
    # -- how its config.json is read (config, config_layouts, config_defaults ask these) -----
    # the pydantic model `parse_config` builds
    config_model: type | None = None
    # raw mapping -> config_model, for a family whose files are mapped before validation
    # (another key spelling) or refused by layout (UnsupportedModelError / ValueError saying
    # why); None: `parse_config`'s shared path (loader defaults, wrappers) validates it
    config_parser: Callable[[dict[str, Any]], Any] | None = None
    # the loader whose defaults fill absent keys, when the family has exactly one (transformers'
    # config class of a derived family); None: config_defaults chooses among DeepSeek's loaders
    loader: str | None = None
    # that loader's class defaults, and the values its modeling code fixes whatever the file says
    class_defaults: Mapping[str, Any] = field(default_factory=dict)
    implied_defaults: Mapping[str, Any] = field(default_factory=dict)
    # wrapper model_type -> the wrapper whose code builds this family's config from its
    # language-model mapping even when that mapping names nothing
    wrappers: Mapping[str, Wrapper] = field(default_factory=dict)
    # the reports its own hooks return, published under schemas/: file stem -> "module:attribute"
    report_schemas: Mapping[str, str] = field(default_factory=dict)
    # -- how a decoder layer and an MTP block are laid out (the tensor plan walks these) ----
    # (section, copies) in plan order; None: DeepSeek's layer, attention then either a dense
    # MLP or the MoE (router, routed experts, shared experts) by `config.is_moe_layer`
    layer_sections: tuple[tuple[str, int], ...] | None = None
    # an MTP block's sections; None: DeepSeek's, its input rows, a full MoE layer, its head
    mtp_sections: tuple[tuple[str, int], ...] | None = None

    def loader_defaults(self) -> dict[str, Any]:
        """Every value the family's own loader uses for an absent key."""
        return {**self.class_defaults, **self.implied_defaults}

    def streams(self, config) -> int:
        return getattr(config, self.hidden_streams) if self.hidden_streams else 1

    def refuse_block_fp8(self, source: Any) -> None:
        """UnsupportedModelError naming why, when DeepSeek's block FP8 does not apply."""
        if self.no_block_fp8 is not None:
            raise UnsupportedModelError(f"{source}: block FP8 is not available for "
                                        f"{self.title}: {self.no_block_fp8}")

    def hook(self, name: str) -> Callable[..., Any]:
        return resolve(self.hooks.get(name) or DEFAULT_HOOKS[name])

    def has_hook(self, name: str) -> bool:
        return name in self.hooks

    def row(self, role: str) -> Row:
        for r in self.rows:
            if r.role == role:
                return r
        raise KeyError(f"{self.name}: no row {role!r}")

    def section(self, name: str) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.section == name)

    def template(self, row: Row, layout: LayoutKind) -> str | None:
        """The row's full name template in `layout` ({L} layer, {E} expert, {J} MTP block,
        {I} copy of a section a layer holds several of)."""
        leaf = row.name(layout)
        return None if leaf is None else self.scopes[row.section][layout] + leaf

    @property
    def in_module_table(self) -> bool:
        """Whether its rows join the merged name tables of the V2/V3 machinery
        (`inventory.modules`, one row per role): not for a family with its own planner, nor
        for one whose layer repeats a role under other names (`layer_sections`)."""
        return not self.has_hook("plan") and self.layer_sections is None

    def block_sections(self, mtp: bool) -> tuple[tuple[str, int], ...] | None:
        """A decoder layer's (or MTP block's) sections with their copy counts, in plan
        order; None where the family keeps DeepSeek's layout."""
        return self.mtp_sections if mtp else self.layer_sections

    # -- the commands' questions, answered from the hooks ----------------------------------
    def plan(self, config, layout=None, **options):
        """The tensor plan of `config` in `layout` (a TensorPlan) from this family's rows."""
        return self.hook("plan")(config, layout, architecture=self, **options)


# Hooks every family has unless it names its own: the V2/V3 table-driven machinery.
DEFAULT_HOOKS: dict[str, str] = {
    "plan": "ckpt_tools.inventory.tensor_plan:TensorPlan",
    "decoder": "ckpt_tools.reference.deepseek:Model",
    "summary": "ckpt_tools.commands.info:summary",
}
