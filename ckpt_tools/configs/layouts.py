"""Which architecture a config.json describes, in which layout, and for which loader.

DeepSeek-architecture configs come in several spellings of the same model:

- hub configs with DeepSeek's remote code (`auto_map` -> `configuration_deepseek.py`), in the
  early layout (`aux_loss_alpha`, `seq_aux`, `pretraining_tp`, `ep_size`) or the later one;
- configs written by transformers 5 `save_pretrained` (`rope_parameters`, `dtype`, nulls for
  unused routing groups, no `scoring_func`);
- renamed fine-tunes and derivatives (`model_type: kimi_k2`) whose `architectures` or
  `auto_map` still name DeepSeek's V2/V3 classes;
- wrappers whose `text_config` / `language_config` is such a model (Kimi-K2.5, DeepSeek-VL2),
  or whose own code builds a DeepSeek config class from it whatever it names (Kimi-VL's
  `text_config` names no model_type, architectures or auto_map);
- DeepSeek's own inference configs (`dim`, `inter_dim`, `n_layers`, ... for `generate.py`).

`read_layout` recognises which, says why, and returns the HF-spelled mapping that the
pydantic models validate. Recognition goes by what the loader would instantiate, not by the
`model_type` string alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .defaults import CLASS_DEFAULTS, IMPLIED, LoaderName
from .reading import ConfigReading, Family, LayoutName  # noqa: F401  (re-exported)
from ..errors import CkptError, UnsupportedModelError
from ..families import DEFAULT, FAMILIES, family_named
from ..families import Family as FamilyEntry
from ..formats import FP8_BLOCK
from .v4 import TRANSFORMERS_5_KEYS, V41_REFUSAL, DeepseekV4Config
from ..io.index import CONFIG_FILE

# Recognition is the registry's: each family declares its model_types and model classes
# (families/), and a derived family the loader whose defaults it gets.
SUPPORTED_MODEL_TYPES: tuple[Family, ...] = tuple(
    t for family in FAMILIES.values() for t in family.model_types)

# Architectures we recognise but refuse, with the reason a user needs.
REFUSED_MODEL_TYPES = {
    "deepseek_v41": V41_REFUSAL,
    "deepseek": "DeepSeek-MoE v1 (model_type 'deepseek') has no MLA and is not supported",
}

# Model classes of each registered family (their weights follow its rows).
ARCHITECTURE_FAMILIES: dict[str, Family] = {
    arch: family.name for family in FAMILIES.values() for arch in family.architectures}

# model_types of derivatives that name no DeepSeek class of their own (Kimi-K2.5's
# text_config says only `kimi_k2`; transformers' KimiK25Config reads it as deepseek_v3).
DERIVATIVE_MODEL_TYPES: dict[str, Family] = {"kimi_k2": "deepseek_v3"}

# Keys under which multimodal wrappers keep their language model, with the tensor-name
# prefix their checkpoints use for it (DeepSeek-VL2: `language.`; Kimi-K2.5 / Kimi-VL:
# `language_model.`).
WRAPPER_KEYS = {"text_config": "language_model.", "language_config": "language."}

# Wrappers whose own configuration code builds the language model's config class from the
# wrapper key's mapping, whatever that mapping says: each family declares its own
# (`Family.wrappers`): wrapper model_type -> (family, loader, what its code does).
WRAPPER_LOADERS: dict[str, tuple[Family, LoaderName, str]] = {
    name: (family.name, w.loader, w.does)
    for family in FAMILIES.values() for name, w in family.wrappers.items()}
# The same wrappers named by a class instead of a model_type (architectures, auto_map).
WRAPPER_CLASSES = {cls: name for family in FAMILIES.values()
                   for name, w in family.wrappers.items() for cls in w.classes}
# Wrappers that keep the language model's tensors under their own prefix (Mistral Large 4:
# `model.language_model.`, lm_head outside it; families.base.wrapped_name)
WRAPPER_PREFIXES = {name: w.tensor_prefix for family in FAMILIES.values()
                    for name, w in family.wrappers.items() if w.tensor_prefix is not None}


def tensor_prefix(wrapper: dict[str, Any], key: str) -> str:
    """Where the checkpoint of `wrapper` (a config mapping) keeps the language model that
    its `key` describes."""
    return WRAPPER_PREFIXES.get(wrapper_name(wrapper) or "", WRAPPER_KEYS[key])

# Other architectures people hold next to DeepSeek's, named when refused.
FOREIGN_MODEL_TYPES = {
    "llama": "Llama", "qwen2": "Qwen2", "qwen2_moe": "Qwen2-MoE", "qwen3": "Qwen3",
    "qwen3_moe": "Qwen3-MoE", "mistral": "Mistral", "mixtral": "Mixtral", "gemma": "Gemma",
    "gemma2": "Gemma 2", "gemma3": "Gemma 3", "phi3": "Phi-3", "glm4_moe": "GLM-4-MoE",
    "gpt_oss": "gpt-oss", "kimi_linear": "Kimi-Linear", "llama4": "Llama 4",
}
_DISTILL_HINT = " (DeepSeek's R1-Distill models are Qwen2 and Llama fine-tunes)"

# DeepSeek inference config key -> HF key (inference/model.py `ModelArgs`).
INFERENCE_KEYS = {
    "vocab_size": "vocab_size", "dim": "hidden_size", "inter_dim": "intermediate_size",
    "moe_inter_dim": "moe_intermediate_size", "n_layers": "num_hidden_layers",
    "n_dense_layers": "first_k_dense_replace", "n_heads": "num_attention_heads",
    "n_routed_experts": "n_routed_experts", "n_shared_experts": "n_shared_experts",
    "n_activated_experts": "num_experts_per_tok", "n_expert_groups": "n_group",
    "n_limited_groups": "topk_group", "score_func": "scoring_func",
    "route_scale": "routed_scaling_factor", "q_lora_rank": "q_lora_rank",
    "kv_lora_rank": "kv_lora_rank", "qk_nope_head_dim": "qk_nope_head_dim",
    "qk_rope_head_dim": "qk_rope_head_dim", "v_head_dim": "v_head_dim",
    "rope_theta": "rope_theta",
}
# V3.2's lightning indexer (DeepSeek-V3.2-Exp's inference/model.py `ModelArgs`): same names.
INFERENCE_INDEX_KEYS = ("index_n_heads", "index_head_dim", "index_topk")
# Written by `reshard --to deepseek-mp` beside model{i}-mp{N}.safetensors, for DeepSeek's
# generate.py (`--config`).
INFERENCE_CONFIG_FILE = "inference_config.json"
# YaRN keys of the inference config -> `rope_scaling` keys, with ModelArgs' defaults.
INFERENCE_ROPE = {"original_seq_len": ("original_max_position_embeddings", 4096),
                  "rope_factor": ("factor", 40), "beta_fast": ("beta_fast", 32),
                  "beta_slow": ("beta_slow", 1), "mscale": ("mscale_all_dim", 1.0)}
INFERENCE_OTHER = ("dtype", "scale_fmt", "max_batch_size", "max_seq_len")
# What an inference config cannot say (reported by `info` and `diff`).
INFERENCE_LEAVES_OUT = (
    "the MTP module (inference/model.py has none: num_nextn_predict_layers 0)",
    "bos/eos token ids, tokenizer and chat template",
    "max_position_embeddings (taken as original_seq_len x rope_factor)",
    ("whether the router has e_score_correction_bias (model.py adds it when dim == 7168; "
     "read here from score_func: sigmoid = noaux_tc with bias)"),
)

# Keys of every layout that are not schema fields but are known (no near-miss warning).
OTHER_KNOWN_KEYS = frozenset({
    "architectures", "auto_map", "model_type", "transformers_version", "torch_dtype", "dtype",
    "aux_loss_alpha", "seq_aux", "ep_size", "pretraining_tp", "initializer_range",
    "use_cache", "pad_token_id", "attention_dropout", "rope_parameters", "rope_interleave",
    "head_dim", "qk_head_dim", "output_router_logits", "mlp_bias", "use_mla",
    "num_nextn_predict_layers", "quantization_config", "moe_layer_freq", "scoring_func",
    "topk_method", "bos_token_id", "eos_token_id", "num_key_value_heads", "rope_scaling",
    "_name_or_path", "name_or_path", "router_aux_loss_coef", "tie_word_embeddings",
    "chunk_size_feed_forward", "return_dict", "output_hidden_states", "output_attentions",
    "torchscript", "use_bfloat16", "id2label", "label2id", "problem_type", "tokenizer_class",
    "is_encoder_decoder", "max_length", "num_experts_per_token", "rope_type",
    "mlp_layer_types", "layer_types",  # transformers 5's DeepseekV32Config writes them out
})
PRETRAINED_CONFIG_KEYS = frozenset({
    # What any transformers config may carry: PretrainedConfig.__init__'s arguments and the
    # keys it pops (transformers 4.57 configuration_utils.py), and the generation keys
    # older configs saved (GenerationConfig._get_default_generation_params() in 5.24,
    # _get_global_generation_defaults() in 4.57). tests/test_config_real_cases.py checks
    # the installed transformers against this list. Some overlap OTHER_KNOWN_KEYS, which
    # are the keys DeepSeek's own configs use.
    "output_hidden_states", "output_attentions", "return_dict", "torchscript", "dtype",
    "pruned_heads", "tie_word_embeddings", "chunk_size_feed_forward", "is_encoder_decoder",
    "is_decoder", "cross_attention_hidden_size", "add_cross_attention", "tie_encoder_decoder",
    "architectures", "finetuning_task", "id2label", "label2id", "num_labels",
    "task_specific_params", "problem_type", "tokenizer_class", "prefix", "bos_token_id",
    "pad_token_id", "eos_token_id", "sep_token_id", "decoder_start_token_id", "torch_dtype",
    "name_or_path", "_name_or_path", "_commit_hash", "attn_implementation",
    "_attn_implementation", "_attn_implementation_autoset", "experts_implementation",
    "transformers_version", "tf_legacy_loss", "use_bfloat16",
    "assistant_confidence_threshold", "assistant_lookbehind", "bad_words_ids",
    "begin_suppress_tokens", "diversity_penalty", "do_sample", "early_stopping",
    "encoder_no_repeat_ngram_size", "encoder_repetition_penalty", "epsilon_cutoff", "eta_cutoff",
    "exponential_decay_length_penalty", "forced_bos_token_id", "forced_eos_token_id",
    "length_penalty", "max_length", "min_length", "no_repeat_ngram_size",
    "num_assistant_tokens", "num_assistant_tokens_schedule", "num_beam_groups", "num_beams",
    "num_return_sequences", "output_scores", "remove_invalid_values", "repetition_penalty",
    "return_dict_in_generate", "suppress_tokens", "target_lookbehind", "temperature", "top_k",
    "top_p", "typical_p", "use_cache",
})

# Quantisation declared outside `quantization_config`: key -> who writes it. Named by
# `info`, refused by the writers like any scheme other than block FP8, and left out of a
# tiny checkpoint's config (its weights are BF16).
FOREIGN_QUANT_KEYS = {
    "quantize": "Ascend msModelSlim / MindIE",  # e.g. "w8a8_dynamic" in Ascend's DeepSeek ports
}

QUANT_SCHEMES = {
    "fp8": "DeepSeek block FP8",
    "compressed-tensors": "compressed-tensors",
    "modelopt": "NVIDIA ModelOpt",
    "gptq": "GPTQ",
    "awq": "AWQ",
    "bitsandbytes": "bitsandbytes",
    "mxfp4": "MXFP4",
    "inference-dtype": "an inference-config dtype DeepSeek's code does not define",
}


def _architectures(raw: dict[str, Any]) -> list[str]:
    archs = raw.get("architectures")
    return [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []


def _remote_class(raw: dict[str, Any]) -> tuple[Family | None, str | None]:
    """(family, auto_map entry) when auto_map points at DeepSeek's remote code."""
    auto_map = raw.get("auto_map")
    if not isinstance(auto_map, dict):
        return None, None
    for key in ("AutoConfig", "AutoModelForCausalLM", "AutoModel"):
        target = auto_map.get(key)
        if not isinstance(target, str):
            continue
        name = target.split("--")[-1]  # "repo--module.Class" form
        if name.split(".")[-1].startswith("DeepseekV32"):
            continue  # no remote code for V3.2 is known; not V3's
        for cls, family in (("DeepseekV3", "deepseek_v3"), ("DeepseekV2", "deepseek_v2")):
            if name.split(".")[-1].startswith(cls) and "deepseek" in name.split(".")[0]:
                return family, f"auto_map {key}: {target}"
    return None, None


