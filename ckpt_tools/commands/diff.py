"""`ckpt diff`: what changed between two DeepSeek architectures or checkpoints, explained.

A and B are each a preset, a config.json or a checkpoint directory. The report holds:
config field changes grouped by concern with a short meaning; derived quantities side by
side (`arch_figures`); each side's routing semantics; the tensor plans compared by family
(template), never tensor by tensor. For two checkpoint directories it adds a header-level
tensor diff and, with `values=True`, a streaming numeric comparison per tensor.

Preset and config diffs import no NumPy and never expand the plan's 92k tensor specs
(groups and families only): after the imports, `diff("v2.5", "v3")` takes tens of
milliseconds. NumPy is imported only for checkpoint directories.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, computed_field

from ..figures.arch_figures import DEFAULT_CONTEXT, ArchFigures, RoutingSemantics, arch_figures
from .config_diff import _SHORT, FieldChange, config_changes  # noqa: F401  (diff's API)
from ..configs.layouts import ConfigReading
from ..figures.dsa_figures import diff_rows
from ..errors import ARGUMENT_PLACEHOLDER, ArgumentError
from ..families import family_of
from ..io.index import SINGLE_FILE
from ..execution.progress import Progress
from ..results import Result
from ..configs.sources import ConfigSource, resolve_config
from .tensor_diff import HeaderDiff, ValueDiff, header_diff, value_diff
from ..inventory.tensor_plan import Layout, TensorPlan, plan_for


class Side(Result):
    spec: str
    kind: Literal["preset", "config", "checkpoint"]
    label: str
    title: str | None
    model_type: str
    layout: Layout | Literal["hf"] = Field(description="As stored: hf is BF16 under transformers' "
                                           "names where a family also has names of its own")
    reading: ConfigReading = Field(description="What was recognised, defaults filled, what the "
                                   "layout leaves out, and warnings (inconsistencies)")
    attention: str | None = Field(None, description="Attention kind and schedule in words, "
                                  "from a family that explains its comparison")


class QuantityRow(Result):
    key: str
    section: Literal["structure", "parameters", "components", "weights", "kv_cache",
                     "attention", "compute", "sparse_attention", "experts"]
    label: str
    unit: Literal["count", "params", "bytes", "flops", "scale", "ratio"]
    a: int | float | None
    b: int | float | None
    ratio: float | None = Field(description="b / a when both are non-zero numbers")
    headline: bool = False


class FamilySide(Result):
    shape: list[int]
    dtype: str
    scale_shape: list[int] | None = Field(description="weight_scale_inv shape of an FP8 family")
    count: int = Field(description="Tensors of this family")
    layers: str = Field(description="Layers holding it, e.g. '3-60, MTP 61'; '' for globals")
    experts: int | None = Field(description="Routed experts per layer for an expert family")


class FamilyChange(Result):
    family: str
    status: Literal["added", "removed", "changed"]
    changes: list[Literal["shape", "dtype", "count"]]
    a: FamilySide | None
    b: FamilySide | None


class PlanDiff(Result):
    layout_a: str
    layout_b: str
    tensors_a: int
    tensors_b: int
    families_a: int = Field(description="Families, with scale families folded into their weight")
    families_b: int
    unchanged: int
    dtype_policy_a: dict[str, int] = Field(description="Families per dtype ('F8_E4M3+scale': "
                                           "an FP8 weight with its F32 weight_scale_inv)")
    dtype_policy_b: dict[str, int]
    changes: list[FamilyChange]


class Explanation(Result):
    topic: str
    text: str


Verdict = Literal["identical_config", "same_architecture", "same_tensor_shapes",
                  "different_architecture"]


class DiffReport(Result):
    """What `ckpt diff A B` reports; `--json` prints exactly this."""

    a: Side
    b: Side
    verdict: Verdict = Field(description="same_architecture: only training-only, metadata or "
                             "storage fields differ; same_tensor_shapes: the same tensors, but "
                             "the forward pass differs (e.g. the softmax scale)")
    same_architecture: bool = Field(description="verdict is identical_config or same_architecture")
    summary: str
    context: int = Field(description="Tokens attended to, for attention FLOPs and KV totals")

    @computed_field(description="Always true: differences are findings, not failures "
                                "(bad input raises)")
    @property
    def ok(self) -> bool:
        return True

    config_changes: list[FieldChange]
    quantities: list[QuantityRow]
    explanations: list[Explanation] = Field(description="What changes from A to B, in words, "
                                            "from a family that explains its comparison; none "
                                            "when the configs are the same architecture")
    routing: tuple[RoutingSemantics, RoutingSemantics] | None = Field(
        description="Each side's routing semantics (the table families'; None when a family "
        "explains its comparison itself)")
    plan: PlanDiff
    figures_a: ArchFigures | None = Field(description="arch_figures of A (None when a family "
                                          "explains its comparison: its quantities instead)")
    figures_b: ArchFigures | None
    headers: HeaderDiff | None = Field(None, description="Two checkpoints: names, shapes and "
                                       "dtypes from their headers")
    values: ValueDiff | None = Field(None, description="With values=True: every common tensor "
                                     "compared by its (dequantised) value")


@dataclass(frozen=True)
class Comparison:
    """What a family with a comparison of its own (its `diff` hook) supplies to the report:
    the quantities side by side, the explainer text, each side's attention in words, and the
    summary of an architectural difference (None: the generic one)."""

    quantities: list[QuantityRow]
    attention: tuple[str, str]
    explanations: list[Explanation] = field(default_factory=list)
    summary: str | None = None


# -- derived quantities ----------------------------------------------------------------------
def _rows(fa: ArchFigures, fb: ArchFigures, plan_a: int, plan_b: int) -> list[QuantityRow]:
    """(section, key, label, unit, getter, headline) for every side-by-side quantity."""
    ctx = fa.flops.context
    layouts = fa.layout if fa.layout == fb.layout else f"{fa.layout} / {fb.layout}"
    spec = [
        ("parameters", "params.main", "total parameters (main model)", "params",
         lambda f: f.parameters.main, True),
        ("parameters", "params.activated", "activated per token (excl. input embedding)",
         "params", lambda f: f.parameters.activated, True),
        ("parameters", "params.activated_with_embedding", "activated incl. input embedding",
         "params", lambda f: f.parameters.activated_with_embedding, False),
        ("parameters", "params.mtp", "MTP modules (incl. embed/head copies)", "params",
         lambda f: f.parameters.mtp, True),
        ("parameters", "params.mtp_unique", "MTP modules, unique", "params",
         lambda f: f.parameters.mtp_unique, False),
        ("parameters", "params.checkpoint", "checkpoint total (main + MTP)", "params",
         lambda f: f.parameters.checkpoint, False),
        ("parameters", "params.scale_elements", "FP8 scale elements (not parameters)", "count",
         lambda f: f.parameters.scale_elements, False),
        ("weights", "weights.native", f"weights as stored ({layouts})", "bytes",
         lambda f: f.weights[0].total_bytes, True),
    ]
    for layout in ("fp8", "bf16"):
        def lb(f, layout=layout):
            return next(w for w in f.weights if w.layout == layout)
        spec.append(("weights", f"weights.{layout}", f"{layout.upper()} layout total", "bytes",
                     lambda f, lb=lb: lb(f).total_bytes, False))
        dtypes = sorted({d for f in (fa, fb) for d in lb(f).bytes_by_dtype})
        spec += [("weights", f"weights.{layout}.{d}", f"  {layout.upper()} layout: {d}", "bytes",
                  lambda f, d=d, lb=lb: lb(f).bytes_by_dtype.get(d, 0), False) for d in dtypes]
    spec += [
        ("kv_cache", "kv.mla_per_token", "KV cache per token, MLA (all layers)", "bytes",
         lambda f: f.kv_cache.mla_per_token, True),
        ("kv_cache", "kv.mla_per_token_per_layer", "  per layer: latent + rope key", "bytes",
         lambda f: f.kv_cache.mla_per_token_per_layer, False),
        ("kv_cache", "kv.mha_per_token", "KV cache per token, plain MHA of that shape", "bytes",
         lambda f: f.kv_cache.mha_per_token, True),
        ("kv_cache", "kv.mha_per_token_per_layer", "  per layer: heads x (qk + v)", "bytes",
         lambda f: f.kv_cache.mha_per_token_per_layer, False),
        ("kv_cache", "kv.mha_over_mla", "MHA / MLA", "ratio", lambda f: f.kv_cache.mha_over_mla,
         False),
        ("kv_cache", "kv.mla_at_context", f"MLA cache for {ctx:,} tokens", "bytes",
         lambda f: f.kv_cache.mla_at_context, False),
        ("kv_cache", "kv.total_at_context", f"KV cache for {ctx:,} tokens (with indexer keys)",
         "bytes", lambda f: f.kv_cache.total_at_context, False),
        ("attention", "attention.softmax_scale", "attention softmax scale", "scale",
         lambda f: f.attention.softmax_scale, True),
        ("attention", "attention.base_scale", "  qk_head_dim^-0.5", "scale",
         lambda f: f.attention.base_scale, False),
        ("attention", "attention.mscale_squared", "  YaRN mscale^2", "scale",
         lambda f: f.attention.mscale ** 2, False),
        ("compute", "flops.total", f"forward FLOPs per token ({ctx:,}-token context)", "flops",
         lambda f: f.flops.total_flops_per_token, True),
        ("compute", "flops.matmul", "  matmuls: 2 x activated matmul params", "flops",
         lambda f: f.flops.matmul_flops_per_token, False),
        ("compute", "flops.attention", f"  attention scores+values over {ctx:,} tokens", "flops",
         lambda f: f.flops.attention_flops_per_token, False),
        ("experts", "experts.per_token", "routed experts per token", "count",
         lambda f: f.experts.experts_per_token, True),
        ("experts", "experts.routed", "routed experts per MoE layer", "count",
         lambda f: f.experts.routed_experts, True),
        ("experts", "experts.shared", "shared experts", "count",
         lambda f: f.experts.shared_experts, False),
        ("experts", "experts.width", "expert width (moe_intermediate_size)", "count",
         lambda f: f.experts.expert_width, True),
        ("experts", "experts.shared_width", "shared-expert MLP width", "count",
         lambda f: f.experts.shared_width, False),
        ("experts", "experts.active_ffn_width", "active FFN width per MoE layer", "count",
         lambda f: f.experts.active_ffn_width, False),
        ("experts", "experts.groups", "expert groups", "count",
         lambda f: f.experts.expert_groups, False),
        ("experts", "experts.groups_per_token", "  groups kept per token", "count",
         lambda f: f.experts.groups_per_token, False),
        ("structure", "structure.layers", "decoder layers (main model)", "count",
         lambda f: f.experts.dense_layers + f.experts.moe_layers, False),
        ("structure", "structure.dense_layers", "dense layers", "count",
         lambda f: f.experts.dense_layers, False),
        ("structure", "structure.moe_layers", "MoE layers", "count",
         lambda f: f.experts.moe_layers, False),
        ("structure", "structure.mtp_layers", "MTP layers", "count",
         lambda f: f.experts.mtp_layers, False),
    ]
    comp = [
        ("embedding", "embedding"), ("lm_head", "lm_head"),
        ("attention_per_layer", "attention per layer (MLA)"),
        ("layer_norms_per_layer", "layer norms per layer"),
        ("dense_ffn_per_layer", "dense FFN per layer"), ("dense_layer", "dense layer, whole"),
        ("router_per_layer", "router per MoE layer"), ("routed_expert", "one routed expert"),
        ("routed_experts_per_layer", "routed experts per MoE layer"),
        ("shared_experts_per_layer", "shared experts per MoE layer"),
        ("moe_ffn_per_layer", "MoE FFN per layer"), ("moe_layer", "MoE layer, whole"),
    ]
    spec += [("components", f"components.{k}", label, "params",
              lambda f, k=k: getattr(f.components, k), False) for k, label in comp]
    if fa.sparse_attention or fb.sparse_attention:
        spec += diff_rows(fa.sparse_attention or fb.sparse_attention)
    for key in ("attention", "dense_mlp", "router", "routed_expert", "shared_expert", "norm"):
        spec.append(("components", f"components.total.{key}",
                     f"all {key.replace('_', ' ')} (model)", "params",
                     lambda f, key=key: f.parameters.by_component.get(key, 0), False))
    rows = [QuantityRow(key="structure.tensors", section="structure", label="tensors in the plan",
                        unit="count", a=plan_a, b=plan_b, ratio=_ratio(plan_a, plan_b))]
    for section, key, label, unit, get, headline in spec:
        a, b = get(fa), get(fb)
        rows.append(QuantityRow(key=key, section=section, label=label, unit=unit, a=a, b=b,
                                ratio=_ratio(a, b), headline=headline))
    return rows


def _ratio(a, b) -> float | None:
    return b / a if a and b is not None else None


# -- tensor plan by family -------------------------------------------------------------------
def _ranges(layers: list[int]) -> str:
    parts, start = [], None
    for i, x in enumerate(layers):
        if start is None:
            start = x
        if i + 1 == len(layers) or layers[i + 1] != x + 1:
            parts.append(str(start) if start == x else f"{start}-{x}")
            start = None
    return ", ".join(parts)


def _families(plan: TensorPlan) -> dict[str, FamilySide]:
    out = {}
    for family, groups in plan.families.items():
        g0 = groups[0]
        if g0.scale_of_family is not None:
            continue  # folded into its weight family
        scale = plan.families[g0.scale_family][0].shape if g0.scale_family else None
        main = sorted(g.layer for g in groups if g.layer is not None and not g.mtp)
        mtp = sorted(g.layer for g in groups if g.mtp)
        layers = ", ".join(p for p in (_ranges(main), f"MTP {_ranges(mtp)}" if mtp else "") if p)
        out[family] = FamilySide(shape=list(g0.shape), dtype=g0.dtype,
                                 scale_shape=list(scale) if scale else None,
                                 count=sum(g.count for g in groups), layers=layers,
                                 experts=g0.experts)
    return out


def _merged_order(a: list[str], b: list[str]) -> list[str]:
    """B's order, with families only in A placed after their predecessor in A."""
    out = list(b)
    for i, family in enumerate(a):
        if family not in out:
            prev = next((a[j] for j in range(i - 1, -1, -1) if a[j] in out), None)
            out.insert(out.index(prev) + 1 if prev is not None else 0, family)
    return out


