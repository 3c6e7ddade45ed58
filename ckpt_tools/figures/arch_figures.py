"""Derived quantities of ONE DeepSeek config: parameters, bytes, KV cache, FLOPs, routing.

Every count comes from the tensor plan's groups (family x layer, a few thousand for V3),
never from its 92k expanded tensor specs, so the figures for V3 take milliseconds and need
no NumPy. Conventions (docs/architecture.md §6, §8):

- Parameters: FP8 `weight_scale_inv` elements are storage, not parameters; "activated"
  excludes the input embedding (DeepSeek's convention) and includes lm_head.
- KV cache: BF16 (2 bytes per element). MLA caches the compressed latent (kv_lora_rank)
  plus the shared decoupled RoPE key (qk_rope_head_dim) per token and layer; plain
  multi-head attention of the same shape would cache heads x (qk_head_dim + v_head_dim).
  Main-model layers only (the MTP module is a draft head, its cache is not counted).
- FLOPs per token: 2 x the matmul parameters one token touches (every 2-D weight of the
  main model except the embedding lookup; k of E routed experts), plus attention scores
  and values for one token attending to `context` earlier tokens: `attention_cost`'s
  figure (MLA absorbed as DeepSeek runs it; V3.2 with its indexer), the one every command
  shows.
- KV cache at `context`: `attention_cost`'s too (V3.2's indexer keys included).
"""

from collections import Counter
from typing import Literal

from pydantic import Field, computed_field

from ..configs.parse import Config, yarn_mscale
from .attention_cost import attention_flops, blocks_per_layer, kv_cache_bytes
from .dsa_figures import SparseAttentionFigures, sparse_attention_figures
from ..commands.info import ParameterSummary
from ..results import Result
from ..inventory.tensor_plan import Group, Layout, TensorPlan

DEFAULT_CONTEXT = 4096
KV_BYTES = 2  # BF16 cache entries



class ComponentFigures(Result):
    """Parameters per component; per-layer figures are for one layer of the main model."""

    embedding: int
    lm_head: int
    final_norm: int
    attention_per_layer: int = Field(description="MLA projections plus q_a/kv_a layernorms")
    layer_norms_per_layer: int = Field(description="input + post-attention RMSNorm")
    dense_ffn_per_layer: int | None = Field(description="None when no layer is dense")
    dense_layer: int | None = Field(description="attention + norms + dense FFN")
    router_per_layer: int = Field(description="gate weight, plus e_score_correction_bias if any")
    routed_expert: int = Field(description="One routed expert (gate, up, down projections)")
    routed_experts_per_layer: int
    shared_experts_per_layer: int
    moe_ffn_per_layer: int = Field(description="router + routed experts + shared experts")
    moe_layer: int = Field(description="attention + norms + MoE FFN")


class LayoutBytes(Result):
    layout: Layout
    native: bool = Field(description="True for the layout the config itself describes")
    tensors: int
    total_bytes: int
    bytes_by_dtype: dict[str, int]


class KvCacheFigures(Result):
    bytes_per_element: int
    layers: int = Field(description="Main-model attention blocks that hold a cache (one per "
                                    "decoder layer; two in LongCat-Flash's)")
    mla_per_token_per_layer: int = Field(description="(kv_lora_rank + qk_rope_head_dim) x bytes")
    mla_per_token: int
    mha_per_token_per_layer: int = Field(
        description="Plain MHA of the same shape: heads x (qk_head_dim + v_head_dim) x bytes")
    mha_per_token: int
    mha_over_mla: float
    context: int
    mla_at_context: int
    mha_at_context: int
    total_at_context: int = Field(description="Every element cached for `context` tokens "
                                  "(MLA, plus V3.2's indexer keys), BF16: the KV cache every "
                                  "command shows (attention_cost.kv_cache_bytes)")


class AttentionScale(Result):
    qk_head_dim: int
    base_scale: float = Field(description="qk_head_dim ** -0.5")
    yarn_factor: float | None
    mscale_all_dim: float | None
    mscale: float = Field(description="1 + 0.1 mscale_all_dim ln(factor), or 1 without YaRN")
    softmax_scale: float = Field(description="base_scale x mscale ** 2 (config.softmax_scale())")


