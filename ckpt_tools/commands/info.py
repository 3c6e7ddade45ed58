"""`ckpt info`: what a preset, config.json or checkpoint directory describes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, computed_field

from ..configs.layouts import ConfigReading
from ..figures.dsa_figures import SparseAttentionFigures, sparse_attention_figures
from ..io.dtypes import itemsize
from ..families import family_of
from ..results import Result
from ..configs.sources import resolve_config
from ..inventory.tensor_plan import TensorPlan, plan_for


class Provenance(Result):
    kind: Literal["verbatim", "reconstructed", "file"]
    source: str


class ArchitectureSummary(Result):
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    dense_layers: int
    moe_layers: int
    mtp_layers: int
    num_attention_heads: int
    q_lora_rank: int | None
    kv_lora_rank: int | None = None  # MLA (V2/V3); None for DeepSeek-V4's shared-KV MQA
    routed_experts: int
    shared_experts: int
    experts_per_token: int
    expert_groups: int
    groups_per_token: int
    router: str  # e.g. "noaux_tc / sigmoid"
    routed_scaling_factor: float
    vocab_size: int
    max_position_embeddings: int
    quantization: str | None
    weights_dtype: str = "BF16"  # what torch_dtype names (F16, F32, BF16), quantised or not
    # DeepSeek-V4 only
    head_dim: int | None = None
    attention_schedule: str | None = None  # e.g. "2 sliding, 21 CSA (ratio 4), 20 HCA (ratio 128)"
    hash_layers: int | None = None
    hyper_connection_streams: int | None = None
    expert_dtype: str | None = None


class ParameterSummary(Result):
    main: int
    activated: int
    activated_with_embedding: int
    mtp: int
    mtp_unique: int
    checkpoint: int
    scale_elements: int
    by_component: dict[str, int]
    buffers: int = Field(0, description="Of main: the routers' e_score_correction_bias, saved "
                                        "buffers in transformers, not nn.Parameters")
    activated_min: int | None = Field(None, description="Per token when every pick is a "
                                      "zero-computation expert (routers with such slots); "
                                      "`activated` is then the most")


class TensorSummary(Result):
    layout: str
    tensors: int
    total_bytes: int
    bytes_by_dtype: dict[str, int]


_UNITS = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


def activated_agrees(p, published: str) -> bool:
    """Whether the plan's activated figure is the published one; a range ("18.6B-31.3B",
    routers with zero-computation experts) is the fewest to the most."""
    low, dash, high = published.partition("-")
    if not dash:
        return rounds_to(p.activated, published)
    return p.activated_min is not None and rounds_to(p.activated_min, low) and rounds_to(
        p.activated, high)


def rounds_to(count: int, published: str) -> bool:
    """Whether a figure published as e.g. "1T", "32B", "15.7B" is `count` to the precision
    it was published with: rounded (V3: 36.63B -> "37B") or truncated (V2-Lite: 2.451B
    activated -> "2.4B"), never further off than one unit of its last digit."""
    number, unit = published[:-1], _UNITS[published[-1].upper()]
    step = unit / 10 ** len(number.partition(".")[2])
    value = float(number) * unit
    return abs(count - value) <= 0.5 * step or value <= count < value + step


class PublishedFigures(Result):
    """Parameter counts as the publisher gives them, and whether the plan's agree."""

    total: str
    activated: str | None = Field(description="None: the publisher gives only the total")
    source: str
    total_agrees: bool = Field(description="parameters.main rounds to `total`")
    activated_agrees: bool = Field(description="parameters.activated rounds to `activated` "
                                               "(true when none is published)")


class ComponentParameters(Result):
    """Parameters of one tensor-plan component: main model, activated per token, MTP."""

    component: str
    total: int = Field(description="Main model")
    activated: int = Field(description="Per token: k of E routed experts, no input embedding")
    mtp: int = Field(description="MTP modules")


class LayerBytes(Result):
    """Bytes of one stretch of the checkpoint, by component, in the plan's layout (FP8 scales
    count with the weight they scale)."""

    label: str = Field(description="'embedding', 'layer N', 'head' (final norm + lm_head) or "
                                   "'MTP N'")
    layer: int | None = Field(description="Decoder layer index; None for embedding and head")
    mtp: bool
    bytes_by_component: dict[str, int] = Field(description="Tensor-plan component -> bytes")