def plan_diff(plan_a: TensorPlan, plan_b: TensorPlan) -> PlanDiff:
    """The two tensor plans compared family by family (scales folded into their weight)."""
    fa, fb = _families(plan_a), _families(plan_b)
    changes, unchanged = [], 0
    for family in _merged_order(list(fa), list(fb)):
        a, b = fa.get(family), fb.get(family)
        if a is None or b is None:
            changes.append(FamilyChange(family=family, status="added" if a is None else "removed",
                                        changes=[], a=a, b=b))
            continue
        kinds = [k for k, differs in (("shape", a.shape != b.shape),
                                      ("dtype", (a.dtype, a.scale_shape is None)
                                       != (b.dtype, b.scale_shape is None)),
                                      ("count", a.count != b.count)) if differs]
        if kinds:
            changes.append(FamilyChange(family=family, status="changed", changes=kinds, a=a, b=b))
        else:
            unchanged += 1
    return PlanDiff(layout_a=plan_a.layout, layout_b=plan_b.layout, tensors_a=len(plan_a),
                    tensors_b=len(plan_b), families_a=len(fa), families_b=len(fb),
                    unchanged=unchanged, dtype_policy_a=_policy(fa), dtype_policy_b=_policy(fb),
                    changes=changes)


def _policy(families: dict[str, FamilySide]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in families.values():
        key = f"{f.dtype}+scale" if f.scale_shape else f.dtype
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


# -- the report ------------------------------------------------------------------------------
def _side(src: ConfigSource, layout: str, attention: str | None) -> Side:
    return Side(spec=src.spec, kind=src.kind, label=src.label,
                title=src.preset.title if src.preset else None,
                model_type=src.config.model_type, layout=layout, reading=src.config.reading,
                attention=attention)


def _verdict(changes: list[FieldChange], plan: PlanDiff) -> Verdict:
    if not changes:
        return "identical_config"
    if not any(c.architectural for c in changes):
        return "same_architecture"
    if all(c.status == "changed" and c.changes == ["dtype"] for c in plan.changes):
        return "same_tensor_shapes"
    return "different_architecture"


_INDEXER_FAMILY = ".self_attn.indexer."
_INDEXER_FIELDS = frozenset({"model_type", "architectures", "index_n_heads", "index_head_dim",
                             "index_topk"})


def _indexer_only(changes: list[FieldChange], plan: PlanDiff) -> str | None:
    """'plus' / 'minus' when the two sides differ by V3.2's indexer alone, else None."""
    arch = {c.field.split(".")[0] for c in changes if c.architectural}
    if not plan.changes or not arch <= _INDEXER_FIELDS:
        return None
    if not all(_INDEXER_FAMILY in c.family for c in plan.changes):
        return None
    statuses = {c.status for c in plan.changes}
    return {frozenset({"added"}): "plus", frozenset({"removed"}): "minus"}.get(
        frozenset(statuses))


def _summary(changes: list[FieldChange], plan: PlanDiff, verdict: Verdict) -> str:
    arch = [c.field for c in changes if c.architectural]
    indexer = _indexer_only(changes, plan)
    if indexer is not None:
        families = len(plan.changes)
        verb = "adds" if indexer == "plus" else "drops"
        return (f"Same weights layout {indexer} the indexer: B {verb} "
                f"DeepSeek Sparse Attention's lightning indexer ({families} tensor families per "
                f"layer under self_attn.indexer); every other tensor family is identical")
    if verdict == "identical_config":
        return "Same architecture; configs identical"
    if verdict == "same_architecture":
        return "Same architecture; differences only in: " + ", ".join(c.field for c in changes)
    if verdict == "same_tensor_shapes":
        return "Same tensor shapes; the forward pass differs in: " + ", ".join(arch)
    counts: dict[str, int] = {}
    for c in changes:
        if c.architectural:
            counts[c.concern] = counts.get(c.concern, 0) + 1
    by = ", ".join(f"{_SHORT[k]} {n}" for k, n in counts.items())
    fams: dict[str, int] = {}
    for c in plan.changes:
        fams[c.status] = fams.get(c.status, 0) + 1
    tensors = ", ".join(f"{n} {k}" for k, n in fams.items())
    return (f"Different architecture: {len(arch)} architectural config fields differ ({by}); "
            f"tensor families: {tensors}")


def diff(a: str | Path, b: str | Path, *, values: bool = False, context: int = DEFAULT_CONTEXT,
         progress: Progress | None = None) -> DiffReport:
    """Compare two presets, config.json files or checkpoint directories.

    Args:
        a, b: each a preset name/alias, a config.json path or a checkpoint directory.
        values: also compare every common tensor numerically (both must be checkpoints).
        context: tokens attended to, for attention FLOPs and the KV-cache total.
        progress: receives bytes compared (values only).

    Returns:
        DiffReport (B relative to A: ratios are B / A). When a side's family has a `diff`
        hook (a comparison of its own, explained rather than field-matched), its quantities,
        explanations and attention words fill the report in place of `arch_figures`.

    Raises:
        ConfigError: an input is not a preset/config/checkpoint.
        ArgumentError: `values` without two checkpoint directories.
        FormatError, MissingTensorError: a broken checkpoint.
    """
    src_a, src_b = resolve_config(a, lenient=True), resolve_config(b, lenient=True)
    both = src_a.kind == src_b.kind == "checkpoint"
    if values and not both:
        kinds = f"A is a {src_a.kind}, B is a {src_b.kind}"
        raise ArgumentError(f"{ARGUMENT_PLACEHOLDER} compares tensor values: A and B must both "
                            f"be checkpoint directories ({kinds})", argument="values")
    cks = []
    try:
        for src in (src_a, src_b):
            if src.kind == "checkpoint":
                # numpy: only for checkpoint directories
                from ..inventory.checkpoint import Checkpoint

                cks.append(Checkpoint(src.path, src.config))
                cks[-1].prefetch_headers()  # a remote checkpoint: all headers in one round trip
            else:
                cks.append(None)
        ck_a, ck_b = cks
        # a checkpoint's plan is what its files hold (an upcast may keep a stale config);
        # a directory with a config.json but no weights is compared as a config
        weights = [ck is not None
                   and (ck.index_path is not None or (ck.dir / SINGLE_FILE).is_file())
                   for ck in cks]
        headers = header_diff(ck_a, ck_b) if all(weights) or values else None
        vals = value_diff(ck_a, ck_b, progress) if values else None
        plan_a, plan_b = (ck.plan if has else plan_for(src.config)
                          for ck, has, src in zip(cks, weights, (src_a, src_b)))
    finally:
        for ck in cks:
            if ck is not None:
                ck.close()
    plan = plan_diff(plan_a, plan_b)
    changes = config_changes(src_a.config, src_b.config)
    verdict = _verdict(changes, plan)
    # a family with a comparison of its own (explained, not field-matched) on either side
    own = next((f for f in (family_of(src_a.config), family_of(src_b.config))
                if f.has_hook("diff")), None)
    if own is not None:
        given: Comparison = own.hook("diff")(src_a, src_b, changes)
        fig_a = fig_b = routing = None
        quantities, explanations, attention = given.quantities, given.explanations, given.attention
        summary = given.summary or _summary(changes, plan, verdict)
    else:
        fig_a = arch_figures(src_a.config, context=context, plan=plan_a)
        fig_b = arch_figures(src_b.config, context=context, plan=plan_b)
        quantities = _rows(fig_a, fig_b, plan.tensors_a, plan.tensors_b)
        routing, explanations, attention = (fig_a.routing, fig_b.routing), [], (None, None)
        summary = _summary(changes, plan, verdict)
    return DiffReport(
        a=_side(src_a, plan_a.layout, attention[0]), b=_side(src_b, plan_b.layout, attention[1]),
        verdict=verdict, same_architecture=verdict in ("identical_config", "same_architecture"),
        summary=summary, context=context, config_changes=changes, quantities=quantities,
        explanations=explanations, routing=routing, plan=plan, figures_a=fig_a,
        figures_b=fig_b, headers=headers, values=vals)