_INFERENCE_ONLY = frozenset(INFERENCE_KEYS) - set(INFERENCE_KEYS.values())


def _is_inference_layout(raw: dict[str, Any]) -> bool:
    return "model_type" not in raw and len(_INFERENCE_ONLY & set(raw)) >= 2


def _foreign_message(raw: dict[str, Any], source: str) -> str:
    mt = raw.get("model_type")
    archs = _architectures(raw)
    what = FOREIGN_MODEL_TYPES.get(mt) if isinstance(mt, str) else None
    found = f"model_type {json.dumps(mt)}"
    found += f", architectures {', '.join(archs)}" if archs else ""
    hint = _DISTILL_HINT if mt in ("qwen2", "llama") else ""
    if what:
        return (f"{source}: a {what} config ({found}), not a DeepSeek V2/V3/V3.2/V4 "
                f"architecture{hint}")
    return (f"{source}: {found} is not a DeepSeek V2/V3/V3.2/V4 config (recognised: model_type "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}, architectures "
            f"{', '.join(ARCHITECTURE_FAMILIES)}, auto_map to DeepSeek's "
            f"configuration_deepseek.py, text_config/language_config wrappers, DeepSeek "
            f"inference configs)")


def recognise(raw: dict[str, Any], source: str) -> tuple[Family, str, LayoutName, str | None]:
    """(architecture, why, layout, wrapper key) of a config mapping.

    Raises:
        UnsupportedModelError: a refused DeepSeek generation or another architecture, named.
    """
    mt = raw.get("model_type")
    if isinstance(mt, str) and mt in REFUSED_MODEL_TYPES:
        raise UnsupportedModelError(f"{source}: {REFUSED_MODEL_TYPES[mt]}")
    layout: LayoutName = "transformers-5" if _looks_transformers_5(raw) else "hub"
    if mt in SUPPORTED_MODEL_TYPES:
        return mt, f"model_type {mt}", layout, None
    for arch in _architectures(raw):
        if arch in ARCHITECTURE_FAMILIES:
            why = f"architectures: {arch}; model_type {mt}"
            return ARCHITECTURE_FAMILIES[arch], why, layout, None
    family, entry = _remote_class(raw)
    if family is not None:
        return family, f"{entry}; model_type {mt}", layout, None
    if mt in DERIVATIVE_MODEL_TYPES:
        why = f"model_type {mt} (a DeepSeek-V3 derivative that names no class)"
        return DERIVATIVE_MODEL_TYPES[mt], why, layout, None
    if _is_inference_layout(raw):
        if any(k in raw for k in INFERENCE_INDEX_KEYS):
            return "deepseek_v32", ("DeepSeek inference config (dim, n_layers, ...) with the "
                                    "V3.2 indexer (index_*)"), "inference", None
        family = "deepseek_v3" if raw.get("score_func") == "sigmoid" else "deepseek_v2"
        return family, ("DeepSeek inference config (dim, n_layers, ...); score_func "
                        f"{raw.get('score_func', 'softmax (default)')}"), "inference", None
    for key in WRAPPER_KEYS:
        inner = raw.get(key)
        if isinstance(inner, dict):
            try:
                family, why, inner_layout, _ = recognise(inner, f"{source}: {key}")
            except UnsupportedModelError:
                wrapper = wrapper_name(raw)
                if wrapper is None or _names_a_model(inner):
                    continue
                family, _, does = WRAPPER_LOADERS[wrapper]
                inner_layout = "transformers-5" if _looks_transformers_5(inner) else "hub"
                return family, f"{key} of {wrapper} ({does})", inner_layout, key
            return family, f"{key} ({why}) of model_type {mt}", inner_layout, key
    raise UnsupportedModelError(_foreign_message(raw, source))


