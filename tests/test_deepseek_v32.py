"""DeepSeek-V3.2 (DSA): the indexer in the tensor plan, validate, info, the forward pass
(V3 equivalence, selection), and upcast into transformers' DeepseekV32ForCausalLM."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from ckpt_tools.inventory.checkpoint import Checkpoint
from ckpt_tools.configs.parse import parse_config
from ckpt_tools.configs.layouts import INFERENCE_CONFIG_FILE
from ckpt_tools.commands.convert import upcast
from ckpt_tools.commands.info import describe
from ckpt_tools.presets import find_preset
from ckpt_tools.reference import Model, forward
from ckpt_tools.reference.deepseek import apply_rope_half_split, indexer_selection
from ckpt_tools.io.safetensors_io import SafetensorsReader, write_safetensors
from ckpt_tools.inventory.tensor_plan import TensorPlan
from ckpt_tools.commands.tiny import make_tiny
from ckpt_tools.commands.validate import validate

TOKENS = [0, 15, 3, 7, 100, 200, 5, 9, 11, 300, 42, 64]
INDEXER = "model.layers.{L}.self_attn.indexer."


def codes(report) -> list[str]:
    return [f.code for f in report.findings]


# -- tensor plan and figures --------------------------------------------------------------
def test_plan_has_the_indexer_rows_of_deepseeks_release():
    c = find_preset("v3.2").config
    plan = TensorPlan(c)
    p = INDEXER.format(L=5)
    rows = {s.name.removeprefix(p): (s.dtype, s.shape) for s in plan.layer_specs(5)
            if s.name.startswith(p)}
    assert rows == {
        "wq_b.weight": ("F8_E4M3", (64 * 128, 1536)),
        "wq_b.weight_scale_inv": ("F32", (64, 12)),
        "wk.weight": ("F8_E4M3", (128, 7168)),
        "wk.weight_scale_inv": ("F32", (1, 56)),
        "k_norm.weight": ("F32", (128,)),
        "k_norm.bias": ("F32", (128,)),
        "weights_proj.weight": ("BF16", (64, 7168)),
    }
    # every layer, the MTP layer included, has one; V3 has none
    layers = {s.layer for s in plan.specs if ".indexer." in s.name}
    assert layers == set(range(c.num_hidden_layers + c.num_mtp_layers))
    assert not any(".indexer." in s.name for s in TensorPlan(find_preset("v3").config).specs)


def test_published_figures_671b_total_37b_activated():
    v32, v3 = (TensorPlan(find_preset(n).config).parameters for n in ("v3.2-exp", "v3"))
    per_layer = 64 * 128 * 1536 + 128 * 7168 + 2 * 128 + 64 * 7168  # wq_b, wk, k_norm, weights_proj
    assert v32.by_component["indexer"] == 61 * per_layer
    assert v32.main - v3.main == 61 * per_layer
    assert v32.mtp - v3.mtp == per_layer
    assert (v32.main // 10**9, v32.activated // 10**9) == (671, 37)  # to the published precision


def test_info_shows_where_the_indexer_sits():
    info = describe("v3.2")
    assert info.parameters.by_component["indexer"] == 61 * 13_959_424
    assert info.architecture.model_type == "deepseek_v32"
    assert info.provenance.kind == "reconstructed"
    assert "config_671B_v3.2.json" in info.provenance.source


# -- validate -----------------------------------------------------------------------------
@pytest.fixture
def v32_fp8(tmp_path) -> Path:
    dst = tmp_path / "v32-fp8"
    make_tiny(dst, "v3.2", fp8=True, seed=1)
    return dst


def _rewrite(path: Path, name: str, change=None) -> None:
    """Rewrite the shard holding `name` with `change(array)` in its place (and the index's
    total_size with it)."""
    index = path / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    shard = path / data["weight_map"][name]
    with SafetensorsReader(shard) as r:
        arrays = {n: np.array(r.get(n)) for n in r.header.entries}
    old = arrays.pop(name)
    if change is None:  # drop the tensor
        del data["weight_map"][name]
        data["metadata"]["total_size"] -= old.nbytes
    else:
        arrays[name] = change(old)
        data["metadata"]["total_size"] += arrays[name].nbytes - old.nbytes
    write_safetensors(shard, arrays, metadata={"format": "pt"})
    index.write_text(json.dumps(data))


def test_tiny_fp8_v32_is_clean_and_its_ue8m0_scales_are_powers_of_two(v32_fp8):
    report = validate(v32_fp8, deep=True)
    assert codes(report) == [], report.findings
    scales = [n for n in Checkpoint(v32_fp8).index.weight_map if n.endswith("_scale_inv")]
    assert any(".indexer.wq_b." in n for n in scales) and any(".indexer.wk." in n for n in scales)


def test_a_scale_that_is_not_a_power_of_two_is_found_under_ue8m0(v32_fp8):
    name = INDEXER.format(L=1) + "wk.weight_scale_inv"
    _rewrite(v32_fp8, name, lambda s: s * np.float32(1.5))
    assert "scale-not-power-of-two" not in codes(validate(v32_fp8))  # values: --deep only
    found = [f for f in validate(v32_fp8, deep=True).findings
             if f.code == "scale-not-power-of-two"]
    assert [f.tensor for f in found] == [name]
    assert found[0].severity == "error" and "ue8m0" in found[0].message


def test_k_norm_in_bf16_and_weights_proj_in_f32_are_accepted(v32_fp8):
    """DSA checkpoints store k_norm in F32 or BF16; transformers keeps weights_proj in F32."""
    bf16 = np.dtype(ml_dtypes.bfloat16)
    _rewrite(v32_fp8, INDEXER.format(L=0) + "k_norm.weight", lambda a: a.astype(bf16))
    _rewrite(v32_fp8, INDEXER.format(L=0) + "k_norm.bias", lambda a: a.astype(bf16))
    _rewrite(v32_fp8, INDEXER.format(L=0) + "weights_proj.weight",
             lambda a: a.astype(np.float32))
    assert codes(validate(v32_fp8)) == []
    _rewrite(v32_fp8, INDEXER.format(L=0) + "weights_proj.weight", lambda a: a.astype(np.float16))
    report = validate(v32_fp8)
    assert codes(report) == ["dtype-differs"]
    assert report.findings[0].tensor == INDEXER.format(L=0) + "weights_proj.weight"


def test_missing_indexer_tensor_is_named(v32_fp8):
    name = INDEXER.format(L=2) + "k_norm.bias"
    _rewrite(v32_fp8, name)
    report = validate(v32_fp8)
    assert codes(report) == ["tensor-missing"]
    assert report.findings[0].tensor == name


# -- forward: the indexer -------------------------------------------------------------------
def test_half_split_rope_rotates_dim_i_with_dim_i_plus_half():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 8)).astype(np.float32)  # [t, h, r]
    angles = rng.normal(size=(5, 4))
    got = apply_rope_half_split(x, np.cos(angles).astype(np.float32),
                                np.sin(angles).astype(np.float32))
    z = (x[..., :4] + 1j * x[..., 4:]) * np.exp(1j * angles)[:, None, :]
    np.testing.assert_allclose(got, np.concatenate([z.real, z.imag], -1), atol=1e-5)


def _as_v3(src: Path, dst: Path) -> Path:
    """The same files under a deepseek_v3 config (the indexer tensors are then unused)."""
    shutil.copytree(src, dst)
    raw = json.loads((dst / "config.json").read_text())
    for key in ("index_n_heads", "index_head_dim", "index_topk"):
        raw.pop(key)
    raw.update(model_type="deepseek_v3", architectures=["DeepseekV3ForCausalLM"])
    (dst / "config.json").write_text(json.dumps(raw))
    return dst


def test_topk_covering_the_sequence_computes_exactly_v3(tmp_path):
    src = tmp_path / "v32"
    make_tiny(src, "v3.2", seed=4, overrides={"index_topk": len(TOKENS)})
    v3 = _as_v3(src, tmp_path / "as-v3")
    np.testing.assert_array_equal(forward(Checkpoint(src), TOKENS),
                                  forward(Checkpoint(v3), TOKENS))


def test_a_small_topk_really_selects(tmp_path):
    """With index_topk 4, rows 0..3 see every causal key (same as dense), later rows 4 keys."""
    src = tmp_path / "v32"
    make_tiny(src, "v3.2", seed=4, overrides={"index_topk": 4})
    model = Model(Checkpoint(src))
    x = model.forward(TOKENS, layers=0)
    seen = []
    real = indexer_selection

    def recording(*args):
        seen.append(real(*args))
        return seen[-1]

    import ckpt_tools.reference.deepseek as deepseek
    deepseek.indexer_selection, before = recording, deepseek.indexer_selection
    try:
        sparse = model.forward(TOKENS)
    finally:
        deepseek.indexer_selection = before
    assert x.shape == (len(TOKENS), 96)
    assert len(seen) == model.config.num_hidden_layers
    for selected in seen:
        assert selected.sum(-1).tolist() == [min(t + 1, 4) for t in range(len(TOKENS))]
        assert not np.triu(selected, 1).any()
    dense = tmp_path / "dense"
    shutil.copytree(src, dense)
    raw = json.loads((dense / "config.json").read_text())
    (dense / "config.json").write_text(json.dumps(dict(raw, index_topk=64)))
    full = forward(Checkpoint(dense), TOKENS)
    # (not bit-equal: later rows change which tokens share an expert's matmul batch)
    np.testing.assert_allclose(sparse[:4], full[:4], atol=1e-5)
    assert np.abs(sparse[4:] - full[4:]).max() > 1e-2


# -- against transformers -------------------------------------------------------------------
def _transformers_logits(path: Path, tokens: list[int]) -> np.ndarray:
    from test_reference import transformers_logits  # one loader for every live comparison

    return transformers_logits(path, tokens)


@pytest.mark.reference
def test_transformers_v32_with_covering_topk_equals_transformers_v3(tmp_path):
    src = tmp_path / "v32"
    make_tiny(src, "v3.2", seed=4, overrides={"index_topk": 16})
    v32 = _transformers_logits(src, TOKENS)
    v3 = _transformers_logits(_as_v3(src, tmp_path / "as-v3"), TOKENS)
    assert np.abs(v32 - v3).max() <= 1e-5
    assert np.abs(forward(Checkpoint(src), TOKENS) - v32).max() <= 1e-4


@pytest.mark.reference
def test_upcast_of_fp8_v32_loads_in_transformers_and_matches_ckpt_forward(v32_fp8, tmp_path,
                                                                          run_cli):
    from ckpt_tools.formats.fp8_block import BF16
    from ckpt_tools.inventory.tensor_plan import SCALE_SUFFIX

    out = tmp_path / "bf16"
    upcast(v32_fp8, out, workers=1)
    src, up = Checkpoint(v32_fp8), Checkpoint(out)
    for name in up.index.weight_map:
        got = up.read(name)
        if name + SCALE_SUFFIX in src:  # the block definition, written out
            w, s = src.read(name).astype(np.float32), src.read(name + SCALE_SUFFIX)
            full = np.repeat(np.repeat(s, 128, 0)[:w.shape[0]], 128, 1)[:, :w.shape[1]]
            assert got.view(np.uint16).tobytes() == (w * full).astype(BF16).view(
                np.uint16).tobytes(), name
        else:  # weights_proj, k_norm, norms, router: untouched
            assert got.tobytes() == src.read(name).tobytes(), name
    assert any(".indexer.wq_b." in n for n in up.index.weight_map)
    expected = _transformers_logits(out, TOKENS)
    r = run_cli("forward", out, "--tokens", ",".join(map(str, TOKENS)),
                "--out", tmp_path / "ours.npy")
    assert r.exit_code == 0, r.output
    ours = np.load(tmp_path / "ours.npy")
    assert ours.shape == expected.shape == (len(TOKENS), 320)
    assert np.abs(ours - expected).max() <= 1e-4


# -- reshard: DeepSeek's convert.py, re-done independently ----------------------------------
# DeepSeek-V3.2-Exp inference/convert.py, as a table: the second-to-last name part -> (its
# demo name, split dim or None). The indexer's four modules are listed there with no dim.
CONVERT_KEYS = {
    "embed_tokens": ("embed", 0), "input_layernorm": ("attn_norm", None),
    "post_attention_layernorm": ("ffn_norm", None), "q_proj": ("wq", 0),
    "q_a_proj": ("wq_a", None), "q_a_layernorm": ("q_norm", None), "q_b_proj": ("wq_b", 0),
    "kv_a_proj_with_mqa": ("wkv_a", None), "kv_a_layernorm": ("kv_norm", None),
    "kv_b_proj": ("wkv_b", 0), "o_proj": ("wo", 1), "gate": ("gate", None),
    "gate_proj": ("w1", 0), "down_proj": ("w2", 1), "up_proj": ("w3", 0),
    "norm": ("norm", None), "lm_head": ("head", 0), "scale": ("scale", None),
    "wq_b": ("wq_b", None), "wk": ("wk", None), "k_norm": ("k_norm", None),
    "weights_proj": ("weights_proj", None),
}


def convert_py(src: Path, mp: int, n_experts: int) -> list[dict[str, bytes]]:
    """What convert.py writes for each rank, tensor by tensor (raw bytes)."""
    ranks: list[dict[str, bytes]] = [{} for _ in range(mp)]
    mtp_layer = json.loads((src / "config.json").read_text())["num_hidden_layers"]
    with Checkpoint(src) as ck:
        for hf_name in ck.index.weight_map:
            if f"model.layers.{mtp_layer}" in hf_name:  # convert.py: "model.layers.61"
                continue
            name = hf_name.removeprefix("model.").replace("self_attn", "attn")
            name = name.replace("mlp", "ffn").replace("weight_scale_inv", "scale")
            name = name.replace("e_score_correction_bias", "bias")
            key = name.split(".")[-2]
            new_key, dim = CONVERT_KEYS[key]
            name = name.replace(key, new_key)
            array = ck.read(hf_name)
            for i in range(mp):
                if "experts" in name and "shared_experts" not in name:
                    if int(name.split(".")[-3]) // (n_experts // mp) != i:
                        continue
                    part = array
                elif dim is not None:
                    size = array.shape[dim] // mp
                    part = np.take(array, range(i * size, (i + 1) * size), axis=dim)
                else:
                    part = array
                ranks[i][name] = np.ascontiguousarray(part).tobytes()
    return ranks


@pytest.mark.parametrize("fp8,mp", [(True, 2), (False, 4)])
def test_reshard_to_deepseek_mp_equals_convert_py_tensor_for_tensor(tmp_path, fp8, mp):
    from test_reshard import FP8_MP_WIDTHS, tensors

    from ckpt_tools.commands.reshard import from_deepseek_mp, to_deepseek_mp

    src = tmp_path / "hf"
    make_tiny(src, "v3.2", fp8=fp8, seed=2, shards=3, overrides=FP8_MP_WIDTHS)
    to_deepseek_mp(src, tmp_path / "mp", mp)
    expected = convert_py(src, mp,
                          json.loads((src / "config.json").read_text())["n_routed_experts"])
    for rank in range(mp):
        with SafetensorsReader(tmp_path / "mp" / f"model{rank}-mp{mp}.safetensors") as r:
            got = {n: np.ascontiguousarray(r.get(n)).tobytes() for n in r.header.entries}
        assert got.keys() == expected[rank].keys()
        assert any(".attn.indexer.wq_b." in n for n in got)
        assert all(got[n] == expected[rank][n] for n in got)
    assert codes(validate(tmp_path / "mp", deep=True)) == []
    # generate.py's config carries the indexer, and reads back as V3.2 with the same indexer
    inference = parse_config(json.loads((tmp_path / "mp" / INFERENCE_CONFIG_FILE).read_text()))
    hf = Checkpoint(src).config
    assert inference.model_type == "deepseek_v32"
    assert ((inference.index_n_heads, inference.index_head_dim, inference.index_topk)
            == (hf.index_n_heads, hf.index_head_dim, hf.index_topk))
    from_deepseek_mp(tmp_path / "mp", tmp_path / "back")
    before, after = tensors(src), tensors(tmp_path / "back")
    mtp = f"model.layers.{Checkpoint(src).config.num_hidden_layers}."
    assert after == {k: v for k, v in before.items() if not k.startswith(mtp)}
    # the model-parallel files run the same forward pass
    from ckpt_tools.inventory.mp_layout import MpCheckpoint
    np.testing.assert_array_equal(forward(MpCheckpoint(tmp_path / "mp"), TOKENS),
                                  forward(Checkpoint(tmp_path / "back"), TOKENS))


# -- diff and info figures ------------------------------------------------------------------
def test_diff_v3_v32_is_the_same_layout_plus_the_indexer():
    from ckpt_tools.commands.diff import diff

    for a in ("v3", "v3.1"):
        r = diff(a, "v3.2")
        assert r.summary.startswith("Same weights layout plus the indexer"), r.summary
        assert {c.status for c in r.plan.changes} == {"added"}
        assert all(".self_attn.indexer." in c.family for c in r.plan.changes)
        assert len(r.plan.changes) == 5  # wq_b, wk, k_norm weight and bias, weights_proj
    assert diff("v3.2", "v3").summary.startswith("Same weights layout minus the indexer")
    assert not diff("v2.5", "v3.2").summary.startswith("Same weights layout")


def figures_flops():
    return describe("v3.2").sparse_attention.flops


def test_dsa_figures_from_independent_formulas():
    from ckpt_tools.commands.diff import diff

    # per entry and layer, MLA absorbed: 128 heads score over 512 + 64, sum 512 values
    n, mla = 61, 2 * 128 * (2 * 512 + 64)
    indexer = 2 * 64 * (128 + 1)  # per key and layer: 64 dot products of 128, then the sum
    rows = {q.key: q for q in diff("v3.1", "v3.2").quantities}
    for L in (4096, 32768, 131072):
        row = rows[f"dsa.attention_flops.{L}"]
        assert row.a == n * mla * L  # V3.1: dense MLA
        assert row.b == n * (mla * min(L, 2048) + indexer * L)
    assert rows["dsa.indexer_per_layer"].b == 13_959_424 and rows["dsa.indexer_per_layer"].a == 0
    assert rows["dsa.kv_extra_bf16"].b == n * 128 * 2
    assert rows["dsa.kv_extra_fp8"].b == n * (128 + 4)
    crossover = rows["dsa.crossover"].b
    cost = lambda L: n * (mla * min(L, 2048) + indexer * L)  # noqa: E731
    assert (cost(crossover) < n * mla * crossover
            and cost(crossover - 1) >= n * mla * (crossover - 1))
    assert 2048 < crossover < 4096
    for cost in figures_flops():
        assert cost.dsa_flops == cost.dsa_mla_flops + cost.indexer_flops
    figures = describe("v3.2").sparse_attention
    assert figures.crossover_context == crossover
    assert figures.indexer_main + figures.indexer_mtp == 62 * 13_959_424
    # stored bytes: FP8 wq_b and wk with their scales, BF16 weights_proj, F32 k_norm
    per_layer = 8192 * 1536 + 64 * 12 * 4 + 128 * 7168 + 56 * 4 + 64 * 7168 * 2 + 2 * 128 * 4
    assert figures.indexer_bytes_per_layer == per_layer
    assert figures.indexer_bytes == 62 * per_layer
    assert describe("v3").sparse_attention is None


def test_cli_info_and_diff_show_dsa(run_cli):
    r = run_cli("info", "v3.2")
    crossover = describe("v3.2").sparse_attention.crossover_context
    assert r.exit_code == 0 and "lightning indexer" in r.output and f"{crossover:,}" in r.output
    r = run_cli("info", "v3.2", "--json")
    assert json.loads(r.output)["sparse_attention"]["index_topk"] == 2048
    r = run_cli("diff", "v3", "v3.2")
    assert r.exit_code == 0 and "Same weights layout plus the indexer" in r.output
    assert "DeepSeek Sparse Attention (lightning indexer)" in r.output


# -- quantize and verify ----------------------------------------------------------------------
def test_quantize_v32_quantizes_wq_b_and_wk_and_leaves_the_rest(tmp_path):
    from ckpt_tools.commands.convert import quantize

    src, dst = tmp_path / "bf16", tmp_path / "fp8"
    make_tiny(src, "v3.2", seed=5)
    report = quantize(src, dst, scale_fmt="ue8m0", workers=1)
    assert report.quantized > 0
    s, q = Checkpoint(src), Checkpoint(dst)
    prefix = INDEXER.format(L=1)
    for name in ("wq_b.weight", "wk.weight"):
        assert q.locate(prefix + name)[1].dtype == "F8_E4M3"
        assert prefix + name + "_scale_inv" in q
    for name in ("weights_proj.weight", "k_norm.weight", "k_norm.bias"):
        assert q.read(prefix + name).tobytes() == s.read(prefix + name).tobytes()
        assert prefix + name + "_scale_inv" not in q
    assert q.raw_config["quantization_config"]["scale_fmt"] == "ue8m0"
    assert codes(validate(dst, deep=True)) == []  # every scale a power of two


def test_verify_mp_against_hf_passes_for_v32(tmp_path, run_cli):
    from ckpt_tools.commands.reshard import to_deepseek_mp

    src = tmp_path / "hf"
    make_tiny(src, "v3.2", seed=6)
    to_deepseek_mp(src, tmp_path / "mp", 2)
    r = run_cli("verify", tmp_path / "mp", "--against", src, "--json")
    assert r.exit_code == 0, r.output + r.stderr
    report = json.loads(r.output)
    assert report["ok"] is True and report["max_abs_error"] == 0.0


def test_transformers_dtypes_survive_reshard_both_ways(tmp_path):
    """transformers saves V3.2 with a float32 weights_proj; a BF16 k_norm is also accepted.
    reshard keeps what is stored, bit for bit, and the mp files validate and run."""
    from test_reshard import tensors

    from ckpt_tools.inventory.mp_layout import MpCheckpoint
    from ckpt_tools.commands.reshard import from_deepseek_mp, to_deepseek_mp

    src = tmp_path / "hf"
    make_tiny(src, "v3.2", seed=8, shards=1)
    bf16 = np.dtype(ml_dtypes.bfloat16)
    config = Checkpoint(src).config
    for layer in range(config.num_hidden_layers + config.num_mtp_layers):
        p = INDEXER.format(L=layer)
        _rewrite(src, p + "weights_proj.weight", lambda a: a.astype(np.float32))
        _rewrite(src, p + "k_norm.weight", lambda a: a.astype(bf16))
        _rewrite(src, p + "k_norm.bias", lambda a: a.astype(bf16))
    assert codes(validate(src)) == []
    to_deepseek_mp(src, tmp_path / "mp", 2, keep_mtp=True)
    assert codes(validate(tmp_path / "mp")) == []
    with SafetensorsReader(tmp_path / "mp" / "model1-mp2.safetensors") as r:
        assert r.entry("layers.0.attn.indexer.weights_proj.weight").dtype == "F32"
        assert r.entry("layers.0.attn.indexer.k_norm.bias").dtype == "BF16"
    from_deepseek_mp(tmp_path / "mp", tmp_path / "back")
    assert tensors(tmp_path / "back") == tensors(src)
    np.testing.assert_array_equal(forward(MpCheckpoint(tmp_path / "mp"), TOKENS),
                                  forward(Checkpoint(src), TOKENS))


@pytest.mark.reference
def test_with_two_indexer_heads_selections_differ_from_transformers_only_at_ties(tmp_path):
    """ReLU makes exact-zero scores common with few heads; torch's topk orders ties its own
    way. Layer 0 (identical inputs): transformers' choice is always a valid top-k under our
    scores, and differs from ours only in rows whose k-th and (k+1)-th scores are tied."""
    import ckpt_tools.reference.deepseek as deepseek

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    tokens, k = TOKENS + [17, 250, 33, 1], 4
    src = tmp_path / "v32"
    make_tiny(src, "v3.2", seed=0, overrides={"index_n_heads": 2, "index_topk": k})
    model = transformers.AutoModelForCausalLM.from_pretrained(
        src, dtype=torch.float32, attn_implementation="eager")
    theirs = []
    model.model.layers[0].self_attn.indexer.register_forward_hook(
        lambda module, args, out: theirs.append(out[0].numpy()))
    with torch.no_grad():
        model(torch.tensor([tokens]))
    ours = []
    real = deepseek.indexer_scores
    try:
        deepseek.indexer_scores = lambda *a: ours.append(real(*a)) or ours[-1]
        forward(Checkpoint(src), tokens, layers=1)
    finally:
        deepseek.indexer_scores = real
    scores, mine = ours[0], deepseek.top_keys(ours[0], k)
    tied_rows = differing = 0
    for t in range(k, len(tokens)):
        picked = np.zeros(len(tokens), bool)
        picked[theirs[0][t]] = True
        row = scores[t, :t + 1]
        assert row[picked[:t + 1]].min() >= row[~picked[:t + 1]].max() - 1e-5, t
        ranked = np.sort(row)[::-1]
        tied = abs(ranked[k - 1] - ranked[k]) <= 1e-6
        tied_rows += tied
        if not np.array_equal(picked, mine[t]):
            differing += 1
            assert tied, f"row {t} differs without a tie"
    assert tied_rows >= differing > 0  # the seed exercises ties


def test_plan_of_a_partial_download_reads_only_present_shards(tmp_path):
    """`ckpt download --layers` leaves most shards absent: the plan asks present shards only."""
    from ckpt_tools.commands.download import check_tensors

    src = tmp_path / "partial"
    make_tiny(src, "v3.2", seed=3, shards=4)
    config = Checkpoint(src).config
    last = config.num_hidden_layers - 1
    weights_proj = INDEXER + "weights_proj.weight"
    for layer in range(config.num_hidden_layers + config.num_mtp_layers):  # as transformers saves
        _rewrite(src, weights_proj.format(L=layer), lambda a: a.astype(np.float32))
    weight_map = Checkpoint(src).index.weight_map
    keep = {s for n, s in weight_map.items() if n.startswith(f"model.layers.{last}.")}
    first_shard = weight_map[weights_proj.format(L=0)]
    assert first_shard not in keep
    for shard in set(weight_map.values()) - keep:
        (src / shard).unlink()
    plan = Checkpoint(src).plan  # layer 0's shard is gone: no error, the stored F32 is adopted
    assert plan.get(weights_proj.format(L=last)).dtype == "F32"
    check = check_tensors(src, sorted(keep), layers=(last, last))
    assert check.complete and not check.problems, check.problems


def test_tiny_v32_where_the_indexer_costs_more_than_mla(tmp_path, run_cli):
    """The tiny indexer (16 heads x 32) costs more per key than the tiny MLA: no crossover,
    said plainly (not an error)."""
    src = tmp_path / "tiny"
    make_tiny(src, "v3.2")
    assert describe(str(src)).sparse_attention.crossover_context is None
    r = run_cli("info", src)
    assert r.exit_code == 0 and "never cheaper" in r.output
    r = run_cli("diff", src, "v3.2")
    assert r.exit_code == 0, r.output


def test_info_chart_shows_the_indexer_bytes_per_layer():
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    from ckpt_tools.commands.plot import info_figure

    info = describe("v3.2")
    per_layer = info.sparse_attention.indexer_bytes_per_layer
    assert info.bytes_by_layer[1].bytes_by_component["indexer"] == per_layer
    bars = info_figure(info).findobj(lambda a: a.get_gid() == "component-indexer")
    heights = [b.get_height() for b in bars]
    assert len(heights) == len(info.bytes_by_layer)
    assert heights[1] == pytest.approx(per_layer / 1e9) and heights[0] == 0
