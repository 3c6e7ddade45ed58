"""What each loader uses for a key that a config.json leaves out: written down once.

A DeepSeek config is read by one of three loaders, and they disagree on defaults (an absent
`q_lora_rank` is 1536 for every HF loader but "none" for DeepSeek's inference code; an absent
`n_group` is 8 for V3 but null for V2). `ckpt_tools` fills an absent key with the value of the
loader the file names, so that two files a loader reads as the same model compare equal:

- `transformers` `DeepseekV2Config` / `DeepseekV3Config` / `DeepseekV32Config` (the tested
  5.x line), when the config has no `auto_map`. Source: transformers `src/transformers/models/
  deepseek_v2/configuration_deepseek_v2.py`, `.../deepseek_v3/configuration_deepseek_v3.py` and
  `.../deepseek_v32/configuration_deepseek_v32.py` (https://github.com/huggingface/transformers).
- DeepSeek's remote code `configuration_deepseek.py` (`DeepseekV2Config` in the V2 / V2.5 /
  Coder-V2 hub repos, `DeepseekV3Config` in the V3 / R1 / Kimi-K2 / Moonlight ones), when
  `auto_map` points at it. Source: the hub repos, e.g.
  https://huggingface.co/deepseek-ai/DeepSeek-V3/blob/main/configuration_deepseek.py and
  https://huggingface.co/deepseek-ai/DeepSeek-V2-Lite/blob/main/configuration_deepseek.py.
- DeepSeek-VL2's own `DeepseekV2Config` (`deepseek_vl2/models/configuration_deepseek.py` of
  https://github.com/deepseek-ai/DeepSeek-VL2, commit 6036493d), which its
  `DeepseekVLV2Config` builds from `language_config` (DeepSeek-VL2, DeepSeek-OCR): the V2 remote
  code's defaults plus `use_mla` (true). Its router (`MoEGate` in `modeling_deepseek.py`) also
  routes `noaux_tc` with sigmoid scores and an `e_score_correction_bias`, which neither V2
  loader above does.
- DeepSeek's inference code (`ModelArgs` in `inference/model.py`,
  https://github.com/deepseek-ai/DeepSeek-V3/blob/main/inference/model.py), for the
  `dim` / `n_layers` / ... inference configs; values given here under their HF names. V3.2's
  inference code (`ModelArgs` in https://github.com/deepseek-ai/DeepSeek-V3.2-Exp/blob/main/
  inference/model.py) has the same defaults plus the indexer's (`index_n_heads` 64,
  `index_head_dim` 128, `index_topk` 2048).

Values under `IMPLIED` are not constructor arguments but fixed by the loader's modeling code
(transformers' V3 router is always `noaux_tc` with sigmoid scores; its V2 router always
scores with softmax; neither reads `moe_layer_freq`, every layer after the dense ones is MoE).
`tests/data/loader_defaults.json` is a committed copy of transformers' class defaults, so the
table stays checked when transformers is not installed.
"""

from __future__ import annotations

from typing import Any, Literal

LoaderName = Literal[
    "transformers DeepseekV2Config",
    "transformers DeepseekV3Config",
    "transformers DeepseekV32Config",
    "remote-code DeepseekV2Config",
    "remote-code DeepseekV3Config",
    "DeepSeek inference ModelArgs",
    "DeepSeek V3.2 inference ModelArgs",
    "transformers DeepseekV4Config",  # V4's keys and defaults: config_v4.DeepseekV4Config
    "remote-code DeepSeek-VL2 DeepseekV2Config",
    "transformers Glm4MoeLiteConfig",
    "transformers Mistral4Config",
    "transformers GlmMoeDsaConfig",
]

# Keys shared by every HF loader of both generations.
_HF_COMMON: dict[str, Any] = {
    "kv_lora_rank": 512,
    "q_lora_rank": 1536,
    "qk_rope_head_dim": 64,
    "qk_nope_head_dim": 128,
    "v_head_dim": 128,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "attention_bias": False,
}

