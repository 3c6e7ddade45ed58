"""The DeepSeek-derived families as registry entries (issue 25): each preset end to end.

Per family: `info` gives transformers' meta-device parameter count (the committed copy in
tests/data/derived_param_counts.json; live when transformers is installed), the config reads
in the Hub and transformers-5 spellings alike, and a tiny checkpoint goes make-tiny ->
validate --strict -> upcast / quantize -> reshard by size -> verify, with the NumPy forward
matching transformers' float32 logits.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
from conftest import (NEEDS_REFERENCE, counts_script, shrink_vision_tower,
                      transformers_model_with_experts_filled)

from ckpt_tools.inventory.checkpoint import Checkpoint
from ckpt_tools.configs.parse import parse_config
from ckpt_tools.commands.convert import quantize, upcast
from ckpt_tools.commands.diff import diff
from ckpt_tools.errors import ConfigError, UnsupportedModelError
from ckpt_tools.families import family_named, family_of
from ckpt_tools.commands.info import describe
from ckpt_tools.presets import find_preset
from ckpt_tools.reference import forward
from ckpt_tools.commands.reshard import reshard
from ckpt_tools.commands.tiny import make_tiny, tiny_config
from ckpt_tools.commands.validate import validate
from ckpt_tools.commands.verify import verify

DATA = Path(__file__).parent / "data"
COUNTS = json.loads((DATA / "derived_param_counts.json").read_text())
# preset -> (family, its DeepSeek parent's preset)
PRESETS = {"glm-4.7-flash": ("glm4_moe_lite", "v3"), "mistral-4": ("mistral4", "v3"),
           "glm-5": ("glm_moe_dsa", "v3.2"), "mistral-large-4": ("mistral_large4_text", "v3.2"),
           "longcat-flash": ("longcat_flash", "v3")}
# the tiny models' own settings, where the preset's would leave a difference unexercised:
# Mistral 4's Llama-4 query scaling starts after original_max_position_embeddings tokens,
# its group ranking needs groups, its scaling a factor other than 1
TINY = {"mistral-4": {
    "rope_scaling": {"type": "yarn", "factor": 128.0, "original_max_position_embeddings": 4,
                     "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "llama_4_scaling_beta": 0.1, "partial_rotary_factor": 8 / 24},
    "n_group": 2, "topk_group": 1, "routed_scaling_factor": 1.5},
    # GLM-5: the indexer picks 4 keys, on layers 0 and 2; layers 1 and 3 reuse their choice
    "glm-5": {"index_topk": 4, "index_topk_freq": 2, "index_skip_topk_offset": 1},
    # Mistral Large 4: a NoPE layer (1, 3) of each KV-sharing pair, layer 2 reusing layer 0's
    # latent KV and layer 1's indexer choice, layer 3 layer 1's latent KV with its own indexer
    "mistral-large-4": {"num_hidden_layers": 4, "no_rope_layers": [1, 0, 1, 0],
                        "kv_source_layers": [0, 1, 0, 1],
                        "indexer_types": ["full", "full", "shared", "full"],
                        "mlp_layer_types": ["dense", "sparse", "sparse", "sparse"],
                        "index_topk": 4, "final_logit_softcapping": 3.0}}
TOKENS = [0, 15, 3, 7, 100, 200, 5, 9, 11, 300, 42, 64]


@pytest.fixture(scope="module", params=sorted(PRESETS))
def tiny(request, tmp_path_factory):
    """(preset, BF16 tiny checkpoint, FP8 tiny checkpoint or None where the family has no
    block FP8), built once per preset."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    overrides = TINY.get(name)
    make_tiny(root / "bf16", name, seed=3, overrides=overrides)
    if family_named(PRESETS[name][0]).no_block_fp8 is not None:
        return name, root / "bf16", None
    make_tiny(root / "fp8", name, fp8=True, seed=3, overrides=overrides)
    return name, root / "bf16", root / "fp8"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_info_gives_transformers_parameter_count(name, run_cli):
    expected = COUNTS[name]
    params = describe(name).parameters
    # of a multimodal wrapper, the language model (its other towers are outside the plan);
    # less what transformers allocates and no release stores (LongCat-Flash's zero-expert
    # gate_up rows, docs/derived_families.md): the plan is the release's
    not_stored = expected["not_built"].get("zero_expert_gate_up_elements", 0)
    language_model = expected["language_model_parameters"] - not_stored
    assert params.main - params.buffers == language_model
    assert params.buffers == expected["persistent_buffers"]
    assert params.main == expected["checkpoint_elements"] - not_stored - (
        expected["parameters"] - expected["language_model_parameters"])
    assert family_of(find_preset(name).config).name == PRESETS[name][0]
    out = run_cli("info", name).stdout
    assert f"{language_model:,}" in out and "(agree)" in out


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_bundled_preset_builds_to_the_same_count_in_transformers(name, tmp_path):
    """Our preset's config, built by transformers on the meta device (the committed counts
    were made from tests/data/derived_presets, this checks the bundled copy)."""
    pytest.importorskip("torch", reason=NEEDS_REFERENCE)
    pytest.importorskip("transformers", reason=NEEDS_REFERENCE)
    script = counts_script()
    preset = find_preset(name)
    path = tmp_path / "preset.json"
    path.write_text(json.dumps({**preset.raw_config, "_provenance": {
        "published": dict(preset.published) | {"activated": None}}}))
    live = script.count(path)
    assert live["parameters"] == COUNTS[name]["parameters"]
    assert live["persistent_buffers"] == COUNTS[name]["persistent_buffers"]


