"""Pydantic v2 models of the DeepSeek V2 / V2.5 / V3 / V3.2 `config.json`, and `parse_config`.

Lenient on what it does not know (unknown keys are kept and written back unchanged; a key
within a small edit distance of a known one is a "did you mean" warning), strict on what it
does: choice fields are `Literal`s. `parse_config` recognises the architecture and layout
(`config_layouts`), fills absent keys with the defaults of the loader the file names
(`config_defaults`), validates, and turns any failure into one `ConfigError` line.

Describe before you judge: routing inconsistencies (top-k larger than the kept groups'
experts, groups not dividing experts, ...) are `ConfigReading.warnings` when parsed with
`lenient=True` (info, diff, validate) and a `ConfigError` naming the field otherwise (every
command that writes or computes from the config).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    model_serializer,
    model_validator,
)

from .config_defaults import V2_NOAUX_TC_LOADERS, loader_defaults
from .config_layouts import (
    FOREIGN_QUANT_KEYS,
    INFERENCE_LEAVES_OUT,
    QUANT_SCHEMES,
    REFUSED_MODEL_TYPES,
    SUPPORTED_MODEL_TYPES,
    WRAPPER_KEYS,
    ConfigReading,
    choose_loader,
    from_inference_layout,
    near_miss_warnings,
    recognise,
    variant_refusal,
)
from .errors import ConfigError, UnsupportedModelError
from .formats import FP8_BLOCK
from .remote.stores import as_path
from .v4.config import DeepseekV4Config, parse_v4

TopkMethod = Literal["greedy", "group_limited_greedy", "noaux_tc"]
ScoringFunc = Literal["softmax", "sigmoid"]

# Kept for callers of the old names; the tables live in config_layouts.
_REFUSED_MODEL_TYPES = REFUSED_MODEL_TYPES


class RopeScaling(BaseModel):
    """YaRN context extension, as in the hub configs (`rope_scaling`)."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    type: Literal["yarn"] = Field(description="RoPE scaling type; DeepSeek ships only YaRN")
    factor: float = Field(gt=0, description="Context extension factor (40 for every release)")
    original_max_position_embeddings: int = Field(gt=0, description="Pre-extension length (4096)")
    beta_fast: float = Field(32, description="YaRN high-frequency boundary (rotations)")
    beta_slow: float = Field(1, description="YaRN low-frequency boundary (rotations)")
    mscale: float = Field(1.0, description="YaRN magnitude scale of cos/sin")
    mscale_all_dim: float = Field(
        0.0, description="mscale used for the attention softmax scale (0 = none)"
    )