class FlopFigures(Result):
    context: int
    matmul_params_per_token: int
    matmul_flops_per_token: int
    attention_flops_per_token: int
    total_flops_per_token: int
    convention: str


class ExpertFigures(Result):
    dense_layers: int
    moe_layers: int
    mtp_layers: int
    routed_experts: int
    shared_experts: int
    experts_per_token: int = Field(description="Routed experts per token (top-k)")
    expert_width: int = Field(description="moe_intermediate_size")
    shared_width: int = Field(description="n_shared_experts x moe_intermediate_size, one MLP")
    dense_width: int = Field(description="intermediate_size of the dense layers")
    active_ffn_width: int = Field(description="(top-k + shared) x expert width per MoE layer")
    expert_groups: int
    groups_per_token: int


class RoutingSemantics(Result):
    """How a MoE layer picks and weights experts (docs/architecture.md §6)."""

    topk_method: str
    scoring_func: Literal["softmax", "sigmoid"]
    group_rule: Literal["none", "group_max", "top2_sum"]
    uses_bias: bool
    top_k: int
    n_routed_experts: int
    normalised: bool
    routed_scaling_factor: float
    scaling_applied: Literal["after_normalisation", "on_raw_weights", "implementation_dependent"]
    scoring: str
    group_selection: str
    bias: str
    selection: str
    weights: str
    normalisation: str
    scaling: str
    notes: list[str]


class ArchFigures(Result):
    """Everything derived from one config (`ckpt diff` shows two side by side)."""

    model_type: str
    layout: Layout
    parameters: ParameterSummary = Field(description="Counts; by_component is the main model")
    components: ComponentFigures
    weights: list[LayoutBytes] = Field(description="Native layout first, then the other one")
    kv_cache: KvCacheFigures
    attention: AttentionScale
    flops: FlopFigures
    experts: ExpertFigures
    routing: RoutingSemantics
    sparse_attention: SparseAttentionFigures | None = Field(
        None, description="V3.2's lightning indexer (DeepSeek Sparse Attention); None without")

    @computed_field(description="Always true: figures are derived from a parsed config (a "
                                "config that cannot be parsed raises)")
    @property
    def ok(self) -> bool:
        return True


def _layer_components(groups: list[Group], layer: int | None) -> Counter[str]:
    out: Counter[str] = Counter()
    if layer is None:
        return out
    for g in groups:
        if g.layer == layer and not g.mtp and g.scale_of_family is None:
            out[g.component] += g.numel
    return out