# Constructor defaults of each loader's config class (HF key names).
CLASS_DEFAULTS: dict[LoaderName, dict[str, Any]] = {
    "transformers DeepseekV2Config": {
        **_HF_COMMON,
        "vocab_size": 102400, "hidden_size": 4096, "intermediate_size": 11008,
        "moe_intermediate_size": 1407, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": None, "n_shared_experts": 2, "n_routed_experts": 64,
        "num_experts_per_tok": None, "routed_scaling_factor": 1.0, "topk_method": "greedy",
        "n_group": None, "topk_group": None, "norm_topk_prob": False,
        "first_k_dense_replace": 0, "max_position_embeddings": 2048,
        "bos_token_id": 1, "eos_token_id": 2,
    },
    "transformers DeepseekV3Config": {
        **_HF_COMMON,
        "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
        "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128,
        "num_key_value_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256,
        "num_experts_per_tok": 8, "routed_scaling_factor": 2.5, "n_group": 8, "topk_group": 4,
        "norm_topk_prob": True, "first_k_dense_replace": 3, "max_position_embeddings": 4096,
        "num_nextn_predict_layers": 1, "bos_token_id": 0, "eos_token_id": 1,
    },
    "remote-code DeepseekV2Config": {
        **_HF_COMMON,
        "vocab_size": 102400, "hidden_size": 4096, "intermediate_size": 11008,
        "moe_intermediate_size": 1407, "num_hidden_layers": 30, "num_attention_heads": 32,
        "num_key_value_heads": 32, "n_shared_experts": None, "n_routed_experts": None,
        "num_experts_per_tok": None, "routed_scaling_factor": 1.0,
        "topk_method": "gready",  # sic: the remote code's default, which its router rejects
        "n_group": None, "topk_group": None, "norm_topk_prob": False, "scoring_func": "softmax",
        "moe_layer_freq": 1, "first_k_dense_replace": 0, "max_position_embeddings": 2048,
        "bos_token_id": 100000, "eos_token_id": 100001,
    },
    "remote-code DeepseekV3Config": {
        **_HF_COMMON,
        "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
        "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128,
        "num_key_value_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256,
        "num_experts_per_tok": 8, "routed_scaling_factor": 2.5, "topk_method": "noaux_tc",
        "n_group": 8, "topk_group": 4, "norm_topk_prob": True, "scoring_func": "sigmoid",
        "moe_layer_freq": 1, "first_k_dense_replace": 3, "max_position_embeddings": 4096,
        "num_nextn_predict_layers": 1, "bos_token_id": 0, "eos_token_id": 1,
    },
    # ModelArgs of DeepSeek's inference/model.py, under HF names (q_lora_rank 0 = none).
    "DeepSeek inference ModelArgs": {
        "vocab_size": 102400, "hidden_size": 2048, "intermediate_size": 10944,
        "moe_intermediate_size": 1408, "num_hidden_layers": 27, "first_k_dense_replace": 1,
        "num_attention_heads": 16, "n_routed_experts": 64, "n_shared_experts": 2,
        "num_experts_per_tok": 6, "n_group": 1, "topk_group": 1, "scoring_func": "softmax",
        "routed_scaling_factor": 1.0, "q_lora_rank": None, "kv_lora_rank": 512,
        "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
        "rope_theta": 10000.0,
    },
}
_INDEXER = {"index_n_heads": 64, "index_head_dim": 128, "index_topk": 2048}
# transformers' DeepseekV32Config: V3's values but max_position_embeddings, no MTP field.
CLASS_DEFAULTS["transformers DeepseekV32Config"] = {
    **{k: v for k, v in CLASS_DEFAULTS["transformers DeepseekV3Config"].items()
       if k != "num_nextn_predict_layers"},
    "max_position_embeddings": 163840, **_INDEXER,
}
CLASS_DEFAULTS["remote-code DeepSeek-VL2 DeepseekV2Config"] = {
    **CLASS_DEFAULTS["remote-code DeepseekV2Config"], "use_mla": True}
