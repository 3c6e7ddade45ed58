"""The NumPy reference decoder against transformers (live when torch is installed, golden
logits otherwise), plus the contracts of its lazy weight access."""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import numpy as np
import pytest
from conftest import NEEDS_REFERENCE

from ckpt_tools.inventory.checkpoint import Checkpoint
from ckpt_tools.configs.parse import parse_config
from ckpt_tools.errors import ConfigError, MissingTensorError, ShapeMismatchError
from ckpt_tools.reference import Model, Weights, deepseek, forward
from ckpt_tools.reference.deepseek import apply_rope, route
from ckpt_tools.commands.tiny import make_tiny, tiny_config

GOLDEN = Path(__file__).parent / "data" / "reference_logits.npz"
TOKENS = [0, 15, 3, 7, 100, 200, 5, 9, 11, 300, 42, 64]

_YARN = {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
         "beta_fast": 32, "beta_slow": 1}
# name -> (preset, overrides). Together: greedy / group_limited_greedy / noaux_tc, q_lora
# null and set, mscale 0.707 and 1.0 (and unequal mscale / mscale_all_dim, which scales
# cos/sin), two dense-first layers, and V3 without renormalisation.
CASES = {
    "v2-lite-greedy-2dense": ("v2-lite", {"first_k_dense_replace": 2, "num_hidden_layers": 4}),
    "v2-group-limited": ("v2", {}),
    "v2.5-group-limited-mscale1": ("v2.5", {"first_k_dense_replace": 2, "num_hidden_layers": 3}),
    "v3-noaux": ("v3", {}),
    "v3-no-qlora-cos-sin-scaled": ("v3", {
        "q_lora_rank": None, "norm_topk_prob": False,
        "rope_scaling": {**_YARN, "mscale": 1.0, "mscale_all_dim": 0.707}}),
    # V3.2: the indexer picks 4 of up to 12 keys (selection happens) / keeps every key
    "v3.2-dsa-topk4": ("v3.2", {"index_topk": 4}),
    "v3.2-topk-covers-all": ("v3.2-exp", {"index_topk": 64}),
    # hidden_act other than silu (transformers' own DeepSeek-V2 test config says "gelu")
    "v2-lite-gelu": ("v2-lite", {"hidden_act": "gelu"}),
    "v3-gelu-tanh": ("v3", {"hidden_act": "gelu_pytorch_tanh"}),
    "v2-relu": ("v2", {"hidden_act": "relu"}),
}
# The golden file keeps a few KB: small vocabulary, fewer tokens.
GOLDEN_CASES = ("v2-lite-greedy-2dense", "v2-group-limited", "v3-noaux", "v3.2-dsa-topk4")
GOLDEN_OVERRIDES = {"vocab_size": 64}
GOLDEN_TOKENS = [0, 15, 3, 7, 50, 60, 1, 63, 33, 17]


def _build(tmp_path: Path, case: str, extra: dict | None = None) -> Path:
    preset, overrides = CASES[case]
    dst = tmp_path / case
    make_tiny(dst, preset, seed=7, overrides={**overrides, **(extra or {})})
    return dst


def transformers_logits(path: Path, tokens: list[int], hidden: bool = False):
    torch = pytest.importorskip("torch", reason=NEEDS_REFERENCE)
    transformers = pytest.importorskip("transformers", reason=NEEDS_REFERENCE)
    transformers.logging.set_verbosity_error()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        out = model(torch.tensor([tokens]), output_hidden_states=hidden)
    logits = out.logits[0].numpy()
    if hidden:  # hidden_states[k] = after k layers; the last one is after the final norm
        return logits, [h[0].numpy() for h in out.hidden_states[:-1]]
    return logits


# -- against transformers --------------------------------------------------------------
@pytest.mark.reference
@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(tmp_path, case):
    path = _build(tmp_path, case)
    expected = transformers_logits(path, TOKENS)
    got = forward(Checkpoint(path), TOKENS)
    assert got.shape == expected.shape == (len(TOKENS), 320)
    assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.reference
