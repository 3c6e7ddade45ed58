import hashlib

import numpy as np
import pytest
import safetensors

from ckpt_tools.inventory.checkpoint import Checkpoint
from ckpt_tools.errors import ConfigError, OutputError
from ckpt_tools.commands.tiny import make_tiny


def digest(path):
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def test_deterministic_for_a_seed(make_ckpt):
    a = make_ckpt("v3", fp8=True, shards=3, seed=1, name="a")
    b = make_ckpt("v3", fp8=True, shards=3, seed=1, name="b")
    c = make_ckpt("v3", fp8=True, shards=3, seed=2, name="c")
    assert digest(a) == digest(b) != digest(c)


@pytest.mark.parametrize("preset", ["v2-lite", "v2", "v2.5", "v3", "r1", "v3.1"])
@pytest.mark.parametrize("fp8", [False, True])
def test_checkpoint_matches_its_plan(make_ckpt, preset, fp8):
    path = make_ckpt(preset, fp8=fp8, shards=3)
    with Checkpoint(path) as ck:
        plan = ck.plan
        assert ck.layout == ("fp8" if fp8 else "bf16")
        assert list(ck.index.weight_map) == [s.name for s in plan.specs]
        assert ck.index.total_size == plan.total_bytes
        for spec in plan.specs:
            _, entry = ck.locate(spec.name)
            assert (entry.dtype, entry.shape) == (spec.dtype, spec.shape), spec.name
        # the safetensors package parses every shard (deserialize needs no torch, even
        # for F8_E4M3, which NumPy has no dtype for)
        for shard in ck.shard_names:
            parsed = safetensors.deserialize((path / shard).read_bytes())
            assert {name for name, _ in parsed} == set(ck.header(shard).entries)


def test_structural_features_kept(make_ckpt):
    with Checkpoint(make_ckpt("v3", fp8=True, shards=3)) as ck:
        c = ck.config
        assert c.first_k_dense_replace == 2 and c.num_hidden_layers == 4
        assert c.n_group > 1 and c.num_mtp_layers == 1
        names = ck.index.weight_map
        assert "model.layers.4.eh_proj.weight" in names  # MTP after the 4 main layers
        assert "model.layers.2.mlp.gate.e_score_correction_bias" in names
        # partial FP8 blocks where nothing splits (hidden 96 < 128, q_lora 48); whole ones
        # on each of 2 model-parallel ranks where DeepSeek's layout splits (intermediate 256)
        assert ck.locate("model.layers.0.mlp.gate_proj.weight")[1].shape == (256, 96)
        assert ck.locate("model.layers.0.mlp.gate_proj.weight_scale_inv")[1].shape == (2, 1)
        assert ck.locate("model.layers.0.self_attn.q_b_proj.weight_scale_inv")[1].shape == (4, 1)
        cross = [n for n, s in names.items()
                 if n.endswith("_scale_inv") and names[n.removesuffix("_scale_inv")] != s]
        assert cross, "at least one scale must live in another shard"
    with Checkpoint(make_ckpt("v2-lite")) as ck:
        assert ck.config.q_lora_rank is None
        assert "model.layers.0.self_attn.q_proj.weight" in ck.index.weight_map


def test_fp8_values_dequantise_close_to_the_generated_weights(make_ckpt):
    from ckpt_tools.commands.tiny import tensor_value
    path = make_ckpt("v3", fp8=True)
    with Checkpoint(path) as ck:
        spec = ck.plan.by_name["model.layers.0.self_attn.kv_b_proj.weight"]
        got = ck.read_float32(spec.name)
        want = tensor_value(spec, 0)
        assert np.abs(got - want).max() <= np.abs(want).max() / 16


def test_overrides_and_real_widths(tmp_path):
    r = make_tiny(tmp_path / "w", "v3", real_widths=True, shards=1,
                  overrides={"n_routed_experts": 4, "n_group": 2, "topk_group": 1,
                             "num_experts_per_tok": 2, "num_hidden_layers": 1,
                             "first_k_dense_replace": 1, "num_nextn_predict_layers": 0,
                             "vocab_size": 256, "intermediate_size": 256,
                             "moe_intermediate_size": 128})
    with Checkpoint(r.path) as ck:
        assert ck.config.hidden_size == 7168
        assert (tmp_path / "w" / "model.safetensors").exists()
    with pytest.raises(ConfigError, match="n_group"):
        make_tiny(tmp_path / "x", "v3", overrides={"n_group": 3})
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_refuses_non_empty_destination(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        make_tiny(tmp_path / "d", "v2-lite")
    assert (tmp_path / "d" / "keep.txt").read_text() == "mine"


def test_cli_make_tiny(tmp_path, run_cli):
    r = run_cli("make-tiny", tmp_path / "t", "--preset", "v2", "--shards", "2", "--json")
    assert r.exit_code == 0, r.output
    import json
    doc = json.loads(r.stdout)
    assert doc["shards"] == 2 and doc["layout"] == "bf16"
    r = run_cli("make-tiny", tmp_path / "u", "--preset", "nope")
    assert r.exit_code == 1 and "not a preset" in r.stderr
    r = run_cli("make-tiny", tmp_path / "u", "--set", "novalue")
    assert r.exit_code == 2


def test_values_are_generated_in_bounded_chunks_with_the_same_bytes(monkeypatch):
    """Chunked generation (what keeps real-width make-tiny under 1 GB) draws exactly the
    values of one whole-tensor draw, so checkpoints do not depend on the chunk size."""
    import importlib

    from ckpt_tools.configs.parse import parse_config
    from ckpt_tools.inventory.tensor_plan import TensorPlan
    from ckpt_tools.commands.tiny import tiny_config, value_chunks

    module = importlib.import_module("ckpt_tools.commands.tiny")
    spec = TensorPlan(parse_config(tiny_config("v3"))).by_name["model.embed_tokens.weight"]
    whole = np.concatenate(list(value_chunks(spec, 3)))
    monkeypatch.setattr(module, "CHUNK_ELEMENTS", 96 * 128)  # one 128-row block per chunk
    chunks = list(value_chunks(spec, 3))
    assert len(chunks) == -(-spec.shape[0] // 128) > 1
    assert all(c.dtype == np.float32 and c.shape[0] <= 128 for c in chunks)
    assert np.array_equal(np.concatenate(chunks), whole)