class ModelInfo(Result):
    """Everything `ckpt info` reports; `--json` prints exactly this."""

    source: str
    source_kind: Literal["preset", "config", "checkpoint"]
    title: str | None
    hf_repo: str | None
    provenance: Provenance
    reading: ConfigReading = Field(description="What was recognised and why, the loader whose "
                                   "defaults filled absent keys, and warnings")
    architecture: ArchitectureSummary
    parameters: ParameterSummary
    plan: TensorSummary  # what the config implies, in its own layout
    files: TensorSummary | None = None  # what a checkpoint directory holds (headers only)
    published: PublishedFigures | None = None  # presets: the publisher's figures, checked
    components: list[ComponentParameters] = Field(
        default_factory=list, description="Parameters by component (sums are `parameters`)")
    bytes_by_layer: list[LayerBytes] = Field(
        description="Where the plan's bytes live, in checkpoint order: embedding, each "
                    "decoder layer, head, MTP layers")
    sparse_attention: SparseAttentionFigures | None = None  # V3.2: the indexer's share

    @computed_field(description="Always true: describe raises on bad input")
    @property
    def ok(self) -> bool:
        return True


def component_parameters(plan: TensorPlan) -> list[ComponentParameters]:
    """Total / activated / MTP parameters per component, from the plan's groups (the plan's
    own counting: V4's packed FP4 bytes are two parameters, scales and tables none)."""
    count = getattr(plan, "parameters_of", None) or (
        lambda g: 0 if g.scale_of_family is not None else g.numel)
    c = plan.config
    k, experts = c.num_experts_per_tok, c.n_routed_experts
    rows: dict[str, list[int]] = {}
    for g in plan.groups:
        n = count(g)
        row = rows.setdefault(g.component, [0, 0, 0])
        if g.mtp:
            row[2] += n
            continue
        row[0] += n
        row[1] += (n * k // experts if g.component == "routed_expert"
                   else 0 if g.component == "embedding" else n)
    return [ComponentParameters(component=name, total=t, activated=a, mtp=m)
            for name, (t, a, m) in rows.items() if t or m]


def bytes_by_layer(plan: TensorPlan) -> list[LayerBytes]:
    """The plan's bytes per layer and component, from its groups (no tensor expansion)."""
    stretches: dict[tuple, dict[str, int]] = {}
    for g in plan.groups:
        if g.layer is not None:
            key = (f"{'MTP' if g.mtp else 'layer'} {g.layer}", g.layer, g.mtp)
        else:  # the globals: the embedding opens the checkpoint, norm and lm_head close it
            key = ("embedding" if g.component == "embedding" else "head", None, False)
        by_component = stretches.setdefault(key, {})
        by_component[g.component] = by_component.get(g.component, 0) + g.numel * itemsize(g.dtype)
    order = {"embedding": 0, "layer": 1, "head": 2, "MTP": 3}
    keys = sorted(stretches, key=lambda k: (order[k[0].split()[0]], k[1] or 0))
    return [LayerBytes(label=k[0], layer=k[1], mtp=k[2], bytes_by_component=stretches[k])
            for k in keys]


def describe(spec: str | Path) -> ModelInfo:
    """Summarise a preset name, config.json path or checkpoint directory."""
    src = resolve_config(spec, lenient=True)
    c = src.config
    plan = plan_for(c)
    qc = c.quantization_config
    quant = c.reading.quantization_scheme
    if qc is not None:
        quant = (f"{qc.quant_method} {qc.fmt} blocks "
                 f"{qc.weight_block_size[0]}x{qc.weight_block_size[1]}")
        quant += f", scale_fmt {qc.scale_fmt}" if qc.scale_fmt else ""
    arch = family_of(c).hook("summary")(c, plan, quant)
    arch = arch.model_copy(update={"weights_dtype": weights_dtype(c)})
    return _model_info(spec, src, arch, plan)


# torch_dtype / dtype values -> safetensors dtype names; absent means BF16 (every release)
_TORCH_DTYPES = {"bfloat16": "BF16", "float16": "F16", "half": "F16", "float32": "F32",
                 "float": "F32"}


def weights_dtype(c) -> str:
    """The unquantised weights' dtype the config names (torch_dtype; BF16 when absent)."""
    name = getattr(c, "torch_dtype", None) or getattr(c, "dtype", None) or "bfloat16"
    return _TORCH_DTYPES.get(str(name).removeprefix("torch."), str(name))