def _hub_spelling(raw: dict) -> dict:
    """The same config as a hub file spells it: rope_theta at the top, torch_dtype (a
    wrapper's language model spelled so inside it)."""
    raw = dict(raw)
    if "text_config" in raw:
        raw["text_config"] = _hub_spelling(raw["text_config"])
    else:
        rope = raw.pop("rope_parameters")
        raw["rope_theta"] = rope.pop("rope_theta")
        if rope.get("rope_type", "default") != "default":
            raw["rope_scaling"] = {"type": rope.pop("rope_type"), **rope}
    if "dtype" in raw:
        raw["torch_dtype"] = raw.pop("dtype")
    return raw


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_hub_and_transformers_5_spellings_read_alike(name):
    t5 = find_preset(name).raw_config  # the presets are transformers-5 output
    a, b = parse_config(t5), parse_config(_hub_spelling(t5))
    assert a.reading.layout == "transformers-5" and b.reading.layout == "hub"
    assert family_of(a).name == family_of(b).name == PRESETS[name][0]
    assert a.model_dump() == b.model_dump()


@pytest.mark.reference
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_transformers_save_pretrained_output_reads_with_its_defaults(name, tmp_path):
    """A config transformers writes from its class defaults is the preset's main model (the
    classes have no MTP field: the Hub file's num_nextn_predict_layers says it)."""
    transformers = pytest.importorskip("transformers", reason=NEEDS_REFERENCE)
    cls = transformers.AutoConfig.for_model(PRESETS[name][0]).__class__
    cls().save_pretrained(tmp_path)
    saved = parse_config(json.loads((tmp_path / "config.json").read_text()))
    preset = find_preset(name).config
    got, want = (family_of(c).plan(c).parameters for c in (saved, preset))
    assert (got.main, got.activated, got.buffers) == (want.main, want.activated, want.buffers)


def test_glm_dense_pattern_is_mlp_layer_types_not_first_k_dense_replace():
    raw = find_preset("glm-4.7-flash").raw_config
    # transformers' Glm4MoeLiteConfig has no first_k_dense_replace: a file's value is unused
    assert parse_config({**raw, "first_k_dense_replace": 3}).first_k_dense_replace == 1
    two = ["dense", "dense"] + ["sparse"] * 45
    config = parse_config({**raw, "mlp_layer_types": two})
    assert [config.is_moe_layer(i) for i in range(3)] == [False, False, True]
    with pytest.raises(Exception, match="mlp_layer_types"):
        parse_config({**raw, "mlp_layer_types": ["sparse", "dense"] + ["sparse"] * 45})


def test_glm5_shared_layers_have_no_indexer_tensors():
    raw = {**find_preset("glm-5").raw_config, "num_hidden_layers": 4, "first_k_dense_replace": 1,
           "indexer_types": ["full", "shared", "shared", "full"]}
    config = parse_config(raw)
    plan = family_of(config).plan(config)
    with_indexer = {s.layer for s in plan.specs if ".indexer." in s.name}
    assert with_indexer == {0, 3, 4}  # 4: the MTP layer runs its own
    with pytest.raises(Exception, match="indexer_types"):
        parse_config({**raw, "indexer_types": ["shared", "full", "full", "full"]})