@pytest.mark.parametrize("case", ["v3-noaux", "v3.2-dsa-topk4"])
def test_hidden_states_after_k_layers_match_transformers(tmp_path, case):
    path = _build(tmp_path, case)
    _, hidden = transformers_logits(path, TOKENS, hidden=True)
    for k in range(len(hidden)):
        got = forward(Checkpoint(path), TOKENS, layers=k)
        assert got.shape == (len(TOKENS), 96)
        assert np.abs(got - hidden[k]).max() <= 1e-4, f"after {k} layers"


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_logits_match_golden_transformers_logits(tmp_path, case):
    """Numbers transformers produced once (see `main` below); runs without torch."""
    with np.load(GOLDEN) as golden:
        expected = golden[case]
        assert golden[f"{case}.tokens"].tolist() == GOLDEN_TOKENS
    path = _build(tmp_path, case, GOLDEN_OVERRIDES)
    got = forward(Checkpoint(path), GOLDEN_TOKENS)
    assert np.abs(got - expected).max() <= 1e-4


# -- pieces, against independent formulas ----------------------------------------------
def test_rope_rotates_adjacent_pairs_like_complex_multiplication():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 8)).astype(np.float32)  # [t, h, r]
    angles = rng.normal(size=(5, 4))
    got = apply_rope(x, np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32))
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * angles)[:, None, :]
    want = np.stack([z.real, z.imag], axis=-1).reshape(x.shape)
    np.testing.assert_allclose(got, want, atol=1e-5)


def _router_config(**fields):
    raw = tiny_config("v3")
    raw.update({"n_routed_experts": 4, "n_group": 2, "topk_group": 1, "num_experts_per_tok": 2,
                "routed_scaling_factor": 2.5, "norm_topk_prob": True, **fields})
    return parse_config(raw)


def test_noaux_tc_bias_picks_experts_but_weights_come_from_unbiased_scores():
    config = _router_config()
    # gate rows are one-hot, so router logits = x; sigmoid of the logits below:
    logits = np.array([[2.0, -1.0, 0.0, 1.0]], np.float32)
    gate = np.eye(4, dtype=np.float32)
    s = 1 / (1 + np.exp(-logits[0]))  # 0.881, 0.269, 0.5, 0.731
    # bias lifts group {2, 3} (top-2 sums 0.5+0.731+1 vs 0.881+0.269) and expert 2 in it
    bias = np.array([0.0, 0.0, 0.6, 0.4], np.float32)
    experts, weights = route(config, logits, gate, bias)
    assert sorted(experts[0].tolist()) == [2, 3]
    order = np.argsort(experts[0])
    np.testing.assert_allclose(weights[0][order], 2.5 * s[[2, 3]] / (s[2] + s[3]), rtol=1e-6)


def test_group_limited_greedy_ranks_groups_by_their_best_expert_and_scales():
    raw = tiny_config("v2")
    raw.update(n_routed_experts=4, n_group=2, topk_group=1, num_experts_per_tok=2,
               routed_scaling_factor=16.0)
    config = parse_config(raw)
    # the best expert is in group {0, 1}; group {2, 3} has the larger sum
    logits = np.array([[0.0, 3.0, 2.5, 2.5]], np.float32)
    experts, weights = route(config, logits, np.eye(4, dtype=np.float32), None)
    p = np.exp(logits[0]) / np.exp(logits[0]).sum()
    assert sorted(experts[0].tolist()) == [0, 1]  # not 2, 3 although they beat expert 0
    np.testing.assert_allclose(np.sort(weights[0]), np.sort(16.0 * p[[0, 1]]), rtol=1e-6)


def test_softmax_router_with_norm_topk_prob_renormalises_instead_of_scaling():
    """HF-V2 remote code: renormalise when norm_topk_prob, scale only otherwise."""
    raw = tiny_config("v2-lite")
    raw.update(n_routed_experts=4, num_experts_per_tok=2, routed_scaling_factor=16.0,
               norm_topk_prob=True)
    config = parse_config(raw)
    logits = np.array([[1.0, 0.0, 2.0, -1.0]], np.float32)
    experts, weights = route(config, logits, np.eye(4, dtype=np.float32), None)
    assert sorted(experts[0].tolist()) == [0, 2]
    p = np.exp(logits[0]) / np.exp(logits[0]).sum()
    np.testing.assert_allclose(np.sort(weights[0]), np.sort(p[[0, 2]] / p[[0, 2]].sum()), rtol=1e-6)