def routing_semantics(c: Config) -> RoutingSemantics:
    """The router of `c`, derived from its fields (not from the model generation)."""
    E, k, G, TG = c.n_routed_experts, c.num_experts_per_tok, c.n_group, c.topk_group
    f = c.routed_scaling_factor
    softmax = c.scoring_func == "softmax"
    scoring = (f"softmax over all {E} experts (fp32)" if softmax
               else f"sigmoid of each of the {E} logits, independently (fp32)")
    if c.topk_method == "greedy" or G == 1:
        rule, groups = "none", f"none: top-{k} over all {E} experts"
    elif not c.groups_ranked_by_top2:  # V2's group_limited_greedy
        rule = "group_max"
        groups = (f"{G} groups of {E // G}, ranked by their best expert's score; "
                  f"keep {TG}, top-{k} among their {TG * E // G} experts")
    else:
        rule = "top2_sum"
        groups = (f"{G} groups of {E // G}, ranked by the sum of their 2 best "
                  f"{'biased ' if c.has_score_bias else ''}scores; "
                  f"keep {TG}, top-{k} among their {TG * E // G} experts")
    bias = c.has_score_bias
    bias_text = ("e_score_correction_bias [E] (F32) is added to the scores for group and expert "
                 "selection only" if bias else "none")
    selection = f"top-{k} of {E} by the {'biased ' if bias else ''}scores"
    weights = ("the chosen experts' unbiased sigmoid scores" if not softmax
               else "the chosen experts' softmax probabilities")
    normalised = c.renormalises_top_k
    notes: list[str] = []
    if normalised:
        normalisation = f"the {k} weights are divided by their sum (they sum to 1)"
    else:
        normalisation = ("none: raw top-k probabilities (they sum to less than 1)" if softmax
                         else "none: raw sigmoid scores")
    if not normalised:
        applied = "on_raw_weights"
        scaling = f"x{f:g} on the routed weights (raw scores); shared experts unscaled"
    elif not softmax or c.scales_renormalised_weights:  # sigmoid; Mistral 4's softmax router
        applied = "after_normalisation"
        scaling = f"x{f:g} on the routed weights, after normalisation; shared experts unscaled"
    else:
        # HF-V2-remote scales only in the else-branch of norm_topk_prob; DeepSeek's
        # inference/model.py never renormalises softmax weights and always scales.
        applied = "implementation_dependent"
        scaling = (f"x{f:g} skipped by the HF remote code when norm_topk_prob is true; "
                   f"DeepSeek's inference/model.py and native transformers apply it")
        notes.append("norm_topk_prob with softmax routing: implementations disagree "
                     "(no shipped V2 config sets it)")
    if f == 1.0:
        scaling = "x1 (no-op)"
    if rule == "top2_sum" and bias:  # unbiased softmax scores are never negative
        notes.append("masked groups: HF remote code fills 0.0, DeepSeek inference -inf "
                     "(differs only if biased scores go negative)")
    if bias:
        notes.append("HF remote code loaded in BF16 casts the F32 bias to BF16: "
                     "a source of routing ties between implementations")
    return RoutingSemantics(
        topk_method=c.routing_method, scoring_func=c.scoring_func, group_rule=rule, uses_bias=bias,
        top_k=k, n_routed_experts=E, normalised=normalised, routed_scaling_factor=f,
        scaling_applied=applied, scoring=scoring, group_selection=groups, bias=bias_text,
        selection=selection, weights=weights, normalisation=normalisation, scaling=scaling,
        notes=notes,
    )


def _layout_bytes(plan: TensorPlan, native: bool) -> LayoutBytes:
    return LayoutBytes(layout=plan.layout, native=native, tensors=len(plan),
                       total_bytes=plan.total_bytes,
                       bytes_by_dtype=dict(sorted(plan.bytes_by_dtype.items())))