def test_mistral4_router_is_named_as_transformers_runs_it():
    # Mistral4TopkRouter reads no topk_method: softmax, V3's top-2 group ranking, no bias
    router = describe("mistral-4").architecture.router
    assert "group_limited_greedy" not in router and "softmax" in router and "top-2" in router
    assert describe("v3").architecture.router == "noaux_tc / sigmoid"


def test_diff_explains_mistral4_routing_as_its_router_runs(tmp_path):
    raw = {**find_preset("mistral-4").raw_config, "n_group": 2, "topk_group": 1,
           "routed_scaling_factor": 1.5}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    routing = diff("v3", str(tmp_path / "config.json")).figures_b.routing
    assert routing.topk_method.startswith("Mistral4TopkRouter")
    # groups by their top-2 sum (no bias), scaling after renormalising: one behaviour
    assert routing.group_rule == "top2_sum" and not routing.uses_bias
    assert "biased" not in routing.group_selection
    assert routing.scaling_applied == "after_normalisation" and not routing.notes


def test_make_tiny_shrinks_every_per_layer_list_with_the_layer_count(tmp_path):
    # GLM-5 as transformers 5 saves it: indexer_types spelled for all 78 layers
    raw = find_preset("glm-5").raw_config
    kinds = ["full"] * 3 + ["shared", "full"] * 37 + ["shared"]
    dense_then_sparse = ["dense"] * 3 + ["sparse"] * 75
    (tmp_path / "config.json").write_text(json.dumps(
        {**raw, "indexer_types": kinds, "mlp_layer_types": dense_then_sparse}))
    make_tiny(tmp_path / "tiny", str(tmp_path / "config.json"))
    written = json.loads((tmp_path / "tiny" / "config.json").read_text())
    n = written["num_hidden_layers"]
    assert len(written["indexer_types"]) == len(written["mlp_layer_types"]) == n
    # the dense prefix keeps its entries; the MoE layers keep both kinds the source has
    assert written["indexer_types"][0] == "full" and "shared" in written["indexer_types"]
    assert validate(tmp_path / "tiny", strict=True).ok


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_diff_against_the_deepseek_parent_names_what_changed(name):
    parent = PRESETS[name][1]
    report = diff(parent, name)
    assert report.a.model_type != report.b.model_type
    assert not report.same_architecture


def test_tiny_end_to_end(tiny, tmp_path):
    name, bf16, fp8 = tiny
    assert validate(bf16, strict=True).ok
    rs = reshard(bf16, tmp_path / "rs", max_shard_size="150KB")
    assert rs.ok and validate(tmp_path / "rs", strict=True).ok
    assert len(list((tmp_path / "rs").glob("*.safetensors"))) > 2
    assert verify(tmp_path / "rs", bf16).ok
    family = family_named(PRESETS[name][0])
    if fp8 is None:  # refused in one line naming why, nothing written
        with pytest.raises(UnsupportedModelError, match=f"not available for {family.title}"):
            quantize(bf16, tmp_path / "q")
        with pytest.raises(UnsupportedModelError, match=family.title):
            make_tiny(tmp_path / "fp8", name, fp8=True)
        assert not (tmp_path / "q").exists() and not (tmp_path / "fp8").exists()
        return
    assert validate(fp8, strict=True).ok
    up = upcast(fp8, tmp_path / "up")
    assert up.ok and validate(tmp_path / "up", strict=True).ok
    q = quantize(bf16, tmp_path / "q")
    assert q.ok and validate(tmp_path / "q", strict=True).ok
    # F32 holds q x s exactly, so the forward passes agree exactly (BF16 rounding may flip a
    # routing or DSA top-k choice on a tiny random model)
    assert upcast(fp8, tmp_path / "up32", dtype="f32").ok
    assert verify(tmp_path / "up32", fp8).ok


def test_model_parallel_layout_refused_naming_why(tiny, tmp_path, run_cli):
    name, bf16, _ = tiny
    family = family_named(PRESETS[name][0])
    if family.no_mp_layout is None:
        pytest.skip(f"{family.title} has DeepSeek's model-parallel layout")
    with pytest.raises(UnsupportedModelError, match=family.title):
        reshard(bf16, tmp_path / "mp", to="deepseek-mp", model_parallel=2)
    r = run_cli("reshard", bf16, tmp_path / "mp2", "--to", "deepseek-mp", "--model-parallel", "2")
    assert r.exit_code == 1 and family.no_mp_layout.split(",")[0] in r.stderr
    assert not (tmp_path / "mp").exists()