# transformers' Glm4MoeLiteConfig (models/glm4_moe_lite/configuration_glm4_moe_lite.py): the
# GLM-4.7-Flash shape. It has no first_k_dense_replace, moe_layer_freq, topk_method or
# scoring_func: the dense/MoE pattern is `mlp_layer_types` (layer 0 dense by default) and its
# router (Glm4MoeTopkRouter) is V3's noaux_tc; no num_nextn_predict_layers either (a file's
# value is kept as an attribute; transformers ignores the MTP layer on load).
CLASS_DEFAULTS["transformers Glm4MoeLiteConfig"] = {
    **_HF_COMMON,
    "vocab_size": 154880, "hidden_size": 2048, "intermediate_size": 10240,
    "moe_intermediate_size": 1536, "num_hidden_layers": 47, "num_attention_heads": 20,
    "num_key_value_heads": 20, "n_shared_experts": 1, "n_routed_experts": 64,
    "num_experts_per_tok": 4, "routed_scaling_factor": 1.8, "n_group": 1, "topk_group": 1,
    "norm_topk_prob": True, "q_lora_rank": 768, "qk_nope_head_dim": 192, "v_head_dim": 256,
    "rms_norm_eps": 1e-5, "max_position_embeddings": 202752, "bos_token_id": 0,
    "eos_token_id": 1,
}
# transformers' Mistral4Config (models/mistral4/configuration_mistral4.py, docstring checkpoint
# mistralai/Mistral-Small-4-119B-2603). Absent rope parameters are YaRN 128 over 8192 with
# Llama-4 query scaling (beta 0.1); its router (Mistral4TopkRouter) is softmax, groups ranked
# by their two best scores, renormalised, then scaled, and has no score-correction bias.
CLASS_DEFAULTS["transformers Mistral4Config"] = {
    **_HF_COMMON,
    "vocab_size": 131072, "hidden_size": 4096, "intermediate_size": 12288,
    "moe_intermediate_size": 2048, "num_hidden_layers": 36, "num_attention_heads": 32,
    "num_key_value_heads": 32, "n_shared_experts": 1, "n_routed_experts": 128,
    "num_experts_per_tok": 4, "routed_scaling_factor": 1.0, "n_group": 1, "topk_group": 1,
    "norm_topk_prob": True, "first_k_dense_replace": 0, "q_lora_rank": 1024,
    "kv_lora_rank": 256, "qk_nope_head_dim": 64, "max_position_embeddings": 1048576,
    "bos_token_id": 1, "eos_token_id": 2,
    "rope_scaling": {"type": "yarn", "factor": 128.0, "original_max_position_embeddings": 8192,
                     "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "llama_4_scaling_beta": 0.1},
}
# transformers' GlmMoeDsaConfig(DeepseekV32Config) (models/glm_moe_dsa/, the GLM-5 shape):
# V3.2's keys with GLM's values; which layers run their own indexer is `indexer_types`
# (else `index_topk_pattern`, else `index_topk_freq` / `index_skip_topk_offset`: all "full")
CLASS_DEFAULTS["transformers GlmMoeDsaConfig"] = {
    **CLASS_DEFAULTS["transformers DeepseekV32Config"],
    "vocab_size": 154880, "hidden_size": 6144, "intermediate_size": 12288,
    "num_hidden_layers": 78, "num_attention_heads": 64, "num_key_value_heads": 64,
    "q_lora_rank": 2048, "v_head_dim": 256, "qk_nope_head_dim": 192, "n_group": 1,
    "topk_group": 1, "max_position_embeddings": 202752, "rms_norm_eps": 1e-5,
    "index_n_heads": 32,
}
CLASS_DEFAULTS["DeepSeek V3.2 inference ModelArgs"] = {
    **CLASS_DEFAULTS["DeepSeek inference ModelArgs"], **_INDEXER}

# Fixed by the loader's modeling code rather than by a constructor argument.
IMPLIED: dict[LoaderName, dict[str, Any]] = {
    "transformers DeepseekV2Config": {"scoring_func": "softmax", "moe_layer_freq": 1},
    "transformers DeepseekV3Config": {"topk_method": "noaux_tc", "scoring_func": "sigmoid",
                                      "moe_layer_freq": 1},
    # transformers' V3.2 router is V3's; its config and modeling have no MTP module.
    "transformers DeepseekV32Config": {"topk_method": "noaux_tc", "scoring_func": "sigmoid",
                                       "moe_layer_freq": 1, "num_nextn_predict_layers": 0},
    "remote-code DeepseekV2Config": {},
    "remote-code DeepseekV3Config": {},
    "remote-code DeepSeek-VL2 DeepseekV2Config": {},
    # inference/model.py has no MTP module, RMSNorm eps 1e-6, every layer after the dense
    # ones is MoE, and its gate renormalises exactly when scores are sigmoid.
    "DeepSeek inference ModelArgs": {"num_nextn_predict_layers": 0, "rms_norm_eps": 1e-6,
                                     "moe_layer_freq": 1},
}
IMPLIED["DeepSeek V3.2 inference ModelArgs"] = IMPLIED["DeepSeek inference ModelArgs"]
IMPLIED["transformers Glm4MoeLiteConfig"] = {"topk_method": "noaux_tc", "scoring_func": "sigmoid",
                                             "moe_layer_freq": 1, "num_nextn_predict_layers": 0}
# no topk_method / scoring_func in Mistral4Config: its router is softmax with V3's group
# ranking (config.Mistral4Config says how); no MTP module
IMPLIED["transformers GlmMoeDsaConfig"] = IMPLIED["transformers DeepseekV32Config"]
IMPLIED["transformers Mistral4Config"] = {"topk_method": "group_limited_greedy",
                                          "scoring_func": "softmax", "moe_layer_freq": 1}


# Loaders whose deepseek_v2 router implements `noaux_tc` (sigmoid scores plus the score
# correction bias); transformers' and DeepSeek-V2's own V2 routers stop at
# group_limited_greedy.
V2_NOAUX_TC_LOADERS: frozenset[LoaderName] = frozenset({"remote-code DeepSeek-VL2 DeepseekV2Config"})


def loader_defaults(loader: LoaderName) -> dict[str, Any]:
    """Every value `loader` uses for an absent key (class defaults, then implied)."""
    return {**CLASS_DEFAULTS[loader], **IMPLIED[loader]}