def test_one_chosen_expert_is_renormalised_as_transformers_does():
    """With k = 1 and norm_topk_prob, transformers' V3 router (and every router it builds on
    it) divides the weight by itself, then scales; the V2 softmax rule (remote code) does
    not renormalise one expert and scales it, which is also what transformers' V2 gives."""
    logits = np.array([[2.0, -1.0, 0.0, 1.0]], np.float32)
    v3 = _router_config(num_experts_per_tok=1)
    assert v3.renormalises_top_k
    experts, weights = route(v3, logits, np.eye(4, dtype=np.float32), None)
    assert experts.tolist() == [[3]]  # in the group of the larger top-2 sum
    np.testing.assert_allclose(weights, [[2.5]], rtol=1e-6)
    raw = tiny_config("v2-lite")
    raw.update(n_routed_experts=4, num_experts_per_tok=1, routed_scaling_factor=16.0,
               norm_topk_prob=True)
    v2 = parse_config(raw)
    assert not v2.renormalises_top_k
    experts, weights = route(v2, logits, np.eye(4, dtype=np.float32), None)
    p = np.exp(logits[0]) / np.exp(logits[0]).sum()
    np.testing.assert_allclose(weights, [[16.0 * p[0]]], rtol=1e-6)


def test_mistral_large_4_router_with_one_expert_matches_transformers():
    torch = pytest.importorskip("torch", reason=NEEDS_REFERENCE)
    hf_model = pytest.importorskip("transformers.models.mistral_large4.modeling_mistral_large4",
                                   reason=NEEDS_REFERENCE)
    from transformers.models.mistral_large4.configuration_mistral_large4 import (
        MistralLarge4TextConfig)

    raw = tiny_config("mistral-large-4")
    raw["text_config"]["num_experts_per_tok"] = 1
    config = parse_config(raw)
    text = {k: v for k, v in raw["text_config"].items() if k != "model_type"}
    router = hf_model.MistralLarge4TextTopkRouter(MistralLarge4TextConfig(**text))
    rng = np.random.default_rng(0)
    gate = rng.standard_normal(tuple(router.weight.shape)).astype(np.float32)
    x = rng.standard_normal((5, gate.shape[1])).astype(np.float32)
    with torch.no_grad():
        router.weight.copy_(torch.from_numpy(gate))
        _, want_weights, want_experts = router(torch.from_numpy(x))
    experts, weights = route(config, x, gate, None)
    assert (experts == want_experts.numpy()).all()
    np.testing.assert_allclose(weights, want_weights.numpy(), rtol=1e-6)


# -- lazy weights ------------------------------------------------------------------------
class Recording:
    """A plain TensorSource (no row reads) that logs reads and tracks live arrays."""

    def __init__(self, inner: Checkpoint, corrupt: dict | None = None):
        self.inner, self.config = inner, inner.config
        self.reads: list[str] = []
        self.live: set[str] = set()
        self.max_live_experts = 0
        self.corrupt = corrupt or {}

    def __contains__(self, name):
        return name in self.inner

    def _gone(self, name):
        self.live.discard(name)

    def read_float32(self, name):
        array = self.corrupt.get(name, lambda a: a)(self.inner.read_float32(name))
        array = np.array(array)  # own memory, so its lifetime is ours to watch
        self.reads.append(name)
        self.live.add(name)
        weakref.finalize(array, self._gone, name)
        experts = {n.split(".mlp.experts.")[1].split(".")[0] for n in self.live
                   if ".mlp.experts." in n}
        self.max_live_experts = max(self.max_live_experts, len(experts))
        return array


def test_only_the_layers_asked_for_are_read(tmp_path):
    path = _build(tmp_path, "v3-noaux")
    src = Recording(Checkpoint(path))
    forward(src, TOKENS, layers=1)
    layers = {int(n.split(".")[2]) for n in src.reads if n.startswith("model.layers.")}
    assert layers == {0}
    assert "lm_head.weight" not in src.reads and "model.norm.weight" not in src.reads