def summary(c, plan, quant: str | None) -> ArchitectureSummary:
    """The architecture of a table-planned family (MLA, dense then MoE layers)."""
    moe_layers = sum(c.is_moe_layer(i) for i in range(c.num_hidden_layers))
    return ArchitectureSummary(
        model_type=c.model_type, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
        dense_layers=c.num_hidden_layers - moe_layers, moe_layers=moe_layers,
        mtp_layers=c.num_mtp_layers, num_attention_heads=c.num_attention_heads,
        q_lora_rank=c.q_lora_rank, kv_lora_rank=c.kv_lora_rank, routed_experts=c.n_routed_experts,
        shared_experts=c.n_shared_experts, experts_per_token=c.num_experts_per_tok,
        expert_groups=c.n_group, groups_per_token=c.topk_group, router=c.router_kind,
        routed_scaling_factor=c.routed_scaling_factor,
        vocab_size=c.vocab_size, max_position_embeddings=c.max_position_embeddings,
        quantization=quant,
    )


def attention_schedule(c) -> str:
    """The main layers by compress ratio, e.g. "2 sliding, 21 CSA, 20 HCA" (DeepSeek-V4)."""
    ratios = c.compress_ratios[: c.num_hidden_layers]
    parts = [(ratios.count(0), "sliding-window only"), (ratios.count(4), "CSA (ratio 4)"),
             (ratios.count(128), "HCA (ratio 128)")]
    return ", ".join(f"{n} {label}" for n, label in parts if n)


def multi_stream_summary(c, plan, quant: str | None) -> ArchitectureSummary:
    """A family with hyper-connection streams, a compressed-attention schedule, hash-routed
    layers and a routed-expert format of its own (DeepSeek-V4's `summary` hook)."""
    quant = f"{quant}; routed experts {plan.expert_dtype}" if quant else None
    return ArchitectureSummary(
        model_type=c.model_type, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
        dense_layers=0, moe_layers=c.num_hidden_layers, mtp_layers=c.num_mtp_layers,
        num_attention_heads=c.num_attention_heads, q_lora_rank=c.q_lora_rank,
        routed_experts=c.n_routed_experts, shared_experts=c.n_shared_experts,
        experts_per_token=c.num_experts_per_tok, expert_groups=1, groups_per_token=1,
        router=f"{c.topk_method} / {c.scoring_func}", routed_scaling_factor=c.routed_scaling_factor,
        vocab_size=c.vocab_size, max_position_embeddings=c.max_position_embeddings,
        quantization=quant, head_dim=c.head_dim, attention_schedule=attention_schedule(c),
        hash_layers=min(c.num_hash_layers, c.num_hidden_layers), hyper_connection_streams=c.hc_mult,
        expert_dtype=plan.expert_dtype if c.is_fp8 else None,
    )


def _model_info(spec, src, arch: ArchitectureSummary, plan) -> ModelInfo:
    p = plan.parameters
    params = ParameterSummary(**{k: getattr(p, k) for k in ParameterSummary.model_fields})
    if src.preset is not None:
        prov = Provenance(kind=src.preset.provenance_kind, source=src.preset.provenance)
    else:
        prov = Provenance(kind="file", source=str(src.path))
    files = None
    if src.kind == "checkpoint":
        from ..inventory.checkpoint import Checkpoint

        with Checkpoint(src.path) as ck:
            by_dtype: dict[str, int] = {}
            count = 0
            ck.prefetch_headers()
            for shard in ck.shard_names:
                for e in ck.header(shard).entries.values():
                    by_dtype[e.dtype] = by_dtype.get(e.dtype, 0) + e.nbytes
                    count += 1
            files = TensorSummary(layout=ck.layout, tensors=count,
                                  total_bytes=sum(by_dtype.values()), bytes_by_dtype=by_dtype)
    published = None
    if src.preset is not None and src.preset.published:
        pub = dict(src.preset.published)
        published = PublishedFigures(
            total=pub["total"], activated=pub.get("activated"), source=pub["source"],
            total_agrees=rounds_to(p.main, pub["total"]),
            activated_agrees="activated" not in pub or activated_agrees(p, pub["activated"]))
    return ModelInfo(
        source=str(spec), source_kind=src.kind, published=published,
        title=src.preset.title if src.preset else None,
        hf_repo=src.preset.hf_repo if src.preset else None,
        provenance=prov, reading=src.config.reading, architecture=arch, parameters=params,
        plan=TensorSummary(layout=plan.layout, tensors=len(plan), total_bytes=plan.total_bytes,
                           bytes_by_dtype=plan.bytes_by_dtype),
        files=files, components=component_parameters(plan), bytes_by_layer=bytes_by_layer(plan),
        sparse_attention=(sparse_attention_figures(src.config, plan)
                          if getattr(src.config, "has_indexer", False) else None),
    )