class Fp8QuantizationConfig(BaseModel):
    """DeepSeek's block FP8 format: e4m3 weights with one F32 scale per 128x128 block."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    quant_method: Literal["fp8"] = Field(description="Only DeepSeek-style block FP8 is supported")
    fmt: Literal["e4m3"] = Field("e4m3", description="float8_e4m3fn: max 448, no inf")
    activation_scheme: Literal["dynamic", "static"] = "dynamic"
    weight_block_size: tuple[int, int] = Field(
        FP8_BLOCK, description="Rows x columns covered by one weight_scale_inv entry"
    )
    scale_fmt: Literal["ue8m0", "float"] | None = Field(
        None, description="'ue8m0' (V3.1+): scales are powers of two"
    )

    @model_validator(mode="after")
    def _block_positive(self):
        if min(self.weight_block_size) <= 0:
            raise ValueError("weight_block_size must be two positive integers")
        return self


class _DeepseekCommon(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)

    architectures: list[str] | None = None
    vocab_size: int = Field(gt=0, description="Vocabulary size (rows of embed_tokens and lm_head)")
    hidden_size: int = Field(gt=0, description="Model width H")
    intermediate_size: int = Field(gt=0, description="Width of the dense (first-k) MLPs")
    moe_intermediate_size: int = Field(gt=0, description="Width of one routed expert")
    num_hidden_layers: int = Field(gt=0, description="Decoder layers of the main model (no MTP)")
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int | None = Field(None, description="Equal to the heads for MLA")
    n_shared_experts: int = Field(ge=0, description="Shared experts, fused into one MLP")
    n_routed_experts: int = Field(gt=0, description="Routed experts per MoE layer (E)")
    num_experts_per_tok: int = Field(gt=0, description="Routed experts per token (top-k)")
    routed_scaling_factor: float = Field(description="Multiplier on routed-expert weights")
    topk_method: TopkMethod
    scoring_func: ScoringFunc
    n_group: int = Field(gt=0, description="Expert groups for group-limited routing")
    topk_group: int = Field(gt=0, description="Groups kept per token")
    norm_topk_prob: bool = Field(description="Renormalise the top-k weights to sum 1")
    moe_layer_freq: int = Field(1, gt=0, description="Every k-th layer (after the dense ones) is MoE")
    first_k_dense_replace: int = Field(ge=0, description="Leading layers with a dense MLP")
    q_lora_rank: int | None = Field(
        description="Query compression rank; null = plain q_proj (V2-Lite)")
    kv_lora_rank: int = Field(gt=0, description="Width of the compressed KV latent")
    qk_nope_head_dim: int = Field(gt=0)
    qk_rope_head_dim: int = Field(gt=0, description="Decoupled RoPE key/query width (even)")
    v_head_dim: int = Field(gt=0)
    hidden_act: str = Field("silu", description="Expert/MLP activation (transformers ACT2FN "
                            "name); no tensor depends on it, only the forward")
    max_position_embeddings: int = Field(gt=0)
    rms_norm_eps: float = Field(1e-6, gt=0)
    rope_theta: float = Field(10000.0, gt=0)
    rope_scaling: RopeScaling | None = None
    tie_word_embeddings: bool = False
    attention_bias: Literal[False] = False
    torch_dtype: str | None = None
    quantization_config: Fp8QuantizationConfig | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    # How the file was read (architecture, layout, loader, defaults filled, warnings).
    _reading: ConfigReading | None = PrivateAttr(None)

    @property
    def reading(self) -> ConfigReading:
        if self._reading is None:
            mt = self.model_type
            return ConfigReading(architecture=mt, recognised_by=f"model_type {mt}",
                                 original_model_type=mt, layout="hub",
                                 loader=choose_loader({}, mt, "hub"))
        return self._reading

    # -- derived -------------------------------------------------------------------------
    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def num_mtp_layers(self) -> int:
        return getattr(self, "num_nextn_predict_layers", 0) or 0

    @property
    def has_indexer(self) -> bool:
        """DeepSeek Sparse Attention's lightning indexer (V3.2) in every layer."""
        return False

    @property
    def is_fp8(self) -> bool:
        return self.quantization_config is not None

    @property
    def has_score_bias(self) -> bool:
        """Only aux-loss-free routing carries `e_score_correction_bias`."""
        return self.topk_method == "noaux_tc"

    @property
    def groups_ranked_by_top2(self) -> bool:
        """Expert groups ranked by the sum of their two best scores (V3's noaux_tc), not by
        their best one (V2's group_limited_greedy)."""
        return self.topk_method == "noaux_tc"

    @property
    def scales_renormalised_weights(self) -> bool:
        """routed_scaling_factor applied also after renormalising the top-k weights."""
        return self.topk_method == "noaux_tc"

    @property
    def indexer_rope_interleaved(self) -> bool:
        """The DSA indexer rotates adjacent pairs (GLM-5), not V3.2's halves."""
        return False

    @property
    def router_kind(self) -> str:
        """What the router does, as `info` shows it (the config's own routing keys)."""
        return f"{self.topk_method} / {self.scoring_func}"

    def indexer_full(self, layer: int) -> bool:
        """Whether `layer` runs its own DSA indexer (else it reuses the previous full
        layer's selection, GLM-5's "shared" layers)."""
        return True

    def is_moe_layer(self, layer: int) -> bool:
        """Same rule as DeepSeek's modeling code; MTP layers (>= num_hidden_layers) are MoE."""
        if layer >= self.num_hidden_layers:
            return True
        return layer >= self.first_k_dense_replace and layer % self.moe_layer_freq == 0

    def softmax_scale(self) -> float:
        """qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)^2 under YaRN."""
        scale = self.qk_head_dim**-0.5
        rs = self.rope_scaling
        if rs is not None and rs.mscale_all_dim:
            m = yarn_mscale(rs.factor, rs.mscale_all_dim)
            scale *= m * m
        return scale

    # -- rules -----------------------------------------------------------------------------
    def routing_problems(self) -> list[str]:
        """Inconsistencies for routing or conversion, each 'field: what is wrong'. The
        config can still be described; nothing can be computed or written from it."""
        out = []
        E, G = self.n_routed_experts, self.n_group
        if E % G:
            out.append(f"n_group: {G} does not divide n_routed_experts {E}")
        if self.topk_group > G:
            out.append(f"topk_group: {self.topk_group} is larger than n_group {G}")
        reachable = E // G * min(self.topk_group, G) if self.topk_method != "greedy" else E
        if self.num_experts_per_tok > reachable:
            out.append(f"num_experts_per_tok: {self.num_experts_per_tok} is more than the "
                       f"{reachable} experts in the {self.topk_group} kept group(s)")
        if self.topk_method == "noaux_tc":
            if self.scoring_func != "sigmoid":
                out.append("scoring_func: noaux_tc routing needs 'sigmoid'")
            if E // G < 2:
                out.append("n_group: noaux_tc ranks groups by their top-2 sum, "
                           "so each group needs at least 2 experts")
        elif self.scoring_func != "softmax":
            out.append(f"scoring_func: topk_method {self.topk_method} needs 'softmax'")
        if self.first_k_dense_replace > self.num_hidden_layers:
            out.append(f"first_k_dense_replace: {self.first_k_dense_replace} is more than "
                       f"num_hidden_layers {self.num_hidden_layers}")
        kv = self.num_key_value_heads
        if kv is not None and kv != self.num_attention_heads:
            # MLA ignores it, but converters (and DeepSeek's own configs) keep the two equal
            out.append(f"num_key_value_heads: MLA needs it equal to num_attention_heads "
                       f"({self.num_attention_heads}), found {kv}")
        return out

    @model_validator(mode="after")
    def _cross_field_rules(self):
        """Rules without which not even the tensor plan can be drawn."""
        if self.qk_rope_head_dim % 2:
            raise ValueError(f"qk_rope_head_dim: must be even, found {self.qk_rope_head_dim}")
        if self.q_lora_rank is not None and self.q_lora_rank <= 0:
            raise ValueError("q_lora_rank: must be positive or null")
        return self

    # -- round trip ------------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        """The config as config.json keys; unknown keys come back unchanged."""
        data = self.model_dump(mode="json", exclude_unset=True, by_alias=True)
        original = self.reading.original_model_type
        if original and original != self.model_type and self.reading.layout != "inference":
            data["model_type"] = original  # a renamed derivative keeps its own name
        return data


