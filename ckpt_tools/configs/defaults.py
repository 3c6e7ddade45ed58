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

# The loaders of DeepSeek's own families; a derived family names its loader and defaults in
# its registry module (families/: `Family.loader`, `class_defaults`, `implied_defaults`).
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
]

# Keys shared by every HF loader of both generations.
HF_COMMON: dict[str, Any] = {
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
        **HF_COMMON,
        "vocab_size": 102400, "hidden_size": 4096, "intermediate_size": 11008,
        "moe_intermediate_size": 1407, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": None, "n_shared_experts": 2, "n_routed_experts": 64,
        "num_experts_per_tok": None, "routed_scaling_factor": 1.0, "topk_method": "greedy",
        "n_group": None, "topk_group": None, "norm_topk_prob": False,
        "first_k_dense_replace": 0, "max_position_embeddings": 2048,
        "bos_token_id": 1, "eos_token_id": 2,
    },
    "transformers DeepseekV3Config": {
        **HF_COMMON,
        "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
        "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128,
        "num_key_value_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256,
        "num_experts_per_tok": 8, "routed_scaling_factor": 2.5, "n_group": 8, "topk_group": 4,
        "norm_topk_prob": True, "first_k_dense_replace": 3, "max_position_embeddings": 4096,
        "num_nextn_predict_layers": 1, "bos_token_id": 0, "eos_token_id": 1,
    },
    "remote-code DeepseekV2Config": {
        **HF_COMMON,
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
        **HF_COMMON,
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


# Loaders whose deepseek_v2 router implements `noaux_tc` (sigmoid scores plus the score
# correction bias); transformers' and DeepSeek-V2's own V2 routers stop at
# group_limited_greedy.
V2_NOAUX_TC_LOADERS: frozenset[LoaderName] = frozenset(
    {"remote-code DeepSeek-VL2 DeepseekV2Config"})


def loader_defaults(loader: LoaderName) -> dict[str, Any]:
    """Every value `loader` uses for an absent key (class defaults, then implied)."""
    return {**CLASS_DEFAULTS[loader], **IMPLIED[loader]}