def test_download_layers_follows_the_family_plan(tiny, tmp_path, monkeypatch):
    from fake_hub import FakeHub, point_client_at

    from ckpt_tools.commands.download import download

    connect = socket.socket.connect

    def loopback_only(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            assert address[0] in ("127.0.0.1", "::1"), address
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    name, bf16, _ = tiny
    with FakeHub(tmp_path / "store") as hub:
        hub.add_commit("org/tiny", bf16)
        point_client_at(hub, monkeypatch, tmp_path / "hf-home")
        report = download("org/tiny", local_dir=tmp_path / "out", layers=(1, 1))
    with Checkpoint(bf16) as ck:
        planned = [s for s in ck.plan.specs if s.layer == 1 and not s.mtp]
    assert report.plan.tensors == report.tensor_check.expected == len(planned) > 0
    assert report.tensor_check.complete


def transformers_logits(name: str, path: Path, tokens: list[int]) -> np.ndarray:
    """transformers' float32 logits of the tiny checkpoint `path` of preset `name`."""
    torch = pytest.importorskip("torch", reason=NEEDS_REFERENCE)
    transformers = pytest.importorskip("transformers", reason=NEEDS_REFERENCE)
    transformers.logging.set_verbosity_error()
    # by the preset's class: transformers 5.24 registers Mistral 4 for AutoModelForCausalLM
    # only inside its multimodal wrapper
    raw = find_preset(name).raw_config  # a Hub file without `architectures`: the family's
    cls = getattr(transformers, (raw.get("architectures")
                                 or family_named(PRESETS[name][0]).architectures)[0])
    if find_preset(name).config.zero_experts:  # expert slots from_pretrained cannot fill
        model = transformers_model_with_experts_filled(cls, path)
    else:
        config = shrink_vision_tower(transformers.AutoConfig.from_pretrained(path))
        model = cls.from_pretrained(path, config=config, dtype=torch.float32,
                                    attn_implementation="eager")
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].numpy()


@pytest.mark.reference
def test_forward_matches_transformers(tiny):
    name, bf16, _ = tiny
    expected = transformers_logits(name, bf16, TOKENS)
    with Checkpoint(bf16) as ck:
        got = forward(ck, TOKENS)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


# Golden logits for the minimal install (no torch): numbers transformers produced once on
# the same tiny models with a small vocabulary, written by `main` below
GOLDEN = DATA / "derived_logits.npz"
GOLDEN_OVERRIDES = {"vocab_size": 64}
GOLDEN_TOKENS = [0, 15, 3, 7, 50, 60, 1, 63, 33, 17]


def _golden_model(name: str, root: Path) -> Path:
    make_tiny(root / name, name, seed=5, overrides={**TINY.get(name, {}), **GOLDEN_OVERRIDES})
    return root / name


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_forward_matches_golden_transformers_logits(name, tmp_path):
    with np.load(GOLDEN) as golden:
        expected = golden[name]
        assert golden[f"{name}.tokens"].tolist() == GOLDEN_TOKENS
    with Checkpoint(_golden_model(name, tmp_path)) as ck:
        got = forward(ck, GOLDEN_TOKENS)
    assert got.shape == expected.shape == (len(GOLDEN_TOKENS), 64)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_mistral_large4_wrapper_and_text_model_alone_plan_the_same_language_model():
    """The wrapper keeps the language model under `model.language_model.` and lm_head at the
    top; the bare text config plans a causal LM's names; both the same tensors otherwise."""
    raw = find_preset("mistral-large-4").raw_config
    wrapped, alone = parse_config(raw), parse_config(raw["text_config"])
    assert family_of(wrapped) is family_of(alone) is family_named("mistral_large4_text")
    assert wrapped.reading.tensor_prefix == "model.language_model."
    assert wrapped.reading.outside_plan == ["vision_config"]
    names = [g.family for g in family_of(wrapped).plan(wrapped).groups]
    bare = [g.family for g in family_of(alone).plan(alone).groups]
    assert "lm_head.weight" in names and "model.language_model.rotary_emb.alpha" in names
    assert [n.replace("model.language_model.", "model.") for n in names] == bare