def _names_a_model(raw: dict[str, Any]) -> bool:
    return any(k in raw for k in ("model_type", "architectures", "auto_map"))


def wrapper_name(raw: dict[str, Any]) -> str | None:
    """The WRAPPER_LOADERS entry a wrapper config names by model_type, architectures or
    auto_map (None for any other mapping)."""
    mt = raw.get("model_type")
    if isinstance(mt, str) and mt in WRAPPER_LOADERS:
        return mt
    auto_map = raw.get("auto_map") if isinstance(raw.get("auto_map"), dict) else {}
    classes = [*_architectures(raw), *(str(v).split(".")[-1] for v in auto_map.values())]
    return next((WRAPPER_CLASSES[c] for c in classes if c in WRAPPER_CLASSES), None)


def variant_refusal(data: dict[str, Any]) -> str | None:
    """What a DeepSeek-bodied config is when its attention is not MLA (None when it is)."""
    if data.get("use_mla") is False:
        # DeepSeek-VL2's decoder layer takes LlamaAttention for use_mla false
        # (modeling_deepseek.py ATTENTION_CLASSES["mha_eager"]): docs/config-layouts.md
        return ("use_mla false: plain multi-head attention (q_proj, k_proj, v_proj, o_proj, "
                "as DeepSeek-OCR's language model) on a deepseek_v2 MoE body, not multi-head "
                "latent attention; ckpt_tools reads MLA models only")
    return None