class DeepseekV2Config(_DeepseekCommon):
    """DeepSeek-V2, V2-Lite, V2-Chat, V2.5, V2.5-1210, Coder-V2 (`model_type: deepseek_v2`)."""

    model_type: Literal["deepseek_v2"]

    def routing_problems(self) -> list[str]:
        loader = self.reading.loader
        extra = ([f"topk_method: the {loader} router routes with greedy or "
                  f"group_limited_greedy only"]
                 if self.topk_method == "noaux_tc" and loader not in V2_NOAUX_TC_LOADERS else [])
        return extra + super().routing_problems()


class DeepseekV3Config(_DeepseekCommon):
    """DeepSeek-V3, V3-Base, V3-0324, R1, R1-0528, V3.1 (`model_type: deepseek_v3`)."""

    model_type: Literal["deepseek_v3"]
    num_nextn_predict_layers: int = Field(
        ge=0, description="MTP modules stored after the main layers")


class DeepseekV32Config(DeepseekV3Config):
    """DeepSeek-V3.2-Exp, V3.2, V3.2-Speciale (`model_type: deepseek_v32`): V3 plus DeepSeek
    Sparse Attention, a lightning indexer per layer that picks `index_topk` earlier tokens
    for each query (docs/deepseek_v32.md)."""

    model_type: Literal["deepseek_v32"]  # type: ignore[assignment]
    # No pydantic defaults: absent keys get the loader's value (config_defaults).
    index_n_heads: int = Field(gt=0, description="Lightning-indexer heads (H_I)")
    index_head_dim: int = Field(gt=0, description="Lightning-indexer head width (d_I); "
                                "its first qk_rope_head_dim dims carry RoPE")
    index_topk: int = Field(gt=0, description="Keys each query attends to at most")

    @property
    def has_indexer(self) -> bool:
        return True

    @model_validator(mode="after")
    def _indexer_rules(self):
        if self.q_lora_rank is None:
            raise ValueError("q_lora_rank: deepseek_v32's indexer reads the compressed query, "
                             "so it cannot be null")
        if self.index_head_dim < self.qk_rope_head_dim:
            raise ValueError(f"index_head_dim: {self.index_head_dim} is smaller than the "
                             f"qk_rope_head_dim {self.qk_rope_head_dim} it rotates")
        # transformers 5 writes the dense/MoE pattern out; it must agree with ours
        types = getattr(self, "mlp_layer_types", None)
        if types is not None:
            want = ["sparse" if self.is_moe_layer(i) else "dense"
                    for i in range(self.num_hidden_layers)]
            if list(types) != want:
                raise ValueError(f"mlp_layer_types: disagrees with first_k_dense_replace "
                                 f"{self.first_k_dense_replace} / moe_layer_freq "
                                 f"{self.moe_layer_freq}")
        return self


