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

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .arch_figures import DEFAULT_CONTEXT, ArchFigures, RoutingSemantics, arch_figures
from .errors import ConfigError
from .index import SINGLE_FILE
from .progress import Progress
from .config_layouts import ConfigReading
from .sources import ConfigSource, resolve_config
from .tensor_diff import HeaderDiff, ValueDiff, header_diff, value_diff
from .tensor_plan import TensorPlan

_FROZEN = ConfigDict(extra="forbid", frozen=True)

Concern = Literal["model", "attention", "moe", "rope", "vocabulary", "quantization", "other"]
CONCERN_TITLES: dict[str, str] = {
    "model": "Model class, width and depth",
    "attention": "Attention / MLA",
    "moe": "MoE and routing",
    "rope": "RoPE / YaRN",
    "vocabulary": "Vocabulary",
    "quantization": "Quantization",
    "other": "Other",
}
_SHORT = {"model": "model", "attention": "MLA", "moe": "MoE", "rope": "RoPE",
          "vocabulary": "vocabulary", "quantization": "quantization", "other": "other"}
# Field -> concern, in display order; dotted keys are members of nested configs.
_CONCERN_OF: dict[str, Concern] = {
    **dict.fromkeys(["model_type", "architectures", "hidden_size", "intermediate_size",
                     "num_hidden_layers", "num_nextn_predict_layers", "hidden_act",
                     "rms_norm_eps"], "model"),
    **dict.fromkeys(["num_attention_heads", "num_key_value_heads", "q_lora_rank",
                     "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                     "attention_bias", "attention_dropout"], "attention"),
    **dict.fromkeys(["n_routed_experts", "n_shared_experts", "num_experts_per_tok",
                     "moe_intermediate_size", "first_k_dense_replace", "moe_layer_freq",
                     "scoring_func", "topk_method", "n_group", "topk_group", "norm_topk_prob",
                     "routed_scaling_factor", "aux_loss_alpha", "seq_aux", "ep_size"], "moe"),
    **dict.fromkeys(["max_position_embeddings", "rope_theta", "rope_scaling"], "rope"),
    **dict.fromkeys(["vocab_size", "bos_token_id", "eos_token_id", "pad_token_id",
                     "tie_word_embeddings"], "vocabulary"),
    **dict.fromkeys(["quantization_config", "torch_dtype"], "quantization"),
}
# Fields that change neither the tensors nor the forward pass: training-only knobs,
# tooling metadata, storage format, token ids.
_NOT_ARCHITECTURE = frozenset({
    "aux_loss_alpha", "seq_aux", "pretraining_tp", "transformers_version", "_name_or_path",
    "use_cache", "initializer_range", "attention_dropout", "torch_dtype", "ep_size", "auto_map",
    "quantization_config", "bos_token_id", "eos_token_id", "pad_token_id",
})
_TOPK_METHOD = {
    "greedy": "plain top-k over all experts",
    "group_limited_greedy": "group-limited routing: groups ranked by their best expert, "
                            "only topk_group groups eligible",
    "noaux_tc": "aux-loss-free balancing: bias used for expert selection only; groups "
                "ranked by their top-2 sum",
}
_SCORING = {"softmax": "softmax over all experts", "sigmoid": "independent sigmoid per expert"}
_TRAINING_ONLY = "training-only auxiliary balance loss; no effect on inference"
_MEANINGS: dict[str, str] = {
    "model_type": "model class (transformers deepseek_v2 vs deepseek_v3 code)",
    "architectures": "model class (transformers deepseek_v2 vs deepseek_v3 code)",
    "hidden_size": "model width",
    "intermediate_size": "width of the dense (first-k) MLPs",
    "num_hidden_layers": "decoder layers of the main model (MTP not counted)",
    "num_nextn_predict_layers": "multi-token-prediction modules stored after the main layers",
    "num_attention_heads": "attention heads (MLA: as many KV heads)",
    "kv_lora_rank": "compressed KV latent: what MLA caches per token",
    "qk_rope_head_dim": "decoupled RoPE key, cached per token and shared by all heads",
    "qk_nope_head_dim": "per-head query/key width without RoPE",
    "v_head_dim": "per-head value width",
    "n_routed_experts": "routed experts per MoE layer",
    "n_shared_experts": "always-on experts, one fused MLP of n_shared x moe_intermediate_size",
    "num_experts_per_tok": "routed experts per token (top-k)",
    "moe_intermediate_size": "width of one routed expert",
    "first_k_dense_replace": "leading layers with a dense MLP instead of MoE",
    "moe_layer_freq": "every k-th layer after the dense ones is MoE",
    "n_group": "expert groups; a token may only use experts of topk_group of them",
    "topk_group": "groups a token may route to (limits devices per token)",
    "routed_scaling_factor": "multiplier on the routed experts' weights (shared experts unscaled)",
    "aux_loss_alpha": _TRAINING_ONLY,
    "seq_aux": _TRAINING_ONLY,
    "ep_size": "expert-parallel size of the training run; no effect on the weights",
    "max_position_embeddings": "longest supported context",
    "rope_theta": "RoPE base",
    "rope_scaling.factor": "YaRN context extension factor",
    "rope_scaling.original_max_position_embeddings": "context length before YaRN extension",
    "rope_scaling.mscale_all_dim": "enters the softmax scale: x (1 + 0.1 mscale_all_dim ln factor)^2",
    "rope_scaling.mscale": "YaRN cos/sin magnitude; cancels while equal to mscale_all_dim",
    "vocab_size": "rows of embed_tokens and lm_head",
    "bos_token_id": "special token ids (another tokenizer)",
    "eos_token_id": "special token ids (another tokenizer)",
    "quantization_config.scale_fmt": "ue8m0: every block scale is a power of two",
    "quantization_config.weight_block_size": "rows x columns covered by one scale",
    "torch_dtype": "dtype of the unquantised tensors",
    "pretraining_tp": "training-only tensor-parallel degree; no effect on inference",
    "transformers_version": "tooling metadata; no effect on the weights",
    "auto_map": "remote-code classes",
    "rms_norm_eps": "RMSNorm epsilon",
}


class FieldChange(BaseModel):
    model_config = _FROZEN
    field: str = Field(description="config.json key; nested keys dotted (rope_scaling.factor)")
    concern: Concern
    status: Literal["changed", "added", "removed"]
    a: Any = None
    b: Any = None
    architectural: bool = Field(description="False for training-only, metadata and storage fields")
    meaning: str | None = None


class Side(BaseModel):
    model_config = _FROZEN
    spec: str
    kind: Literal["preset", "config", "checkpoint"]
    label: str
    title: str | None
    model_type: str
    layout: Literal["bf16", "fp8"]
    reading: ConfigReading = Field(description="What was recognised, defaults filled, what the "
                                   "layout leaves out, and warnings (inconsistencies)")


class QuantityRow(BaseModel):
    model_config = _FROZEN
    key: str
    section: Literal["structure", "parameters", "components", "weights", "kv_cache",
                     "attention", "compute", "experts"]
    label: str
    unit: Literal["count", "params", "bytes", "flops", "scale", "ratio"]
    a: int | float | None
    b: int | float | None
    ratio: float | None = Field(description="b / a when both are non-zero numbers")
    headline: bool = False


class FamilySide(BaseModel):
    model_config = _FROZEN
    shape: list[int]
    dtype: str
    scale_shape: list[int] | None = Field(description="weight_scale_inv shape of an FP8 family")
    count: int = Field(description="Tensors of this family")
    layers: str = Field(description="Layers holding it, e.g. '3-60, MTP 61'; '' for globals")
    experts: int | None = Field(description="Routed experts per layer for an expert family")


class FamilyChange(BaseModel):
    model_config = _FROZEN
    family: str
    status: Literal["added", "removed", "changed"]
    changes: list[Literal["shape", "dtype", "count"]]
    a: FamilySide | None
    b: FamilySide | None


class PlanDiff(BaseModel):
    model_config = _FROZEN
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


Verdict = Literal["identical_config", "same_architecture", "same_tensor_shapes",
                  "different_architecture"]


class DiffReport(BaseModel):
    """What `ckpt diff A B` reports; `--json` prints exactly this."""

    model_config = _FROZEN
    a: Side
    b: Side
    verdict: Verdict = Field(description="same_architecture: only training-only, metadata or "
                             "storage fields differ; same_tensor_shapes: the same tensors, but "
                             "the forward pass differs (e.g. the softmax scale)")
    same_architecture: bool = Field(description="verdict is identical_config or same_architecture")
    summary: str
    context: int = Field(description="Tokens attended to, for attention FLOPs and KV totals")
    config_changes: list[FieldChange]
    quantities: list[QuantityRow]
    routing: tuple[RoutingSemantics, RoutingSemantics]
    plan: PlanDiff
    figures_a: ArchFigures
    figures_b: ArchFigures
    headers: HeaderDiff | None = None
    values: ValueDiff | None = None


# -- config fields ---------------------------------------------------------------------------
def _flat(config) -> dict[str, Any]:
    """Effective values (defaults filled, unknown keys kept), nested configs dotted."""
    out: dict[str, Any] = {}
    for key, value in config.model_dump(mode="json", by_alias=True).items():
        if isinstance(value, dict) and key in ("rope_scaling", "quantization_config", "auto_map"):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _meaning(field: str, a: Any, b: Any) -> str | None:
    if field == "topk_method":
        return _TOPK_METHOD.get(b if b is not None else a)
    if field == "scoring_func" and a in _SCORING and b in _SCORING:
        return f"expert scores: {_SCORING[a]} -> {_SCORING[b]}"
    if field == "norm_topk_prob":
        return ("top-k weights renormalised to sum 1" if b else
                "top-k weights used as scored (no renormalisation)")
    if field == "q_lora_rank":
        if a is None or b is None:
            return (f"queries through a rank-{b} latent (q_a_proj, q_a_layernorm, q_b_proj) "
                    f"instead of one q_proj" if b is not None else
                    "one q_proj instead of a compressed query latent")
        return "query compression rank"
    if field == "quantization_config" or field.startswith("quantization_config."):
        if field == "quantization_config" or a is None or b is None:
            return (_MEANINGS.get(field) or
                    "weight storage: FP8 e4m3 + one F32 weight_scale_inv per block vs BF16 "
                    "(storage, not architecture)")
    if field.startswith("auto_map."):
        return _MEANINGS["auto_map"]
    return _MEANINGS.get(field)


def _concern(field: str) -> Concern:
    return _CONCERN_OF.get(field.split(".")[0], "other")


def config_changes(config_a, config_b) -> list[FieldChange]:
    """Changed, added and removed config fields, grouped by concern (display order)."""
    fa, fb = _flat(config_a), _flat(config_b)
    # a whole nested config present on one side only is one change, not one per member
    for key in ("quantization_config", "rope_scaling"):
        in_a = any(k.startswith(key + ".") for k in fa)
        in_b = any(k.startswith(key + ".") for k in fb)
        if in_a != in_b:
            for flat, raw in ((fa, config_a), (fb, config_b)):
                for k in [k for k in flat if k.startswith(key + ".")]:
                    del flat[k]
                value = getattr(raw, key, None)
                flat[key] = value.model_dump(mode="json", exclude_none=True) if value else None
    order = {f: i for i, f in enumerate(_CONCERN_OF)}
    concern_order = {c: i for i, c in enumerate(CONCERN_TITLES)}
    changes = []
    for key in set(fa) | set(fb):
        a, b = fa.get(key), fb.get(key)
        if a == b:
            continue
        status = "added" if a is None else "removed" if b is None else "changed"
        changes.append(FieldChange(
            field=key, concern=_concern(key), status=status, a=a, b=b,
            architectural=key.split(".")[0] not in _NOT_ARCHITECTURE, meaning=_meaning(key, a, b)))
    changes.sort(key=lambda c: (concern_order[c.concern], order.get(c.field.split(".")[0], 999),
                                c.field))
    return changes


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
        ("kv_cache", "kv.mha_over_mla", "MHA / MLA", "ratio", lambda f: f.kv_cache.mha_over_mla, False),
        ("kv_cache", "kv.mla_at_context", f"MLA cache for {ctx:,} tokens", "bytes",
         lambda f: f.kv_cache.mla_at_context, False),
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
        ("experts", "experts.shared", "shared experts", "count", lambda f: f.experts.shared_experts, False),
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
        ("structure", "structure.moe_layers", "MoE layers", "count", lambda f: f.experts.moe_layers, False),
        ("structure", "structure.mtp_layers", "MTP layers", "count", lambda f: f.experts.mtp_layers, False),
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
    for key in ("attention", "dense_mlp", "router", "routed_expert", "shared_expert", "norm"):
        spec.append(("components", f"components.total.{key}", f"all {key.replace('_', ' ')} (model)",
                     "params", lambda f, key=key: f.parameters.by_component.get(key, 0), False))
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
def _side(src: ConfigSource, layout: str) -> Side:
    return Side(spec=src.spec, kind=src.kind, label=src.label,
                title=src.preset.title if src.preset else None,
                model_type=src.config.model_type, layout=layout, reading=src.config.reading)


def _verdict(changes: list[FieldChange], plan: PlanDiff) -> Verdict:
    if not changes:
        return "identical_config"
    if not any(c.architectural for c in changes):
        return "same_architecture"
    if all(c.status == "changed" and c.changes == ["dtype"] for c in plan.changes):
        return "same_tensor_shapes"
    return "different_architecture"


def _summary(changes: list[FieldChange], plan: PlanDiff, verdict: Verdict) -> str:
    arch = [c.field for c in changes if c.architectural]
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
        DiffReport (B relative to A: ratios are B / A); `diff_v4.V4DiffReport` when a side
        is DeepSeek-V4.

    Raises:
        ConfigError: an input is not a preset/config/checkpoint, or --values without two
            checkpoint directories.
        FormatError, MissingTensorError: a broken checkpoint.
    """
    src_a, src_b = resolve_config(a, lenient=True), resolve_config(b, lenient=True)
    if "deepseek_v4" in (src_a.config.model_type, src_b.config.model_type):
        from .diff_v4 import diff_v4  # a new architecture: explained, not field-matched

        if values:
            raise ConfigError("--values is not available with DeepSeek-V4 yet; compare the "
                              "architectures without it")
        return diff_v4(a, b)
    both = src_a.kind == src_b.kind == "checkpoint"
    if values and not both:
        kinds = f"A is a {src_a.kind}, B is a {src_b.kind}"
        raise ConfigError(f"--values compares tensor values: A and B must both be checkpoint "
                          f"directories ({kinds})")
    cks = []
    try:
        for src in (src_a, src_b):
            if src.kind == "checkpoint":
                from .checkpoint import Checkpoint  # numpy: only for checkpoint directories

                cks.append(Checkpoint(src.path, src.config))
            else:
                cks.append(None)
        ck_a, ck_b = cks
        # a checkpoint's layout is what its files hold (an upcast may keep a stale config);
        # a directory with a config.json but no weights is compared as a config
        weights = [ck is not None and (ck.index_path is not None or (ck.dir / SINGLE_FILE).is_file())
                   for ck in cks]
        plan_a = TensorPlan(src_a.config, ck_a.layout if weights[0] else None)
        plan_b = TensorPlan(src_b.config, ck_b.layout if weights[1] else None)
        fig_a = arch_figures(src_a.config, context=context, plan=plan_a)
        fig_b = arch_figures(src_b.config, context=context, plan=plan_b)
        plan = plan_diff(plan_a, plan_b)
        changes = config_changes(src_a.config, src_b.config)
        verdict = _verdict(changes, plan)
        headers = header_diff(ck_a, ck_b) if all(weights) or values else None
        vals = value_diff(ck_a, ck_b, progress) if values else None
    finally:
        for ck in cks:
            if ck is not None:
                ck.close()
    return DiffReport(
        a=_side(src_a, fig_a.layout), b=_side(src_b, fig_b.layout), verdict=verdict,
        same_architecture=verdict in ("identical_config", "same_architecture"),
        summary=_summary(changes, plan, verdict), context=context, config_changes=changes,
        quantities=_rows(fig_a, fig_b, plan.tensors_a, plan.tensors_b),
        routing=(fig_a.routing, fig_b.routing), plan=plan, figures_a=fig_a, figures_b=fig_b,
        headers=headers, values=vals)