def test_mistral_large4_rows_follow_the_per_layer_lists():
    """NoPE layers fold the rotary width into kv_b_proj; KV-sharing layers have no
    kv_a_proj_with_mqa / kv_a_layernorm; "shared" indexer layers no indexer."""
    text = {**find_preset("mistral-large-4").raw_config["text_config"], "num_hidden_layers": 4,
            **TINY["mistral-large-4"]}
    config = parse_config(text)
    shapes = {s.name: s.shape for s in family_of(config).plan(config).specs}
    n, H, c = config.num_attention_heads, config.hidden_size, config.kv_lora_rank
    attn = "model.layers.{}.self_attn."
    assert shapes[attn.format(0) + "kv_a_proj_with_mqa.weight"] == (c + 64, H)
    assert shapes[attn.format(1) + "kv_a_proj_with_mqa.weight"] == (c, H)  # NoPE
    assert shapes[attn.format(0) + "kv_b_proj.weight"] == (n * (64 + 128), c)
    assert shapes[attn.format(1) + "kv_b_proj.weight"] == (n * (64 + 64 + 128), c)
    for layer in (2, 3):  # KV from layers 0 and 1
        assert attn.format(layer) + "kv_a_proj_with_mqa.weight" not in shapes
        assert attn.format(layer) + "kv_a_layernorm.weight" not in shapes
    assert attn.format(2) + "indexer.wk.weight" not in shapes
    assert shapes[attn.format(3) + "indexer.wq_b.weight"] == (32 * 128, H)
    assert shapes[attn.format(0) + "softmax_scaling.scale"] == (n,)
    assert shapes[attn.format(0) + "q_proj.weight"] == (n * 128, H)


def test_mistral_large4_cache_counts_each_layer_as_it_is():
    """A NoPE layer caches no rope key, a KV-sharing layer no latent, a shared-indexer layer
    no index key (the one KV-cache function info and diff show)."""
    from ckpt_tools.figures.attention_cost import kv_cache_elements

    preset = find_preset("mistral-large-4").config  # every 4th of 72 layers NoPE
    assert kv_cache_elements(preset, 1) == 54 * (512 + 64) + 18 * 512 + 72 * 128
    text = {**find_preset("mistral-large-4").raw_config["text_config"], "num_hidden_layers": 4,
            **TINY["mistral-large-4"]}  # layers 2, 3 share 0, 1's latents; 2 no indexer
    assert kv_cache_elements(parse_config(text), 1) == (512 + 64) + 512 + 3 * 128


def test_mistral_large4_kv_sharing_across_rope_kinds_is_refused():
    text = {**find_preset("mistral-large-4").raw_config["text_config"], "num_hidden_layers": 2,
            "no_rope_layers": [1, 0], "kv_source_layers": [0, 0]}
    with pytest.raises(ConfigError,
                       match="field .kv_source_layers.: layer 1 and its source 0 differ"):
        parse_config(text, source="text_config")


def main(out: Path = GOLDEN) -> None:
    """Regenerate the golden logits with transformers: python tests/test_derived_families.py"""
    import tempfile

    arrays = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(PRESETS):
            logits = transformers_logits(name, _golden_model(name, Path(tmp)), GOLDEN_TOKENS)
            arrays[name] = logits.astype(np.float32)
            arrays[f"{name}.tokens"] = np.array(GOLDEN_TOKENS, np.int32)
    np.savez_compressed(out, **arrays)


if __name__ == "__main__":
    main()


def test_make_tiny_maps_mistral_large4_kv_sharing_to_the_tiny_layers(tmp_path):
    """kv_source_layers holds layer indices, not kinds: a tiny copy of a config that shares
    KV maps them onto its own layers (still sharing, each source owning its KV and of the
    same rotary kind) instead of repeating indices that would point past its layers."""
    raw = find_preset("mistral-large-4").raw_config
    text = dict(raw["text_config"])
    n = text["num_hidden_layers"]
    # every second block of 4 layers reads the KV of the block before (same NoPE pattern)
    text["kv_source_layers"] = [layer - 4 if (layer // 4) % 2 else layer for layer in range(n)]
    (tmp_path / "config.json").write_text(json.dumps({**raw, "text_config": text}))
    tiny = parse_config(tiny_config(str(tmp_path / "config.json")))
    sources = tiny.kv_source_layers
    assert len(sources) == tiny.num_hidden_layers
    assert any(source != layer for layer, source in enumerate(sources))
    for layer, source in enumerate(sources):
        assert sources[source] == source and tiny.uses_rope(layer) == tiny.uses_rope(source)
