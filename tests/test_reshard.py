"""ckpt reshard: size-based shards, DeepSeek's model-parallel layout and back, coverage."""

from __future__ import annotations

import errno
import importlib
import json
import math
import os

import numpy as np
import pytest

from ckpt_tools.commands import reshard_write
from ckpt_tools.inventory.checkpoint import Checkpoint
from ckpt_tools.configs.parse import read_config_file
from ckpt_tools.io.dtypes import DTYPES
from ckpt_tools.errors import ConfigError, FormatError, VerificationError
from ckpt_tools.families import family_of
from ckpt_tools.io.index import INDEX_FILE, SINGLE_FILE, read_index
from ckpt_tools.inventory.mp_layout import MP_FAMILIES, MpCheckpoint, MpLayout
from ckpt_tools.presets import all_presets, find_preset
from ckpt_tools.commands.reshard import (
    REPORT_FILE,
    ReshardReport,
    from_deepseek_mp,
    iter_layout,
    report_file,
    reshard_by_size,
    to_deepseek_mp,
)
from ckpt_tools.commands.reshard_plan import pack_by_size, plan_reshard, prove_coverage
from ckpt_tools.io.safetensors_io import SafetensorsReader, read_header, write_safetensors
from ckpt_tools.inventory.tensor_plan import TensorPlan

# ckpt_tools.reshard is the function
reshard_mod = importlib.import_module("ckpt_tools.commands.reshard")

# Tiny FP8 widths whose column/row splits fall on 128-wide scale blocks for N = 2, as V3's
# do for N = 16 (the default tiny widths are below one block, so only N = 1 splits them).
FP8_MP_WIDTHS = dict(num_attention_heads=16, num_key_value_heads=16, qk_nope_head_dim=16,
                     qk_rope_head_dim=16, v_head_dim=16, intermediate_size=256,
                     moe_intermediate_size=256)


def tensors(path) -> dict[str, bytes]:
    with Checkpoint(path) as ck:
        return {n: ck.read(n).tobytes() for n in ck.index.weight_map}


def mtp_prefix(path) -> str:
    return f"model.layers.{read_config_file(path / 'config.json').num_hidden_layers}."


def file_bytes(path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.name != REPORT_FILE}