def _looks_transformers_5(raw: dict[str, Any]) -> bool:
    version = str(raw.get("transformers_version", ""))
    return version.split(".")[0].isdigit() and int(version.split(".")[0]) >= 5 or (
        "rope_parameters" in raw)


def choose_loader(raw: dict[str, Any], family: Family, layout: LayoutName,
                  wrapper: dict[str, Any] | None = None) -> LoaderName:
    """The loader a user of this file gets: the wrapper's own code when `wrapper` (the config
    `raw` is the language model of) is one of WRAPPER_LOADERS, remote code when auto_map
    points at DeepSeek's configuration_deepseek.py, DeepSeek's inference code for its
    configs, else transformers."""
    name = wrapper_name(wrapper) if wrapper is not None else None
    if name is not None and WRAPPER_LOADERS[name][0] == family:
        return WRAPPER_LOADERS[name][1]
    if layout == "inference":
        return ("DeepSeek V3.2 inference ModelArgs" if family == "deepseek_v32"
                else "DeepSeek inference ModelArgs")
    if family == "deepseek_v4":
        return "transformers DeepseekV4Config"
    own = FAMILIES[family].loader if family in FAMILIES else None
    if own is not None:  # a derived family: its transformers config class
        return own
    remote, _ = _remote_class(raw)
    if raw.get("model_type") in DERIVATIVE_MODEL_TYPES and not _architectures(raw):
        remote = DERIVATIVE_MODEL_TYPES[raw["model_type"]]  # they ship DeepSeek's remote code
    if remote is not None:
        return ("remote-code DeepseekV3Config" if remote == "deepseek_v3"
                else "remote-code DeepseekV2Config")
    return {"deepseek_v32": "transformers DeepseekV32Config",
            "deepseek_v3": "transformers DeepseekV3Config"}.get(family,
                                                                "transformers DeepseekV2Config")