def test_routed_experts_are_read_when_chosen_and_released_after(tmp_path, monkeypatch):
    path = _build(tmp_path, "v3-noaux")
    src = Recording(Checkpoint(path))
    chosen = []
    real_route = deepseek.route
    monkeypatch.setattr(deepseek, "route", lambda *a: chosen.append(real_route(*a)) or chosen[-1])
    forward(src, TOKENS)
    config = src.config
    moe_layers = [k for k in range(config.num_hidden_layers) if config.is_moe_layer(k)]
    assert len(chosen) == len(moe_layers) >= 2
    for layer, (experts, _) in zip(moe_layers, chosen):
        prefix = f"model.layers.{layer}.mlp.experts."
        read = {int(n[len(prefix):].split(".")[0]) for n in src.reads if n.startswith(prefix)}
        assert read == set(np.unique(experts).tolist())
    never = {n for n in Checkpoint(path).index.weight_map if ".mlp.experts." in n} - set(src.reads)
    assert never  # with 12 tokens x 3 of 8 experts, some expert is left unread
    assert src.max_live_experts == 1


def test_streamed_row_reads_give_the_same_logits(tmp_path):
    path = tmp_path / "fp8"
    make_tiny(path, "v3", fp8=True, seed=3)
    whole = Model(Weights(Recording(Checkpoint(path)))).forward(TOKENS)
    streamed = Model(Weights(Checkpoint(path), chunk_bytes=128 * 96 * 4)).forward(TOKENS)
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_wrong_shape_and_missing_tensor_name_the_tensor(tmp_path):
    path = _build(tmp_path, "v3-noaux")
    bad = "model.layers.0.self_attn.kv_b_proj.weight"
    src = Recording(Checkpoint(path), corrupt={bad: lambda a: a[:, :-1]})
    want = rf"'{bad}': expected shape \[128, 32\], found \[128, 31\]"
    with pytest.raises(ShapeMismatchError, match=want):
        forward(src, TOKENS)

    index = path / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    del data["weight_map"]["model.layers.1.mlp.up_proj.weight"]
    index.write_text(json.dumps(data))
    with pytest.raises(MissingTensorError, match="'model.layers.1.mlp.up_proj.weight' is missing"):
        forward(Checkpoint(path), TOKENS)


def test_an_activation_the_forward_cannot_compute_is_refused_naming_it(tmp_path):
    path = _build(tmp_path, "v2-lite-gelu", {"hidden_act": "quick_gelu"})
    with pytest.raises(ConfigError, match="hidden_act: .*found 'quick_gelu'"):
        forward(Checkpoint(path), TOKENS)


def test_tokens_outside_the_vocabulary_are_refused(tmp_path):
    path = _build(tmp_path, "v3-noaux")
    with pytest.raises(ConfigError, match=r"id 320 is outside the vocabulary \[0, 320\)"):
        forward(Checkpoint(path), [1, 320])


def test_mtp_is_causal_and_reads_only_its_layer(tmp_path):
    path = _build(tmp_path, "v3-noaux")
    src = Recording(Checkpoint(path))
    model = Model(src)
    config = model.config
    normed = model.final_norm(model.forward(TOKENS, config.num_hidden_layers))
    src.reads.clear()
    logits = model.mtp_logits(TOKENS, normed)
    assert logits.shape == (len(TOKENS) - 1, config.vocab_size)
    layers = {int(n.split(".")[2]) for n in src.reads}
    assert layers == {config.num_hidden_layers}
    # changing the last token and hidden state leaves every earlier prediction unchanged
    changed = model.mtp_logits(TOKENS[:-1] + [1], np.concatenate([normed[:-1], normed[:1]]))
    np.testing.assert_array_equal(changed[:-1], logits[:-1])
    assert not np.allclose(changed[-1], logits[-1])


def main(out: Path = GOLDEN) -> None:
    """Regenerate the golden logits with transformers: python tests/test_reference.py"""
    import tempfile

    arrays = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in GOLDEN_CASES:
            path = _build(Path(tmp), case, GOLDEN_OVERRIDES)
            arrays[case] = transformers_logits(path, GOLDEN_TOKENS).astype(np.float32)
            arrays[f"{case}.tokens"] = np.array(GOLDEN_TOKENS, np.int32)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)


if __name__ == "__main__":
    main()