# -- DeepSeek's inference model, derived independently ------------------------------------------
def deepseek_demo_params(cfg: dict, world_size: int, rank: int) -> dict[str, tuple[str, tuple]]:
    """{name: (dtype, shape)} of DeepSeek's inference `Transformer` on one rank.

    Built the way inference/model.py builds it from ModelArgs (HF keys mapped as in
    docs/architecture.md §1): Linear allocates [out, in] and, when 1-byte, a float32 `scale` of
    ceil(out/128) x ceil(in/128); ColumnParallelLinear divides out, RowParallelLinear
    divides in; ParallelEmbedding divides the vocabulary; MoE keeps experts
    [rank*E/N, (rank+1)*E/N); the head is a bf16 ColumnParallelLinear.
    """
    dim, vocab, n_heads = cfg["hidden_size"], cfg["vocab_size"], cfg["num_attention_heads"]
    q_lora_rank = cfg.get("q_lora_rank") or 0  # ModelArgs: 0 means no query compression
    kv_lora_rank, rope = cfg["kv_lora_rank"], cfg["qk_rope_head_dim"]
    nope, v_dim = cfg["qk_nope_head_dim"], cfg["v_head_dim"]
    n_routed, moe_inter = cfg["n_routed_experts"], cfg["moe_intermediate_size"]
    linear_dtype = "F8_E4M3" if "quantization_config" in cfg else "BF16"  # args.dtype
    params: dict[str, tuple[str, tuple]] = {}

    def linear(name, in_features, out_features, dtype=None):
        dtype = dtype or linear_dtype
        params[f"{name}.weight"] = (dtype, (out_features, in_features))
        if dtype == "F8_E4M3":
            params[f"{name}.scale"] = ("F32", ((out_features + 127) // 128,
                                               (in_features + 127) // 128))

    def column(name, in_features, out_features, dtype=None):
        assert out_features % world_size == 0
        linear(name, in_features, out_features // world_size, dtype)

    def row(name, in_features, out_features):
        assert in_features % world_size == 0
        linear(name, in_features // world_size, out_features)

    def norm(name, d):
        params[f"{name}.weight"] = ("BF16", (d,))

    def mlp(name, d, inter):
        column(f"{name}.w1", d, inter)
        row(f"{name}.w2", inter, d)
        column(f"{name}.w3", d, inter)

    params["embed.weight"] = ("BF16", (vocab // world_size, dim))
    for i in range(cfg["num_hidden_layers"]):
        p = f"layers.{i}."
        if q_lora_rank == 0:
            column(p + "attn.wq", dim, n_heads * (nope + rope))
        else:
            linear(p + "attn.wq_a", dim, q_lora_rank)
            norm(p + "attn.q_norm", q_lora_rank)
            column(p + "attn.wq_b", q_lora_rank, n_heads * (nope + rope))
        linear(p + "attn.wkv_a", dim, kv_lora_rank + rope)
        norm(p + "attn.kv_norm", kv_lora_rank)
        column(p + "attn.wkv_b", kv_lora_rank, n_heads * (nope + v_dim))
        row(p + "attn.wo", n_heads * v_dim, dim)
        if "index_topk" in cfg:  # V3.2's Indexer: plain (replicated) Linears and a LayerNorm
            heads, head_dim = cfg["index_n_heads"], cfg["index_head_dim"]
            linear(p + "attn.indexer.wq_b", q_lora_rank, heads * head_dim)
            linear(p + "attn.indexer.wk", dim, head_dim)
            params[p + "attn.indexer.k_norm.weight"] = ("F32", (head_dim,))
            params[p + "attn.indexer.k_norm.bias"] = ("F32", (head_dim,))
            linear(p + "attn.indexer.weights_proj", dim, heads, dtype="BF16")  # default dtype
        if i < cfg["first_k_dense_replace"]:  # Block: MLP if layer_id < n_dense_layers
            mlp(p + "ffn", dim, cfg["intermediate_size"])
        else:
            params[p + "ffn.gate.weight"] = ("BF16", (n_routed, dim))
            # model.py creates Gate.bias when dim == 7168, i.e. for V3's aux-loss-free router
            if cfg.get("topk_method", "noaux_tc") == "noaux_tc":
                params[p + "ffn.gate.bias"] = ("F32", (n_routed,))
            local = n_routed // world_size
            for e in range(rank * local, (rank + 1) * local):
                q = f"{p}ffn.experts.{e}"
                linear(q + ".w1", dim, moe_inter)
                linear(q + ".w2", moe_inter, dim)
                linear(q + ".w3", dim, moe_inter)
            mlp(p + "ffn.shared_experts", dim, cfg["n_shared_experts"] * moe_inter)
        norm(p + "attn_norm", dim)
        norm(p + "ffn_norm", dim)
    norm("norm", dim)
    column("head", dim, vocab, dtype="BF16")
    return params


@pytest.mark.parametrize("preset,fp8,n", [
    ("v2-lite", False, 2), ("v2-lite", False, 4), ("v2", False, 2), ("v3", False, 4),
    ("v2-lite", True, 2), ("v3", True, 2), ("v3", True, 1),
    ("v3.2", False, 4), ("v3.2", True, 2),
])
def test_mp_names_and_shapes_equal_deepseeks_model(make_ckpt, tmp_path, preset, fp8, n):
    src = make_ckpt(preset, fp8=fp8, overrides=FP8_MP_WIDTHS if fp8 and n > 1 else None)
    to_deepseek_mp(src, tmp_path / "mp", n)
    cfg = json.loads((src / "config.json").read_text())
    for rank in range(n):
        header = read_header(tmp_path / "mp" / f"model{rank}-mp{n}.safetensors")
        found = {name: (e.dtype, e.shape) for name, e in header.entries.items()}
        assert found == deepseek_demo_params(cfg, n, rank)


# -- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["v2-lite", "v2", "v3", "v3.2"])
@pytest.mark.parametrize("fp8", [False, True])
def test_hf_mp_hf_is_bitwise(make_ckpt, tmp_path, preset, fp8):
    src = make_ckpt(preset, fp8=fp8, shards=3, overrides=FP8_MP_WIDTHS if fp8 else None)
    n = 2
    to_deepseek_mp(src, tmp_path / "mp", n)
    from_deepseek_mp(tmp_path / "mp", tmp_path / "back", max_shard_size=200_000)
    before, after = tensors(src), tensors(tmp_path / "back")
    dropped = {k for k in before if k.startswith(mtp_prefix(src))}
    assert preset.startswith("v3") == bool(dropped)
    assert after.keys() == before.keys() - dropped
    assert all(after[k] == before[k] for k in after)
    # the MTP-less result says so, and is a checkpoint that matches its own plan
    config = read_config_file(tmp_path / "back" / "config.json")
    assert config.num_mtp_layers == 0
    assert list(read_index(tmp_path / "back" / INDEX_FILE).weight_map) == \
        [s.name for s in TensorPlan(config).specs]
    assert (tmp_path / "back" / "tokenizer_config.json").read_bytes() == \
        (src / "tokenizer_config.json").read_bytes()


@pytest.mark.parametrize("preset", ["v3", "v3.2"])
def test_keep_mtp_round_trip_reproduces_everything(make_ckpt, tmp_path, preset):
    src = make_ckpt(preset, fp8=True, overrides=FP8_MP_WIDTHS)
    report = to_deepseek_mp(src, tmp_path / "mp", 2, keep_mtp=True)
    assert report.mtp == "kept" and report.coverage.dropped_tensors == 0
    names = read_header(tmp_path / "mp" / "model0-mp2.safetensors").entries
    layer = read_config_file(src / "config.json").num_hidden_layers
    assert f"layers.{layer}.eh_proj.weight" in names and f"layers.{layer}.embed.weight" in names
    from_deepseek_mp(tmp_path / "mp", tmp_path / "back")
    assert tensors(tmp_path / "back") == tensors(src)
    assert (tmp_path / "back" / "config.json").read_bytes() == (src / "config.json").read_bytes()
    assert (tmp_path / "back" / SINGLE_FILE).is_file()


def test_mp_checkpoint_reads_like_the_hf_checkpoint(make_ckpt, tmp_path):
    src = make_ckpt("v3", fp8=True, overrides=FP8_MP_WIDTHS)
    to_deepseek_mp(src, tmp_path / "mp", 2)
    with MpCheckpoint(tmp_path / "mp") as mp, Checkpoint(src) as hf:
        assert mp.model_parallel == 2 and mp.layout == "fp8" and not mp.has_mtp
        assert mp.config.hidden_size == hf.config.hidden_size
        for spec in mp.plan.specs:
            assert spec.name in mp
            assert np.array_equal(mp.read_float32(spec.name), hf.read_float32(spec.name),
                                  equal_nan=True)
            rows = spec.shape[0]
            for start, stop in ((0, rows), (rows // 3, rows - 1), (rows - 1, rows)):
                assert np.array_equal(mp.read_float32_rows(spec.name, start, stop),
                                      hf.read_float32_rows(spec.name, start, stop),
                                      equal_nan=True)
            assert mp.shape_of(spec.name) == hf.shape_of(spec.name)
        assert "model.layers.4.eh_proj.weight" not in mp
        with pytest.raises(KeyError):
            mp.read("model.layers.4.eh_proj.weight")


def test_mp_without_config_needs_one(make_ckpt, tmp_path, run_cli):
    src = make_ckpt("v2-lite")
    to_deepseek_mp(src, tmp_path / "mp", 2)
    (tmp_path / "mp" / "config.json").unlink()  # as DeepSeek's convert.py leaves it
    r = run_cli("reshard", tmp_path / "mp", tmp_path / "back", "--to", "hf")
    assert r.exit_code == 1 and "config" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("reshard", tmp_path / "mp", tmp_path / "back", "--to", "hf",
                "--config", src / "config.json")
    assert r.exit_code == 0, r.stderr
    assert tensors(tmp_path / "back") == tensors(src)


# -- sizes ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset,fp8,limit", [("v3", False, 60_000), ("v3", False, 300_000),
                                              ("v2-lite", True, 1), ("v3", True, 60_000)])
def test_size_reshard(make_ckpt, tmp_path, preset, fp8, limit):
    src = make_ckpt(preset, fp8=fp8, shards=2)
    dst = tmp_path / "out"
    reshard_by_size(src, dst, limit)
    index = read_index(dst / INDEX_FILE)
    plan = Checkpoint(src).plan
    assert list(index.weight_map) == [s.name for s in plan.specs]  # plan order
    assert index.total_size == plan.total_bytes
    shards = index.shards
    assert shards == [f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                      for i in range(1, len(shards) + 1)]
    units = []  # (shard, bytes of a weight plus its scale)
    for spec in plan.specs:
        if spec.scale_of:
            assert index.weight_map[spec.name] == index.weight_map[spec.scale_of]
            units[-1][1] += spec.nbytes
        else:
            units.append([index.weight_map[spec.name], spec.nbytes])
    for i, shard in enumerate(shards):
        sizes = [b for s, b in units if s == shard]
        assert sum(sizes) <= limit or len(sizes) == 1  # one oversized unit stands alone
        if i + 1 < len(shards):  # greedy: the next unit did not fit
            first_next = next(b for s, b in units if s == shards[i + 1])
            assert sum(sizes) + first_next > limit
    assert tensors(dst) == tensors(src)
    assert (dst / "config.json").read_bytes() == (src / "config.json").read_bytes()


def test_single_shard_is_model_safetensors(make_ckpt, tmp_path):
    src = make_ckpt("v2-lite", shards=3)
    report = reshard_by_size(src, tmp_path / "one", 10**12)
    assert [f.name for f in report.files] == [SINGLE_FILE]
    assert not (tmp_path / "one" / INDEX_FILE).exists()
    assert tensors(tmp_path / "one") == tensors(src)


def test_pack_by_size_is_greedy_and_keeps_pairs(make_ckpt):
    plan = Checkpoint(make_ckpt("v3", fp8=True)).plan
    for limit in (1, 10_000, 10**9):
        shards = pack_by_size(plan.specs, limit)
        assert [s for shard in shards for s in shard] == plan.specs
        where = {s.name: i for i, shard in enumerate(shards) for s in shard}
        assert all(where[s.name] == where[s.scale_of] for s in plan.specs if s.scale_of)
    assert len(pack_by_size(plan.specs, 10**9)) == 1


# -- errors before writing ----------------------------------------------------------------------
def test_indivisible_n_fails_before_writing(make_ckpt, tmp_path, run_cli):
    src = make_ckpt("v3")
    dst = tmp_path / "mp"
    with pytest.raises(ConfigError, match="does not divide n_routed_experts 8"):
        to_deepseek_mp(src, dst, 3)
    assert not dst.exists()
    r = run_cli("reshard", src, dst, "--to", "deepseek-mp", "--model-parallel", "8")
    assert r.exit_code == 1 and "does not divide" in r.stderr and "Traceback" not in r.stderr
    assert not dst.exists()


def test_fp8_blocks_must_not_straddle_ranks(make_ckpt, tmp_path):
    # q_b_proj with 4 x (16 + 8) = 96 rows: 48 per rank is not a whole block
    src = make_ckpt("v3", fp8=True, overrides={"qk_nope_head_dim": 16, "qk_rope_head_dim": 8})
    with pytest.raises(ConfigError, match="not a multiple of the 128-wide scale block"):
        to_deepseek_mp(src, tmp_path / "mp", 2)
    assert not (tmp_path / "mp").exists()


def test_every_preset_family_has_one_mapping():
    for name in all_presets():
        if find_preset(name).config.model_type == "deepseek_v4":
            continue  # V4 follows its own convert.py rules (test_v4_reshard.py)
        if family_of(find_preset(name).config).no_mp_layout is not None:
            continue  # refused by design (tests/test_derived_families.py)
        plan = TensorPlan(find_preset(name).config)
        MpLayout(plan, 1, keep_mtp=True)  # raises on a family without a mapping
        demo = [MP_FAMILIES[f][0] for f in plan.families]
        assert len(demo) == len(set(demo))


def test_source_not_matching_its_plan_is_refused(make_ckpt, tmp_path):
    src = make_ckpt("v2-lite", shards=1)
    with SafetensorsReader(src / SINGLE_FILE) as r:
        kept = {n: np.array(r.get(n)) for n in r.names[1:]}
    write_safetensors(src / SINGLE_FILE, kept)
    with pytest.raises(Exception, match="model.embed_tokens.weight"):
        reshard_by_size(src, tmp_path / "out", 10**6)
    assert not (tmp_path / "out").exists()


# -- the coverage proof -------------------------------------------------------------------------
def test_report_proves_coverage(make_ckpt, tmp_path):
    src = make_ckpt("v3", shards=2)
    n = 4
    report = to_deepseek_mp(src, tmp_path / "mp", n)
    saved = ReshardReport.model_validate_json(report_file(tmp_path / "mp").read_text())
    assert saved == report.model_copy(update={"resumed_files": 0, "seconds": 0.0, "nodes": []})
    c = report.coverage
    with Checkpoint(src) as ck:
        numel = {n_: math.prod(ck.locate(n_)[1].shape) for n_ in ck.index.weight_map}
    mtp = {k for k in numel if k.startswith(mtp_prefix(src))}
    assert c.complete and c.source_tensors == len(numel)
    assert c.source_elements == sum(numel.values())
    assert c.dropped_tensors == len(mtp) and c.dropped_elements == sum(numel[k] for k in mtp)
    assert c.placed_elements == c.source_elements - c.dropped_elements
    written = sum(math.prod(e.shape) for r in range(n) for e in
                  read_header(tmp_path / "mp" / f"model{r}-mp{n}.safetensors").entries.values())
    assert c.output_elements == c.counted_elements == written
    assert c.replica_elements == written - c.placed_elements > 0


@pytest.mark.parametrize("defect", ["missing", "twice", "overlap"])
def test_coverage_proof_catches_bad_plans(make_ckpt, defect):
    plan = plan_reshard(make_ckpt("v3"), model_parallel=2)
    f = plan.files[0]
    tensors_ = list(f.tensors)
    if defect == "missing":
        del tensors_[next(i for i, t in enumerate(tensors_) if ".experts." in t.name)]
        match = "never written"
    elif defect == "twice":
        tensors_.append(tensors_[-1]._replace(name="copy"))
        match = "written 2 times|tile"
    else:
        i = next(i for i, t in enumerate(tensors_) if t.parts[0].dim is not None)
        p = tensors_[i].parts[0]
        tensors_[i] = tensors_[i]._replace(parts=(p._replace(start=p.start + 1, stop=p.stop + 1),))
        match = "tile"
    plan.files[0] = f._replace(tensors=tuple(tensors_))
    with pytest.raises(VerificationError, match=match):
        prove_coverage(plan)


def test_diverging_replicas_fail_the_way_back(make_ckpt, tmp_path):
    src = make_ckpt("v2-lite")
    to_deepseek_mp(src, tmp_path / "mp", 2)
    rank1 = tmp_path / "mp" / "model1-mp2.safetensors"
    with SafetensorsReader(rank1) as r:
        arrays = {n: np.array(r.get(n)) for n in r.names}
    arrays["layers.1.ffn_norm.weight"][3] += 1  # a replicated norm differs on rank 1
    write_safetensors(rank1, arrays)
    with pytest.raises(VerificationError, match="rank 1 differs"):
        from_deepseek_mp(tmp_path / "mp", tmp_path / "back")
    assert not list((tmp_path / "back").glob("*.safetensors"))


def test_missing_rank_file_is_reported(make_ckpt, tmp_path):
    to_deepseek_mp(make_ckpt("v2-lite"), tmp_path / "mp", 4)
    (tmp_path / "mp" / "model2-mp4.safetensors").unlink()
    with pytest.raises(FormatError, match="model2-mp4.safetensors is missing"):
        from_deepseek_mp(tmp_path / "mp", tmp_path / "back")


# -- resume, workers, streaming API ------------------------------------------------------------
def test_resume_after_interruption_gives_identical_bytes(make_ckpt, tmp_path, monkeypatch):
    src = make_ckpt("v3", shards=2)
    to_deepseek_mp(src, tmp_path / "clean", 4)
    real, calls = reshard_mod.write_part, []  # tiny files: one part (job) each

    def crash_on_third(*args):
        calls.append(args[2])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(reshard_mod, "write_part", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        to_deepseek_mp(src, tmp_path / "resumed", 4)
    first = (tmp_path / "resumed" / "model0-mp4.safetensors").stat().st_mtime_ns
    assert not (tmp_path / "resumed" / "model2-mp4.safetensors").exists()
    monkeypatch.setattr(reshard_mod, "write_part", real)
    report = to_deepseek_mp(src, tmp_path / "resumed", 4)
    assert report.resumed_files == 2
    assert (tmp_path / "resumed" / "model0-mp4.safetensors").stat().st_mtime_ns == first
    assert file_bytes(tmp_path / "resumed") == file_bytes(tmp_path / "clean")
    a, b = (json.loads(report_file(tmp_path / d).read_text()) for d in ("clean", "resumed"))
    assert {**a, "destination": None} == {**b, "destination": None}


def test_workers_give_the_same_bytes(make_ckpt, tmp_path):
    src = make_ckpt("v2", shards=3)
    to_deepseek_mp(src, tmp_path / "one", 2, workers=1)
    to_deepseek_mp(src, tmp_path / "two", 2, workers=2)
    assert file_bytes(tmp_path / "one") == file_bytes(tmp_path / "two")


def test_iter_layout_is_lazy_and_matches_the_files(make_ckpt, tmp_path):
    src = make_ckpt("v3", fp8=True, overrides=FP8_MP_WIDTHS)
    to_deepseek_mp(src, tmp_path / "mp", 2)
    layout = MpLayout(Checkpoint(src).plan, 2)
    it = iter_layout(src, layout)
    rank, name, array = next(it)
    assert (rank, name) == (0, "embed.weight")
    seen = 1
    for rank, name, array in it:
        with SafetensorsReader(tmp_path / "mp" / f"model{rank}-mp2.safetensors") as r:
            stored = r.get(name)
            assert array.dtype == stored.dtype and array.tobytes() == stored.tobytes()
        seen += 1
    assert seen == sum(len(r) for r in layout.ranks)


@pytest.mark.parametrize("shape,dtype", [((37, 300), "BF16"), ((5, 3, 7), "F32"),
                                         ((1000, 4), "F8_E4M3"), ((64, 2048), "F32")])
def test_iter_slice_matches_numpy(tmp_path, shape, dtype):
    rng = np.random.default_rng(0)
    array = rng.normal(size=shape).astype(DTYPES[dtype].numpy)
    write_safetensors(tmp_path / "x.safetensors", {"x": array})
    with SafetensorsReader(tmp_path / "x.safetensors") as r:
        for dim, size in enumerate(shape):
            for start, stop in ((0, size), (1, size - 1), (size // 2, size), (2, 2)):
                for chunk in (61, 4096, 1 << 24):
                    got = b"".join(r.iter_slice("x", dim, start, stop, chunk))
                    want = np.take(array, range(start, stop), axis=dim).tobytes()
                    assert got == want, (dim, start, stop, chunk)


# -- CLI -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,value", [("500MB", 500 * 10**6), ("5GB", 5 * 10**9),
                                        ("5GiB", 5 * 2**30), ("1.5gb", 1_500_000_000),
                                        ("123", 123), ("64KiB", 65536), ("2M", 2 * 10**6)])
def test_size_parsing(text, value):
    from ckpt_tools.sizes import parse_size
    assert parse_size(text) == value


@pytest.mark.parametrize("args", [
    [], ["--model-parallel", "2"], ["--to", "deepseek-mp"],
    ["--to", "deepseek-mp", "--model-parallel", "2", "--max-shard-size", "1GB"],
    ["--max-shard-size", "5XB"], ["--max-shard-size", "0"],
    ["--max-shard-size", "1GB", "--keep-mtp"],
])
def test_cli_usage_errors(make_ckpt, tmp_path, run_cli, args):
    r = run_cli("reshard", make_ckpt("v2-lite"), tmp_path / "out", *args)
    assert r.exit_code == 2, r.output
    assert not (tmp_path / "out").exists()


def test_cli_json_and_human(make_ckpt, tmp_path, run_cli):
    src = make_ckpt("v3")
    r = run_cli("reshard", src, tmp_path / "mp", "--to", "deepseek-mp", "--model-parallel", "2",
                "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)  # exactly one JSON document
    assert doc["coverage"]["complete"] and doc["mtp"] == "dropped"
    r = run_cli("reshard", tmp_path / "mp", tmp_path / "hf", "--to", "hf",
                "--max-shard-size", "100KB")
    assert r.exit_code == 0, r.stderr
    assert "accounted for exactly once" in r.stdout and "checked identical" in r.stdout
    r = run_cli("reshard", tmp_path / "mp", tmp_path / "hf", "--to", "hf")
    assert r.exit_code == 1 and "not empty" in r.stderr


@pytest.mark.parametrize("path", ["kernel copies only", "buffered only", "no copy_file_range"])
def test_copy_paths_give_the_same_bytes(make_ckpt, tmp_path, monkeypatch, path):
    src = make_ckpt("v3", fp8=True, overrides=FP8_MP_WIDTHS)
    to_deepseek_mp(src, tmp_path / "ref", 2)
    from_deepseek_mp(tmp_path / "ref", tmp_path / "ref-back")
    if path == "kernel copies only":
        monkeypatch.setattr(reshard_write, "KERNEL_COPY_MIN_RUN", 1)
    elif path == "buffered only":
        monkeypatch.setattr(reshard_write, "KERNEL_COPY_MIN_RUN", 10**12)
    else:
        def unsupported(*args):
            raise OSError(errno.EXDEV, "cross-device")
        monkeypatch.setattr(os, "copy_file_range", unsupported)
    to_deepseek_mp(src, tmp_path / "mp", 2)
    from_deepseek_mp(tmp_path / "mp", tmp_path / "back")
    assert file_bytes(tmp_path / "mp") == file_bytes(tmp_path / "ref")
    assert file_bytes(tmp_path / "back") == file_bytes(tmp_path / "ref-back")


@pytest.mark.parametrize("preset,fp8", [("v2-lite", False), ("v3", True)])
def test_every_output_passes_validate(make_ckpt, tmp_path, preset, fp8):
    validate = pytest.importorskip("ckpt_tools.commands.validate").validate
    src = make_ckpt(preset, fp8=fp8, overrides=FP8_MP_WIDTHS if fp8 else None)
    reshard_by_size(src, tmp_path / "size", 50_000)
    to_deepseek_mp(src, tmp_path / "mp", 2)
    from_deepseek_mp(tmp_path / "mp", tmp_path / "back", max_shard_size=100_000)
    to_deepseek_mp(src, tmp_path / "mp-mtp", 2, keep_mtp=True)
    for out in ("size", "mp", "back", "mp-mtp"):
        report = validate(tmp_path / out, deep=True)
        assert report.ok and not report.warnings, (out, report.findings)
        assert "plan" in report.checks


def test_mp_source_needs_to_hf(make_ckpt, tmp_path, run_cli):
    to_deepseek_mp(make_ckpt("v2-lite"), tmp_path / "mp", 2)
    r = run_cli("reshard", tmp_path / "mp", tmp_path / "out", "--max-shard-size", "1GB")
    assert r.exit_code == 1 and "--to hf" in r.stderr
    assert not (tmp_path / "out").exists()


def test_ranks_write_only_those_ranks_files(make_ckpt, tmp_path, run_cli):
    """--ranks: a serving node writes what it loads, the same bytes as the full run's."""
    src = make_ckpt("v3", shards=2)
    full = to_deepseek_mp(src, tmp_path / "all", 4, workers=1)
    part = to_deepseek_mp(src, tmp_path / "some", 4, workers=1, ranks=[3, 1])
    assert part.ranks == [1, 3] and part.coverage.complete
    assert [f.name for f in part.files] == ["model1-mp4.safetensors", "model3-mp4.safetensors"]
    assert part.coverage.counted_elements < full.coverage.counted_elements
    written = sorted(p.name for p in (tmp_path / "some").glob("*.safetensors"))
    assert written == ["model1-mp4.safetensors", "model3-mp4.safetensors"]
    for name in written:
        assert (tmp_path / "some" / name).read_bytes() == (tmp_path / "all" / name).read_bytes()
    r = run_cli("reshard", src, tmp_path / "cli", "--to", "deepseek-mp", "--model-parallel", "4",
                "--ranks", "0-1", "--json")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "cli").glob("*.safetensors")) == [
        "model0-mp4.safetensors", "model1-mp4.safetensors"]
    for args in (["--ranks", "4"], ["--ranks", "2-1"], ["--ranks", "x"]):
        bad = run_cli("reshard", src, tmp_path / "bad", "--to", "deepseek-mp",
                      "--model-parallel", "4", *args)
        assert bad.exit_code == 2 and "--ranks" in bad.output
    bad = run_cli("reshard", src, tmp_path / "bad", "--max-shard-size", "1MB", "--ranks", "0")
    assert bad.exit_code == 2 and not (tmp_path / "bad").exists()
    bad = run_cli("reshard", src, tmp_path / "bad", "--to", "deepseek-mp", "--model-parallel",
                  "4", "--rank-resource", "rank")
    assert bad.exit_code == 2 and "--executor ray" in bad.output


def test_the_public_reshard_call_takes_ranks_and_refuses_them_elsewhere(make_ckpt, tmp_path):
    import ckpt_tools
    from ckpt_tools.errors import ArgumentError

    src = make_ckpt("v3", shards=2)
    report = ckpt_tools.reshard(src, tmp_path / "some", to="deepseek-mp", model_parallel=4,
                                ranks=[2], workers=1)
    assert report.ok and report.ranks == [2]
    assert [p.name for p in (tmp_path / "some").glob("*.safetensors")] == ["model2-mp4.safetensors"]
    for wrong in (dict(max_shard_size="1MB", ranks=[0]),
                  dict(max_shard_size="1MB", rank_resource="rank"),
                  dict(to="deepseek-mp", model_parallel=4, rank_resource="rank")):
        with pytest.raises(ArgumentError, match="rank"):
            ckpt_tools.reshard(src, tmp_path / "bad", **wrong)
        assert not (tmp_path / "bad").exists()


def test_a_wrappers_other_towers_are_noted_by_validate_and_kept_by_every_writer(make_ckpt,
                                                                              tmp_path):
    """Mistral Large 4's files hold an MTP head transformers does not build (`mtp_dspark.*`),
    as a multimodal wrapper holds its vision tower: outside the language model's plan.
    validate notes them (tensor-outside-plan, not an error), so reshard and upcast must
    accept them too: one verdict. Each output keeps them as stored."""
    from ckpt_tools.commands.convert import upcast
    from ckpt_tools.commands.validate import validate

    src = make_ckpt("mistral-large-4")
    head = np.arange(24, dtype=np.float32).reshape(4, 6)
    write_safetensors(src / "mtp.safetensors", {"mtp_dspark.layers.0.proj.weight": head})
    index = json.loads((src / INDEX_FILE).read_text())
    index["weight_map"]["mtp_dspark.layers.0.proj.weight"] = "mtp.safetensors"
    index["metadata"]["total_size"] += head.nbytes
    (src / INDEX_FILE).write_text(json.dumps(index))
    report = validate(src)
    assert report.ok and [f.code for f in report.findings] == ["tensor-outside-plan"]
    reshard_by_size(src, tmp_path / "resharded", "1MB")
    upcast(src, tmp_path / "f32", dtype="f32")
    for out in (tmp_path / "resharded", tmp_path / "f32"):
        assert validate(out).errors == 0
        shard = read_index(out / INDEX_FILE).weight_map["mtp_dspark.layers.0.proj.weight"]
        with SafetensorsReader(out / shard) as r:
            np.testing.assert_array_equal(r.get("mtp_dspark.layers.0.proj.weight"), head)