class Glm4MoeLiteConfig(DeepseekV3Config):
    """GLM-4.7-Flash (`model_type: glm4_moe_lite`): DeepSeek-V3's MLA and noaux_tc MoE read by
    transformers' Glm4MoeLiteConfig, whose dense/MoE pattern is `mlp_layer_types` (default:
    layer 0 dense, then MoE), not `first_k_dense_replace` (docs/derived_families.md)."""

    model_type: Literal["glm4_moe_lite"]  # type: ignore[assignment]
    mlp_layer_types: list[Literal["dense", "sparse"]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _dense_layers_from_pattern(cls, data: Any) -> Any:
        # transformers ignores first_k_dense_replace here; the pattern (or its default)
        # decides, so the plan's dense prefix is read off it
        if isinstance(data, dict):
            types = data.get("mlp_layer_types")
            dense = 1 if types is None else next(
                (i for i, t in enumerate(types) if t != "dense"), len(types))
            data = {**data, "first_k_dense_replace": dense}
        return data

    @model_validator(mode="after")
    def _pattern_is_a_dense_prefix(self):
        types = self.mlp_layer_types
        if types is not None:
            want = ["dense"] * self.first_k_dense_replace + ["sparse"] * (
                self.num_hidden_layers - self.first_k_dense_replace)
            if list(types) != want:
                raise ValueError(f"mlp_layer_types: {len(types)} entries; ckpt_tools reads "
                                 f"{self.num_hidden_layers} layers of dense ones then sparse ones")
        return self


class GlmMoeDsaConfig(DeepseekV32Config):
    """GLM-5 (`model_type: glm_moe_dsa`): DeepSeek-V3.2 whose indexer runs only on "full"
    layers (`indexer_types`; "shared" layers reuse the previous full layer's selection) and
    rotates adjacent pairs (docs/derived_families.md)."""

    model_type: Literal["glm_moe_dsa"]  # type: ignore[assignment]
    indexer_types: list[Literal["full", "shared"]] | None = None
    index_topk_pattern: str | list[str] | None = None
    index_topk_freq: int = Field(1, ge=1)
    index_skip_topk_offset: int = 2

    @property
    def indexer_rope_interleaved(self) -> bool:
        return True

    @property
    def layer_indexers(self) -> list[str]:
        """transformers' GlmMoeDsaConfig.__post_init__: the list, else the pattern, else the
        freq/offset schedule (every layer "full" by default)."""
        if self.indexer_types is not None:
            return list(self.indexer_types)
        if self.index_topk_pattern is not None:
            pattern = self.index_topk_pattern
            return ([{"F": "full", "S": "shared"}[c] for c in pattern]
                    if isinstance(pattern, str) else list(pattern))
        freq, offset = self.index_topk_freq, self.index_skip_topk_offset
        return ["full" if max(i - offset + 1, 0) % freq == 0 else "shared"
                for i in range(self.num_hidden_layers)]

    def indexer_full(self, layer: int) -> bool:
        return layer >= self.num_hidden_layers or self.layer_indexers[layer] == "full"

    @model_validator(mode="after")
    def _indexer_pattern(self):
        kinds = self.layer_indexers
        if len(kinds) != self.num_hidden_layers or set(kinds) - {"full", "shared"}:
            raise ValueError(f"indexer_types: needs 'full' or 'shared' for each of the "
                             f"{self.num_hidden_layers} layers")
        if kinds and kinds[0] != "full":
            raise ValueError("indexer_types: layer 0 is 'shared', but no earlier layer runs "
                             "an indexer whose selection it could reuse")
        return self


class Mistral4Config(_DeepseekCommon):
    """Mistral 4 (`model_type: mistral4`): DeepSeek-V3's MLA and experts (fused per layer in
    transformers' names), a softmax router with V3's group ranking and scaling and no bias,
    and Llama-4 query scaling by position (docs/derived_families.md)."""

    model_type: Literal["mistral4"]

    @model_validator(mode="before")
    @classmethod
    def _router_is_fixed_by_the_model(cls, data: Any) -> Any:
        # Mistral4TopkRouter reads neither key; a file's value would describe another router
        if not isinstance(data, dict):
            return data
        data = {**data, "topk_method": "group_limited_greedy", "scoring_func": "softmax"}
        rs = data.get("rope_scaling")
        if isinstance(rs, dict) and "partial_rotary_factor" in rs:
            # transformers' default is qk_rope / (qk_nope + qk_rope); another value rotates a
            # width that is not qk_rope_head_dim (its forward fails), so it is derived here
            rs = dict(rs)
            factor = rs.pop("partial_rotary_factor")
            rope, nope = data.get("qk_rope_head_dim"), data.get("qk_nope_head_dim")
            if isinstance(rope, int) and isinstance(nope, int) and rope + nope and (
                    abs(factor * (rope + nope) - rope) > 1e-6):
                raise ValueError(f"rope_parameters: partial_rotary_factor {factor} rotates "
                                 f"{factor * (rope + nope):g} dims of each head, but "
                                 f"qk_rope_head_dim is {rope}")
            data["rope_scaling"] = rs
        return data

    @model_serializer(mode="wrap")
    def _spell_partial_rotary_factor(self, handler):
        # written out as transformers does: its config drops the default when rope
        # parameters come from a file, and then rotates the whole head
        data = handler(self)
        if isinstance(data.get("rope_scaling"), dict):
            data["rope_scaling"]["partial_rotary_factor"] = (
                self.qk_rope_head_dim / self.qk_head_dim)
        return data

    @property
    def groups_ranked_by_top2(self) -> bool:
        return True

    @property
    def scales_renormalised_weights(self) -> bool:
        return True

    @property
    def router_kind(self) -> str:
        # Mistral4TopkRouter reads neither topk_method nor scoring_func (the forced values
        # above only place it in the V2/V3 vocabulary): softmax over experts, groups by the
        # sum of their two best scores (V3's rule, not group_limited_greedy's best one),
        # no score-correction bias, then norm_topk_prob and routed_scaling_factor
        norm = "renormalised, " if self.norm_topk_prob else ""
        return f"softmax top-k, groups ranked by top-2 sum, {norm}no bias (Mistral4TopkRouter)"


DeepseekConfig = Annotated[
    Union[DeepseekV2Config, DeepseekV3Config, DeepseekV32Config, Glm4MoeLiteConfig,
          Mistral4Config, GlmMoeDsaConfig],
    Field(discriminator="model_type"),
]
# model_type -> its model: parsing builds only the one validator it needs (building the
# union's at import was a quarter of `ckpt info`'s start-up)
_MODELS = {"deepseek_v2": DeepseekV2Config, "deepseek_v3": DeepseekV3Config,
           "deepseek_v32": DeepseekV32Config, "glm4_moe_lite": Glm4MoeLiteConfig,
           "mistral4": Mistral4Config, "glm_moe_dsa": GlmMoeDsaConfig}


# Every config ckpt_tools understands; annotate with this, test with isinstance(x, Config).
Config = (DeepseekV2Config | DeepseekV3Config | DeepseekV32Config | Glm4MoeLiteConfig
          | Mistral4Config | GlmMoeDsaConfig)


def yarn_mscale(factor: float, mscale: float) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def _normalise_transformers_v5(raw: dict[str, Any]) -> dict[str, Any]:
    """Map the keys transformers v5 writes onto the hub spelling (input left untouched)."""
    data = dict(raw)
    if "dtype" in data and "torch_dtype" not in data:
        data["torch_dtype"] = data.pop("dtype")
    params = data.get("rope_parameters")
    if isinstance(params, dict) and "rope_scaling" not in data:
        params = dict(params)
        data.pop("rope_parameters")
        if "rope_theta" in params:
            data.setdefault("rope_theta", params.pop("rope_theta"))
        rope_type = params.pop("rope_type", params.pop("type", "default"))
        data["rope_scaling"] = None if rope_type == "default" else {"type": rope_type, **params}
    elif isinstance(data.get("rope_scaling"), dict) and "rope_type" in data["rope_scaling"]:
        rs = dict(data["rope_scaling"])
        rs.setdefault("type", rs.pop("rope_type"))
        data["rope_scaling"] = rs
    for derived in ("head_dim", "qk_head_dim", "rope_interleave"):
        data.pop(derived, None)
    return data


def _one_line(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if p not in SUPPORTED_MODEL_TYPES)
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    if first["type"] == "missing":
        return f"{source}: field '{loc}': required field is missing{more}"
    if first["type"] == "value_error" and not loc:
        # cross-field rules put the field name first: "n_group: ..."
        field, _, rest = msg.partition(": ")
        return f"{source}: field '{field}': {rest}{more}"
    found = first.get("input")
    found_s = "" if isinstance(found, dict) else f", found {json.dumps(found, default=str)}"
    return f"{source}: field '{loc}': {msg}{found_s}{more}"


def _fill_loader_defaults(data: dict[str, Any], reading: ConfigReading, source: str) -> None:
    """Absent keys get the loader's value; nulls the loader tolerates get what it does with
    them. Records every filled key in `reading.defaulted`."""
    for key, value in loader_defaults(reading.loader).items():
        if key not in data:
            data[key] = value
            reading.defaulted[key] = value
    greedy = data.get("topk_method") == "greedy"
    for key in ("n_group", "topk_group"):
        if data.get(key) is None and greedy:
            data[key] = 1  # greedy routing never reads the groups
            reading.defaulted[key] = 1
    if data.get("n_shared_experts", 0) is None:
        data["n_shared_experts"] = 0  # the remote code builds no shared MLP for null
        reading.defaulted["n_shared_experts"] = 0
    for key, why in (("num_experts_per_tok", "routing needs a top-k"),
                     ("n_routed_experts", "null means a dense model; ckpt_tools reads MoE models"),
                     ("n_group", f"topk_method {data.get('topk_method')} needs expert groups"),
                     ("topk_group", f"topk_method {data.get('topk_method')} needs expert groups")):
        if data.get(key, 0) is None:
            dflt = " (the loader's default)" if key in reading.defaulted else ""
            raise ConfigError(f"{source}: field '{key}': null{dflt}, but {why}; "
                              f"set it ({reading.loader})")


def _split_quantization(data: dict[str, Any], reading: ConfigReading) -> None:
    """Name a quantisation scheme other than DeepSeek's block FP8 and describe the model
    without it (its dtypes come from the headers)."""
    qc = data.get("quantization_config")
    if not isinstance(qc, dict):
        for key, who in FOREIGN_QUANT_KEYS.items():  # declared outside quantization_config
            if data.get(key) not in (None, False):
                reading.quantization_scheme = f"{who} {data[key]} (key '{key}')"
        return
    method = qc.get("quant_method")
    if method == "fp8" and qc.get("fmt", "e4m3") == "e4m3" and "weight_block_size" in qc:
        return
    algo = qc.get("quant_algo") or qc.get("format") or qc.get("bits") or qc.get("dtype")
    name = QUANT_SCHEMES.get(method, f"quant_method {json.dumps(method)}")
    if method == "fp8":
        name = "FP8 without DeepSeek's 128x128 weight blocks"
    reading.quantization_scheme = name + (f" ({algo})" if algo and method != "fp8" else "")
    data.pop("quantization_config")


def parse_config(raw: Any, *, source: str = "config",
                 lenient: bool = False) -> Config:
    """Validate a config.json mapping, in any layout `config_layouts` recognises.

    Args:
        raw: the parsed JSON.
        source: named first in every error.
        lenient: keep routing inconsistencies and foreign quantisation schemes as
            `config.reading.warnings` instead of raising (describe before you judge).

    Raises:
        UnsupportedModelError: another architecture, or a DeepSeek one not handled yet.
        ConfigError: anything else, in one line naming the field.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a JSON object, found {type(raw).__name__}")
    family, why, layout, wrapper_key = recognise(raw, source)
    if family == "deepseek_v4":
        return _parse_v4(raw, source, why, layout)
    outer = raw
    outside: list[str] = []
    if wrapper_key is not None:
        raw = outer[wrapper_key]
        outside = sorted(k for k, v in outer.items() if k != wrapper_key and isinstance(v, dict)
                         and k.endswith("_config") and k != "quantization_config")
    data = from_inference_layout(raw) if layout == "inference" else _normalise_transformers_v5(raw)
    if wrapper_key is not None and "quantization_config" not in data:
        if "quantization_config" in outer:  # declared by the wrapper for its language model
            data["quantization_config"] = outer["quantization_config"]
    data["model_type"] = family
    reading = ConfigReading(
        architecture=family, recognised_by=why, original_model_type=raw.get("model_type"),
        layout=layout, loader=choose_loader(raw, family, layout,
                                            wrapper=outer if wrapper_key else None),
        wrapper_key=wrapper_key,
        tensor_prefix=WRAPPER_KEYS[wrapper_key] if wrapper_key else "", outside_plan=outside,
        wrapper_model_type=outer.get("model_type") if wrapper_key else None,
        leaves_out=list(INFERENCE_LEAVES_OUT) if layout == "inference" else [],
        warnings=near_miss_warnings(raw, family, layout),
    )
    _fill_loader_defaults(data, reading, source)
    refusal = variant_refusal(data)
    if refusal is not None:
        where = f"{wrapper_key} of model_type {outer.get('model_type')}: " if wrapper_key else ""
        raise UnsupportedModelError(f"{source}: {where}{refusal}")
    declared = ("quantization_config is" if isinstance(data.get("quantization_config"), dict)
                else "quantised as")
    _split_quantization(data, reading)
    try:
        config = _MODELS[family].model_validate(data)
    except ValidationError as e:
        raise ConfigError(_one_line(e, source)) from e
    config._reading = reading  # the routing rules depend on the loader
    problems = config.routing_problems()
    if not lenient:
        if problems:
            field, _, rest = problems[0].partition(": ")
            raise ConfigError(f"{source}: field '{field}': {rest}")
        if reading.quantization_scheme:
            raise UnsupportedModelError(
                f"{source}: {declared} {reading.quantization_scheme}; this command "
                f"needs DeepSeek's block FP8 (quant_method fp8, 128x128 blocks) or BF16")
    reading.inconsistencies.extend(problems)
    config.__pydantic_fields_set__.difference_update(reading.defaulted)
    config._reading = reading
    return config


def _parse_v4(raw: dict[str, Any], source: str, why: str, layout) -> DeepseekV4Config:
    # V4 is its own model (v4/config.py), outside the V2/V3 discriminated union
    try:
        config = parse_v4(raw)
    except UnsupportedModelError as e:
        raise UnsupportedModelError(f"{source}: {e}") from None
    except ValidationError as e:
        raise ConfigError(_one_line(e, source)) from e
    except ValueError as e:
        raise ConfigError(f"{source}: field '{str(e).partition(': ')[0]}': "
                          f"{str(e).partition(': ')[2]}") from e
    config._reading = ConfigReading(
        architecture="deepseek_v4", recognised_by=why, original_model_type=raw.get("model_type"),
        layout=layout, loader=choose_loader(raw, "deepseek_v4", layout),
        warnings=near_miss_warnings(raw, "deepseek_v4", layout))
    return config


def read_config_file(path: str | Path, *,
                     lenient: bool = False) -> Config:
    """Parse a config.json file, local or remote (ConfigError naming the file when unreadable
    or invalid); `lenient` as in `parse_config`."""
    path = as_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    hf_quant = path.with_name(HF_QUANT_CONFIG_FILE)
    if isinstance(raw, dict) and "quantization_config" not in raw and hf_quant.is_file():
        raw = dict(raw, quantization_config=_modelopt_quantization(hf_quant))
    return parse_config(raw, source=str(path), lenient=lenient)


HF_QUANT_CONFIG_FILE = "hf_quant_config.json"  # NVIDIA ModelOpt exports (NVFP4, FP8 per-tensor)


def _modelopt_quantization(path: Path) -> dict[str, Any]:
    """The quantisation a ModelOpt export declares beside config.json, as a quantization_config."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from e
    quant = data.get("quantization") if isinstance(data, dict) else None
    return {"quant_method": "modelopt", **(quant if isinstance(quant, dict) else {})}


def config_json_schema() -> dict[str, Any]:
    return TypeAdapter(DeepseekConfig).json_schema()
