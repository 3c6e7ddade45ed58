"""Pydantic v2 models of the DeepSeek V2 / V2.5 / V3 / V3.2 `config.json`.

Lenient on what they do not know (unknown keys are kept and written back unchanged), strict
on what they do: choice fields are `Literal`s. The families derived from these declare their
own models in their registry modules (`families/`), as subclasses of these; `config`
parses a file into the model its family declares.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from .defaults import V2_NOAUX_TC_LOADERS
from .reading import ConfigReading
from ..formats import FP8_BLOCK

TopkMethod = Literal["greedy", "group_limited_greedy", "noaux_tc"]
ScoringFunc = Literal["softmax", "sigmoid"]


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


class DeepseekConfigBase(BaseModel):
    """What every MLA config of the table-driven families shares (V2 ... V3.2 and the families
    derived from them); `default_loader`: whose defaults a config built directly (not by
    `parse_config`) was read with."""

    default_loader: ClassVar[str] = "transformers DeepseekV2Config"
    # per-layer lists whose entries are layer indices, not kinds (Mistral Large 4's
    # kv_source_layers): a shrunk copy must map them, not repeat them (commands/tiny.py)
    layer_index_lists: ClassVar[tuple[str, ...]] = ()
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
    moe_layer_freq: int = Field(
        1, gt=0, description="Every k-th layer (after the dense ones) is MoE")
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
                                 loader=self.default_loader)
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
    def zero_experts(self) -> int:
        """Zero-computation expert slots the router scores beside the routed experts: a pick
        of one returns its input times its weight, and no tensor holds it (LongCat-Flash)."""
        return 0

    @property
    def router_slots(self) -> int:
        """The router's output width: routed experts plus zero-computation slots."""
        return self.n_routed_experts + self.zero_experts

    @property
    def latent_scales(self) -> tuple[float, float] | None:
        """Factors on the query and on the normed KV latent in MLA (None: none)."""
        return None

    @property
    def attention_blocks(self) -> int:
        """Attention blocks of the main model, each with its own KV cache (one per decoder
        layer; LongCat-Flash has two)."""
        return self.num_hidden_layers

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
    def renormalises_top_k(self) -> bool:
        """The chosen experts' weights are divided by their sum. transformers does so
        whenever norm_topk_prob, one expert chosen or more, in every router it implements
        on DeepSeek's (V3, V3.2, GLM, Mistral 4 and Large 4). DeepSeek's remote code does so
        only for more than one: kept for the routers that then skip the scaling (V2's
        softmax methods, which transformers' V2 does not renormalise at all), where with
        one expert it is also what transformers computes."""
        return self.norm_topk_prob and (self.num_experts_per_tok > 1
                                        or self.scales_renormalised_weights)

    @property
    def indexer_rope_interleaved(self) -> bool:
        """The DSA indexer rotates adjacent pairs (GLM-5), not V3.2's halves."""
        return False

    @property
    def routing_method(self) -> str:
        """The routing method as `diff` names it: the config's topk_method, unless the
        model's router reads none (Mistral 4)."""
        return self.topk_method

    @property
    def router_kind(self) -> str:
        """What the router does, as `info` shows it (the config's own routing keys)."""
        return f"{self.topk_method} / {self.scoring_func}"

    def rope_width(self, layer: int) -> int:
        """The rotary width of `layer`'s queries and keys (Mistral Large 4's NoPE layers: 0)."""
        return self.qk_rope_head_dim

    def owns_kv(self, layer: int) -> bool:
        """Whether `layer` computes and caches its own latent KV (else it attends to an
        earlier layer's, Mistral Large 4's KV sharing)."""
        return True

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

    @classmethod
    def file_keys(cls) -> dict[str, str]:
        """Common field -> the key this family's config.json spells it with, where they differ
        (LongCat-Flash: num_hidden_layers -> num_layers; transformers' attribute_map)."""
        return {name: f.alias for name, f in cls.model_fields.items()
                if f.alias is not None and f.alias != name}

    # -- round trip ------------------------------------------------------------------------
    def to_json_dict(self) -> dict[str, Any]:
        """The config as config.json keys; unknown keys come back unchanged."""
        data = self.model_dump(mode="json", exclude_unset=True, by_alias=True)
        original = self.reading.original_model_type
        if original and original != self.model_type and self.reading.layout != "inference":
            data["model_type"] = original  # a renamed derivative keeps its own name
        return data


class DeepseekV2Config(DeepseekConfigBase):
    """DeepSeek-V2, V2-Lite, V2-Chat, V2.5, V2.5-1210, Coder-V2 (`model_type: deepseek_v2`)."""

    model_type: Literal["deepseek_v2"]

    def routing_problems(self) -> list[str]:
        loader = self.reading.loader
        extra = ([f"topk_method: the {loader} router routes with greedy or "
                  f"group_limited_greedy only"]
                 if self.topk_method == "noaux_tc" and loader not in V2_NOAUX_TC_LOADERS else [])
        return extra + super().routing_problems()


class DeepseekV3Config(DeepseekConfigBase):
    """DeepSeek-V3, V3-Base, V3-0324, R1, R1-0528, V3.1 (`model_type: deepseek_v3`)."""

    model_type: Literal["deepseek_v3"]
    default_loader: ClassVar[str] = "transformers DeepseekV3Config"
    num_nextn_predict_layers: int = Field(
        ge=0, description="MTP modules stored after the main layers")


class DeepseekV32Config(DeepseekV3Config):
    """DeepSeek-V3.2-Exp, V3.2, V3.2-Speciale (`model_type: deepseek_v32`): V3 plus DeepSeek
    Sparse Attention, a lightning indexer per layer that picks `index_topk` earlier tokens
    for each query (docs/deepseek_v32.md)."""

    model_type: Literal["deepseek_v32"]  # type: ignore[assignment]
    default_loader: ClassVar[str] = "transformers DeepseekV32Config"
    # No pydantic defaults: absent keys get the loader's value (config_defaults).
    index_n_heads: int = Field(gt=0, description="Lightning-indexer heads (H_I)")
    index_head_dim: int = Field(gt=0, description="Lightning-indexer head width (d_I); "
                                "its first qk_rope_head_dim dims carry RoPE")
    index_topk: int = Field(gt=0, description="Keys each query attends to at most")
    # the indexer's query reads the hidden state, not MLA's compressed query (Mistral Large 4)
    indexer_query_from_hidden: ClassVar[bool] = False

    @property
    def has_indexer(self) -> bool:
        return True

    @model_validator(mode="after")
    def _indexer_rules(self):
        if self.q_lora_rank is None and not self.indexer_query_from_hidden:
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



def yarn_mscale(factor: float, mscale: float) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0

