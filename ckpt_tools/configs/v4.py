"""Pydantic model of the DeepSeek-V4 `config.json` (`model_type: deepseek_v4`).

Field names are the Hub's keys (`compress_ratios`, `num_hash_layers`, `qk_rope_head_dim`,
`rope_scaling`, ...), so `config.compress_ratios[i]` reads as in DeepSeek's own
`inference/model.py`. Configs written by transformers 5 (`layer_types`, `mlp_layer_types`,
`rope_parameters` with `main` / `compress`, `partial_rotary_factor`, `dtype`) are mapped
back onto those keys before validation. Facts and sources: docs/deepseek_v4.md.

Layouts of the V4 family that name or shape tensors differently are refused in one line:
the Flash-0731 / "DSpark" release (`dspark_*` keys, three MTP blocks) and the
`deepseek_v41` multimodal wrapper.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from .reading import ConfigReading
from ..errors import UnsupportedModelError
from ..formats import FP8_BLOCK as FP8_BLOCK_SHAPE

# compress_ratios entry -> transformers 5 `layer_types` name (and back)
RATIO_TO_LAYER_TYPE = {
    0: "sliding_attention",
    4: "compressed_sparse_attention",
    128: "heavily_compressed_attention",
}
LAYER_TYPE_TO_RATIO = {v: k for k, v in RATIO_TO_LAYER_TYPE.items()}
CSA_RATIO = 4  # compressed sparse attention: overlapping windows of 4, plus an indexer
HCA_RATIO = 128  # heavily compressed attention: windows of 128, no indexer

ExpertDtype = Literal["fp4", "fp8"]


class V4QuantizationConfig(BaseModel):
    """Dense weights: e4m3 with one E8M0 (`ue8m0`) scale per 128x128 block."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    quant_method: Literal["fp8"] = Field(description="DeepSeek block FP8 for the dense weights")
    fmt: Literal["e4m3"] = "e4m3"
    activation_scheme: Literal["dynamic", "static"] = "dynamic"
    weight_block_size: tuple[int, int] = Field(FP8_BLOCK_SHAPE, description="V4 ships 128x128 only")
    scale_fmt: Literal["ue8m0", "float"] | None = Field(
        None, description="'ue8m0': scales are stored as F8_E8M0 powers of two")
    expert_dtype: ExpertDtype | None = Field(
        None, description="Where transformers 5 moves the top-level expert_dtype")

    @model_validator(mode="after")
    def _block(self):
        if tuple(self.weight_block_size) != FP8_BLOCK_SHAPE:
            raise ValueError(f"weight_block_size: V4 stores 128x128 blocks, found "
                             f"{list(self.weight_block_size)}")
        return self