def from_inference_layout(raw: dict[str, Any]) -> dict[str, Any]:
    """An inference config as HF keys (what it leaves out is filled by the loader table)."""
    data: dict[str, Any] = {}
    for key, value in raw.items():
        if key in INFERENCE_KEYS:
            data[INFERENCE_KEYS[key]] = value
        elif key not in INFERENCE_ROPE and key not in INFERENCE_OTHER:
            data[key] = value  # unknown: kept, and checked for near misses
    if data.get("q_lora_rank") == 0:
        data["q_lora_rank"] = None
    sigmoid = raw.get("score_func") == "sigmoid"
    groups = raw.get("n_expert_groups", 1)
    data["model_type"] = ("deepseek_v32" if any(k in raw for k in INFERENCE_INDEX_KEYS)
                          else "deepseek_v3" if sigmoid else "deepseek_v2")
    data["topk_method"] = ("noaux_tc" if sigmoid
                           else "group_limited_greedy" if groups > 1 else "greedy")
    data["norm_topk_prob"] = sigmoid  # model.py's Gate renormalises sigmoid weights only
    rope = {hf: raw.get(key, default) for key, (hf, default) in INFERENCE_ROPE.items()}
    rope.update(type="yarn", mscale=rope["mscale_all_dim"])
    data["rope_scaling"] = rope
    data["max_position_embeddings"] = int(rope["original_max_position_embeddings"] * rope["factor"])
    dtype = raw.get("dtype", "bf16")
    if dtype == "fp8":
        data["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3",
                                       "activation_scheme": "dynamic",
                                       "weight_block_size": list(FP8_BLOCK)}
        if raw.get("scale_fmt"):
            data["quantization_config"]["scale_fmt"] = raw["scale_fmt"]
    elif dtype != "bf16":  # forks quantise further (int8, int4): named, not read
        data["quantization_config"] = {"quant_method": "inference-dtype", "dtype": dtype}
    data["torch_dtype"] = "bfloat16"
    return data