def arch_figures(config: Config, *, layout: Layout | None = None,
                 context: int = DEFAULT_CONTEXT, plan: TensorPlan | None = None) -> ArchFigures:
    """Derived quantities of one config.

    Args:
        config: a parsed DeepSeek V2/V3 config.
        layout: storage layout to treat as native ("fp8"/"bf16"); default from the config.
        context: tokens attended to, for the attention FLOPs and the KV cache total.
        plan: the config's plan in `layout`, if the caller already built it.

    Returns:
        ArchFigures; all counts from `TensorPlan.groups`.
    """
    c = config
    plan = plan if plan is not None else TensorPlan(c, layout)
    other = TensorPlan(c, "bf16" if plan.layout == "fp8" else "fp8")
    p = plan.parameters
    n = c.num_hidden_layers
    dense_ids = [i for i in range(n) if not c.is_moe_layer(i)]
    moe_ids = [i for i in range(n) if c.is_moe_layer(i)]

    dense = _layer_components(plan.groups, dense_ids[0] if dense_ids else None)
    moe = _layer_components(plan.groups, moe_ids[0] if moe_ids else None)
    any_layer = dense or moe
    attention, norms = any_layer["attention"], any_layer["norm"]
    E, k, S, mI = (c.n_routed_experts, c.num_experts_per_tok, c.n_shared_experts,
                   c.moe_intermediate_size)
    routed_per_layer = moe["routed_expert"]
    moe_ffn = moe["router"] + routed_per_layer + moe["shared_expert"]
    beside_moe = moe["dense_mlp"]  # dense MLPs a MoE layer also holds (LongCat-Flash)
    comps = p.by_component
    components = ComponentFigures(
        embedding=comps.get("embedding", 0), lm_head=comps.get("lm_head", 0),
        final_norm=c.hidden_size,
        attention_per_layer=attention, layer_norms_per_layer=norms,
        dense_ffn_per_layer=dense["dense_mlp"] if dense_ids else None,
        dense_layer=attention + norms + dense["dense_mlp"] if dense_ids else None,
        router_per_layer=moe["router"], routed_expert=routed_per_layer // E if moe_ids else 0,
        routed_experts_per_layer=routed_per_layer, shared_experts_per_layer=moe["shared_expert"],
        moe_ffn_per_layer=moe_ffn,
        moe_layer=attention + norms + beside_moe + moe_ffn if moe_ids else 0,
    )

    kv_mla = (c.kv_lora_rank + c.qk_rope_head_dim) * KV_BYTES
    # layers that differ (NoPE: no rope part; KV-sharing: none of their own) count as they are
    # and each attention block keeps its own cache (LongCat-Flash: two per layer)
    kv_mla_all = sum(c.kv_lora_rank + c.rope_width(layer) for layer in range(n)
                     if c.owns_kv(layer)) * KV_BYTES * blocks_per_layer(c)
    kv_mha = c.num_attention_heads * (c.qk_head_dim + c.v_head_dim) * KV_BYTES
    blocks = c.attention_blocks
    kv = KvCacheFigures(
        bytes_per_element=KV_BYTES, layers=blocks, mla_per_token_per_layer=kv_mla,
        mla_per_token=kv_mla_all, mha_per_token_per_layer=kv_mha,
        mha_per_token=kv_mha * blocks, mha_over_mla=kv_mha / kv_mla, context=context,
        mla_at_context=kv_mla_all * context, mha_at_context=kv_mha * blocks * context,
        total_at_context=kv_cache_bytes(c, context),
    )

    rs = c.rope_scaling
    attn_scale = AttentionScale(
        qk_head_dim=c.qk_head_dim, base_scale=c.qk_head_dim ** -0.5,
        yarn_factor=rs.factor if rs else None, mscale_all_dim=rs.mscale_all_dim if rs else None,
        mscale=yarn_mscale(rs.factor, rs.mscale_all_dim) if rs and rs.mscale_all_dim else 1.0,
        softmax_scale=c.softmax_scale(),
    )

    matmul = 0
    for g in plan.groups:
        if (g.mtp or g.scale_of_family is not None or len(g.shape) != 2
                or g.component == "embedding"):
            continue
        matmul += g.numel * k // E if g.component == "routed_expert" else g.numel
    convention = ("2 x matmul parameters one token touches (main model, embedding lookup "
                  "excluded, top-k routed experts) + attention over "
                  f"{context} earlier tokens: 2 x heads x (2 kv_lora_rank + qk_rope_head_dim) "
                  "per attended entry (MLA absorbed, as DeepSeek runs it)"
                  + (f", min({context}, index_topk) entries + 2 x index_n_heads x "
                     f"(index_head_dim + 1) x {context} for the indexer" if c.has_indexer else "")
                  + "; MTP excluded")
    attn_flops = attention_flops(c, context)
    flops = FlopFigures(
        context=context, matmul_params_per_token=matmul, matmul_flops_per_token=2 * matmul,
        attention_flops_per_token=attn_flops, total_flops_per_token=2 * matmul + attn_flops,
        convention=convention,
    )

    experts = ExpertFigures(
        dense_layers=len(dense_ids), moe_layers=len(moe_ids), mtp_layers=c.num_mtp_layers,
        routed_experts=E, shared_experts=S, experts_per_token=k, expert_width=mI,
        shared_width=S * mI, dense_width=c.intermediate_size, active_ffn_width=(k + S) * mI,
        expert_groups=c.n_group, groups_per_token=c.topk_group,
    )
    return ArchFigures(
        model_type=c.model_type, layout=plan.layout,
        parameters=ParameterSummary(**{f: getattr(p, f) for f in ParameterSummary.model_fields}),
        components=components,
        weights=[_layout_bytes(plan, True), _layout_bytes(other, False)],
        kv_cache=kv, attention=attn_scale, flops=flops, experts=experts,
        routing=routing_semantics(c), sparse_attention=sparse_attention_figures(c, plan),
    )