class V4RopeScaling(BaseModel):
    """YaRN of the compressed layers (the sliding-window branch uses plain RoPE)."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    type: Literal["yarn"]
    factor: float = Field(gt=0)
    original_max_position_embeddings: int = Field(gt=0)
    beta_fast: float = 32
    beta_slow: float = 1


class DeepseekV4Config(BaseModel):
    """DeepSeek-V4-Flash, V4-Pro (and their -Base) `config.json`, Hub spelling."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)

    model_type: Literal["deepseek_v4"]
    architectures: list[str] | None = None
    vocab_size: int = Field(gt=0)
    hidden_size: int = Field(gt=0, description="Model width D")
    moe_intermediate_size: int = Field(
        gt=0, description="Width of one routed (and the shared) expert")
    num_hidden_layers: int = Field(gt=0, description="Blocks of the main model (MTP excluded)")
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: Literal[1] = Field(1, description="Shared-KV MQA: one KV head")
    head_dim: int = Field(gt=0, description="Query/KV head width (512), RoPE on its last dims")
    qk_rope_head_dim: int = Field(gt=0, description="Rotary part at the end of each head")
    q_lora_rank: int = Field(gt=0)
    o_groups: int = Field(gt=0, description="Head groups of the grouped output projection")
    o_lora_rank: int = Field(gt=0, description="Per-group width of wo_a")
    n_routed_experts: int = Field(gt=0)
    n_shared_experts: Literal[1] = 1
    num_experts_per_tok: int = Field(gt=0)
    scoring_func: Literal["sqrtsoftplus", "sigmoid", "softmax"] = "sqrtsoftplus"
    topk_method: Literal["noaux_tc"] = "noaux_tc"
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 1.0
    swiglu_limit: float = Field(
        10.0, ge=0, description="Clamp of the routed experts' SwiGLU inputs")
    num_hash_layers: int = Field(0, ge=0, description="Leading layers routed by tid2eid[token]")
    index_n_heads: int = Field(gt=0)
    index_head_dim: int = Field(gt=0)
    index_topk: int = Field(gt=0)
    sliding_window: int = Field(gt=0)
    hc_mult: int = Field(gt=0, description="Residual streams of the hyper-connections")
    hc_sinkhorn_iters: int = Field(gt=0)
    hc_eps: float = Field(gt=0)
    rms_norm_eps: float = Field(1e-6, gt=0)
    rope_theta: float = Field(10000.0, gt=0)
    compress_rope_theta: float = Field(gt=0)
    rope_scaling: V4RopeScaling | None = None
    max_position_embeddings: int = Field(gt=0)
    num_nextn_predict_layers: int = Field(0, ge=0)
    compress_ratios: list[Literal[0, 4, 128]] = Field(
        description="Per block, main layers then MTP: 0 sliding only, 4 CSA, 128 HCA")
    expert_dtype: ExpertDtype | None = Field(
        None, description="Declared routed-expert format; absent in a published Pro config")
    quantization_config: V4QuantizationConfig | None = None
    tie_word_embeddings: Literal[False] = False
    torch_dtype: str | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    # How the file was read (config_layouts.ConfigReading; set by config.parse_config).
    _reading: Any = PrivateAttr(None)

    @property
    def reading(self):
        if self._reading is None:
            return ConfigReading(
                architecture="deepseek_v4", recognised_by="model_type deepseek_v4",
                original_model_type="deepseek_v4", layout="hub",
                loader="transformers DeepseekV4Config")
        return self._reading

    # -- derived ---------------------------------------------------------------------------
    @property
    def num_mtp_layers(self) -> int:
        return self.num_nextn_predict_layers

    @property
    def is_fp8(self) -> bool:
        return self.quantization_config is not None

    @property
    def declared_expert_dtype(self) -> ExpertDtype | None:
        qc = self.quantization_config
        return self.expert_dtype or (qc.expert_dtype if qc else None)

    def compress_ratio(self, block: int) -> int:
        """Ratio of main layer `block` (0..L-1) or MTP block L+j."""
        return self.compress_ratios[block]

    def is_hash_layer(self, block: int) -> bool:
        return block < min(self.num_hash_layers, self.num_hidden_layers)

    @property
    def layer_types(self) -> list[str]:
        """transformers 5's attention schedule of the main layers."""
        return [RATIO_TO_LAYER_TYPE[r] for r in self.compress_ratios[: self.num_hidden_layers]]

    @property
    def mlp_layer_types(self) -> list[str]:
        return ["hash_moe" if self.is_hash_layer(i) else "moe"
                for i in range(self.num_hidden_layers)]

    @property
    def hc_fn_rows(self) -> int:
        """Rows of an hc_{attn,ffn}_fn: hc pre weights + hc post weights + hc x hc mixing."""
        return (2 + self.hc_mult) * self.hc_mult

    @model_validator(mode="after")
    def _rules(self):
        want = self.num_hidden_layers + self.num_nextn_predict_layers
        if len(self.compress_ratios) != want:
            raise ValueError(f"compress_ratios: needs num_hidden_layers + num_nextn_predict_layers "
                             f"= {want} entries, found {len(self.compress_ratios)}")
        if self.num_hash_layers > self.num_hidden_layers:
            raise ValueError(f"num_hash_layers: {self.num_hash_layers} is more than "
                             f"num_hidden_layers {self.num_hidden_layers}")
        if self.qk_rope_head_dim > self.head_dim or self.qk_rope_head_dim % 2:
            raise ValueError(f"qk_rope_head_dim: must be even and at most head_dim "
                             f"{self.head_dim}, found {self.qk_rope_head_dim}")
        if (self.num_attention_heads * self.head_dim) % self.o_groups:
            raise ValueError(f"o_groups: {self.o_groups} does not divide heads x head_dim "
                             f"{self.num_attention_heads * self.head_dim}")
        if self.num_attention_heads % self.o_groups:
            raise ValueError(f"o_groups: {self.o_groups} does not divide num_attention_heads "
                             f"{self.num_attention_heads}")
        if self.num_experts_per_tok > self.n_routed_experts:
            raise ValueError(f"num_experts_per_tok: {self.num_experts_per_tok} is more than "
                             f"n_routed_experts {self.n_routed_experts}")
        return self

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)