def to_inference_layout(config: Any) -> dict[str, Any]:
    """The config `generate.py` of DeepSeek's inference code takes for `config` (only keys
    its `ModelArgs` defines). It cannot say `moe_layer_freq`, MTP or `norm_topk_prob` apart
    from the score function, and model.py adds the router bias only when dim == 7168."""
    hf_to_inference = {hf: key for key, hf in INFERENCE_KEYS.items()}
    out: dict[str, Any] = {}
    for hf, key in hf_to_inference.items():
        value = getattr(config, hf)
        if hf == "q_lora_rank" and value is None:
            value = 0
        out[key] = value
    rs = config.rope_scaling
    if rs is not None:
        out.update(original_seq_len=rs.original_max_position_embeddings, rope_factor=rs.factor,
                   beta_fast=rs.beta_fast, beta_slow=rs.beta_slow, mscale=rs.mscale_all_dim)
    for key in INFERENCE_INDEX_KEYS:
        if hasattr(config, key):
            out[key] = getattr(config, key)
    qc = config.quantization_config
    out["dtype"] = "fp8" if qc is not None else "bf16"
    if qc is not None and qc.scale_fmt:
        out["scale_fmt"] = qc.scale_fmt
    return out


def known_keys() -> frozenset[str]:
    keys = set(OTHER_KNOWN_KEYS | PRETRAINED_CONFIG_KEYS)
    for table in (*CLASS_DEFAULTS.values(), *IMPLIED.values()):
        keys.update(table)
    for family in FAMILIES.values():
        keys.update(family.loader_defaults())
        if family.config_model is not None:  # its own keys (indexer_types, ...)
            keys.update(family.config_model.model_fields)
    return frozenset(keys)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert, delete, substitute), with adjacent swaps as one edit."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cost = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, prev2[j - 2] + 1)
            cur.append(cost)
        prev2, prev = prev, cur
    return prev[-1]


def near_miss_warnings(raw: dict[str, Any], family: Family, layout: LayoutName) -> list[str]:
    """'did you mean' for unknown keys close to a known one, and for keys of another layout."""
    known = known_keys()
    if family == "deepseek_v4":  # V4's own keys (v4.config), both spellings
        known = (frozenset(DeepseekV4Config.model_fields) | OTHER_KNOWN_KEYS
                 | PRETRAINED_CONFIG_KEYS | TRANSFORMERS_5_KEYS)
    inference_only = (set(INFERENCE_KEYS) | set(INFERENCE_ROPE)) - known
    out = []
    for key in raw:
        if layout == "inference":
            if (key in INFERENCE_KEYS or key in INFERENCE_ROPE or key in INFERENCE_OTHER
                    or key in INFERENCE_INDEX_KEYS):
                continue
            if key in PRETRAINED_CONFIG_KEYS - OTHER_KNOWN_KEYS:
                continue  # generation and legacy keys of any config say nothing of the model
            if key in known:
                spelled = {hf: k for k, hf in INFERENCE_KEYS.items()}.get(key)
                out.append(f"{key}: a key of HF configs, not read from an inference config"
                           + (f" (which spells it {spelled})" if spelled else ""))
                continue
            pool = (set(INFERENCE_KEYS) | set(INFERENCE_ROPE) | set(INFERENCE_OTHER)
                    | set(INFERENCE_INDEX_KEYS))
        else:
            if key in known or key in WRAPPER_KEYS:
                continue
            if key in inference_only:
                out.append(f"{key}: a key of DeepSeek's inference configs, which HF configs spell "
                           f"{INFERENCE_KEYS.get(key, 'rope_scaling.*')}; kept, not read")
                continue
            pool = known
        limit = 1 if len(key) <= 6 else 2
        close = sorted((edit_distance(key, k), k) for k in pool if abs(len(k) - len(key)) <= limit)
        if close and close[0][0] <= limit:
            out.append(f"{key}: unknown key, kept but not read; did you mean '{close[0][1]}'?")
    return out


def family_for_raw(raw: Mapping[str, Any] | None) -> FamilyEntry:
    """The family a config.json mapping declares (model_type, architectures, auto_map,
    wrappers: the config readers' recognition); DEFAULT when it is not one of ours."""
    if not isinstance(raw, dict):
        return DEFAULT
    try:
        return family_named(recognise(raw, "config")[0])
    except CkptError:
        return DEFAULT


def family_at(path: Path, config: Path | None = None) -> FamilyEntry:
    """The family a checkpoint directory's config.json (or the file `config`) declares,
    local or remote (a resolved `Path` or `RemotePath`: `io.source.locate`), read without
    judging it (DEFAULT when there is none to read)."""
    target = config if config is not None else path / CONFIG_FILE
    try:
        raw = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError, AttributeError):
        return DEFAULT
    return family_for_raw(raw)