V41_REFUSAL = ("DeepSeek V4.1 (deepseek_v41: text_config/vision_config wrapper, Engram tables, "
               "32x32 FP8 blocks) is a different layout and is not supported")


def refusal(raw: dict[str, Any]) -> str | None:
    """Why a V4-family config is a layout ckpt_tools does not handle, or None."""
    if raw.get("model_type") == "deepseek_v41" or "text_config" in raw:
        return V41_REFUSAL
    dspark = sorted(k for k in raw if k.startswith("dspark"))
    if dspark:
        return (f"DeepSeek-V4-Flash-0731 / DSpark layout ({dspark[0]} and other dspark_* keys: "
                f"3 MTP blocks with main_proj/confidence_head) is not supported; "
                f"only the V4-Flash / V4-Pro release layout is")
    return None


# Keys transformers 5 writes that `_from_transformers` maps onto the Hub spelling.
TRANSFORMERS_5_KEYS = frozenset({"layer_types", "compress_rates", "mlp_layer_types",
                                 "rope_parameters", "partial_rotary_factor", "dtype"})


def _from_transformers(raw: dict[str, Any]) -> dict[str, Any]:
    """Map the keys transformers 5 writes onto the Hub spelling (input left untouched)."""
    data = dict(raw)
    if "dtype" in data and "torch_dtype" not in data:
        data["torch_dtype"] = data.pop("dtype")
    n = data.get("num_hidden_layers")
    mtp = data.get("num_nextn_predict_layers", 0) or 0
    layer_types = data.pop("layer_types", None)
    rates = data.pop("compress_rates", None) or {}
    if layer_types is not None and "compress_ratios" not in data:
        to_ratio = {**LAYER_TYPE_TO_RATIO, **{k: v for k, v in rates.items()}}
        try:
            ratios = [to_ratio[t] for t in layer_types]
        except (KeyError, TypeError):
            raise ValueError(f"layer_types: entries must be one of {sorted(LAYER_TYPE_TO_RATIO)}, "
                             f"found {json.dumps(layer_types)}") from None
        # transformers keeps no entry for the MTP block; both releases make it sliding-only.
        data["compress_ratios"] = ratios + [0] * mtp
    mlp_types = data.pop("mlp_layer_types", None)
    if mlp_types is not None and "num_hash_layers" not in data:
        hashed = 0
        while hashed < len(mlp_types) and mlp_types[hashed] == "hash_moe":
            hashed += 1
        if any(t == "hash_moe" for t in mlp_types[hashed:]) or len(mlp_types) != n:
            raise ValueError(f"mlp_layer_types: hash_moe must be a leading run over all "
                             f"{n} layers, found {json.dumps(mlp_types)}")
        data["num_hash_layers"] = hashed
    params = data.pop("rope_parameters", None)
    if isinstance(params, dict) and isinstance(params.get("main"), dict):
        main, compress = params["main"], params.get("compress") or {}
        data.setdefault("rope_theta", main.get("rope_theta", 10000.0))
        data.setdefault("compress_rope_theta", compress.get("rope_theta", main.get("rope_theta")))
        prf = main.get("partial_rotary_factor", data.get("partial_rotary_factor"))
        if prf is not None and "qk_rope_head_dim" not in data and "head_dim" in data:
            data["qk_rope_head_dim"] = round(data["head_dim"] * prf)
        if compress.get("rope_type", compress.get("type")) == "yarn" and "rope_scaling" not in data:
            keep = ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow")
            data["rope_scaling"] = {"type": "yarn",
                                    **{k: compress[k] for k in keep if k in compress}}
    prf = data.pop("partial_rotary_factor", None)
    if prf is not None and "qk_rope_head_dim" not in data and "head_dim" in data:
        data["qk_rope_head_dim"] = round(data["head_dim"] * prf)
    return data


def parse_v4(raw: dict[str, Any]) -> DeepseekV4Config:
    """Validate a deepseek_v4 mapping (the caller turns errors into one line)."""
    why = refusal(raw)
    if why is not None:
        raise UnsupportedModelError(why)
    return DeepseekV4Config.model_validate(_from_transformers(raw))
