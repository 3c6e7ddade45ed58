"""`ckpt forward` / `ckpt verify` on DeepSeek-V4 checkpoints: the released storage (FP8 dense,
MXFP4 experts) against its upcast in both layouts, and corruptions named by layer, position
and residual stream."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from conftest import NEEDS_REFERENCE

from ckpt_tools.reference import deepseek_v4
from ckpt_tools.reference.v4_checkpoint import V4Checkpoint
from ckpt_tools.io.safetensors_io import read_header
from ckpt_tools.families.deepseek_v4 import hf_name
from ckpt_tools.commands.verify import forward, open_tensor_source, reference_model, verify

sys.path.insert(0, str(Path(__file__).parent))
from test_progress import Recorder  # noqa: E402
from v4_tiny import (  # noqa: E402
    hf_tensors,
    hub_config,
    hub_tensors,
    quantize_fp4,
    quantized_tensors,
    stored_dtypes,
    write_checkpoint,
)

CONFIG = hub_config(num_hidden_layers=3, compress_ratios=[0, 4, 128, 0], sliding_window=8,
                    index_topk=2)
TOKENS = [int(t) for t in np.random.default_rng(3).integers(0, CONFIG["vocab_size"], 20)]
TOKEN_ARG = ",".join(map(str, TOKENS))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The released storage (FP8/FP4), its BF16 upcast with Hub names, and with HF names."""
    root = tmp_path_factory.mktemp("v4")
    released = write_checkpoint(root / "released", CONFIG,
                                quantized_tensors(CONFIG, hub_tensors(CONFIG, 5)))
    source = V4Checkpoint(released)
    values = {n: source.read_float32(n) for n in hub_tensors(CONFIG, 5)}  # dequantised
    # as an upcast stores them: F32 and I64 tensors unchanged, the rest BF16
    keep = {"f32": np.float32, "i64": np.int64}
    kinds = stored_dtypes(CONFIG)
    as_bf16 = {n: v.astype(keep.get(kinds[n], ml_dtypes.bfloat16))
               for n, v in values.items()}
    upcast = write_checkpoint(root / "upcast-deepseek", CONFIG, as_bf16, shards=3)
    hf = write_checkpoint(root / "upcast-hf", CONFIG, hf_tensors(CONFIG, as_bf16), shards=2)
    return released, upcast, hf


def test_storage_is_what_deepseek_releases(checkpoints):
    released, _, _ = checkpoints
    index = json.loads((released / "model.safetensors.index.json").read_text())["weight_map"]
    source = open_tensor_source(released)
    assert isinstance(source, V4Checkpoint) and source.layout == "deepseek"
    _, entry = source._entry("layers.1.ffn.experts.3.w1.weight")
    assert (entry.dtype, entry.shape) == ("I8", (32, 32))  # 64 inputs, two per byte
    assert source.shape_of("layers.1.ffn.experts.3.w1.weight") == (32, 64)
    assert source._entry("layers.1.ffn.experts.3.w1.scale")[1].dtype == "F8_E8M0"
    assert source._entry("layers.1.attn.wq_b.weight")[1].dtype == "F8_E4M3"
    assert "layers.1.attn.compressor.wkv.scale" not in index


def test_fp4_decoding_matches_the_definition():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 64)).astype(np.float32)
    packed, scale = quantize_fp4(w)
    codes = packed.view(np.uint8)
    table = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6])
    want = np.empty((3, 64))
    for i in range(3):
        for j in range(64):
            code = codes[i, j // 2] >> 4 if j % 2 else codes[i, j // 2] & 0xF
            want[i, j] = table[code] * 2.0 ** (int(scale.view(np.uint8)[i, j // 32]) - 127)
    from ckpt_tools.formats.mxfp4 import dequantize_fp4  # what V4Checkpoint decodes with

    np.testing.assert_array_equal(dequantize_fp4(packed, scale), want)
    np.testing.assert_array_equal(dequantize_fp4(np.tile(packed, (50, 1)), np.tile(scale, (50, 1))),
                                  np.tile(want, (50, 1)))  # across the decoder's row steps
    assert np.abs(want - w).max() <= np.abs(w).max() / 4  # it is a quantisation of w


@pytest.mark.parametrize("layout", ["upcast-deepseek", "upcast-hf"])
def test_released_checkpoint_verifies_against_its_upcast(checkpoints, run_cli, layout):
    released, upcast, hf = checkpoints
    other = upcast if layout == "upcast-deepseek" else hf
    assert open_tensor_source(other).layout == layout.split("-")[1]
    r = run_cli("verify", released, "--against", other, "--tokens", TOKEN_ARG, "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] and report["top1_agreement"] == 1.0
    assert [s["stage"] for s in report["stages"]] == ["layer 0", "layer 1", "layer 2", "output"]
    # FP8 x 2^k and FP4 x 2^k are exact in BF16: the upcast computes the very same numbers
    assert report["max_abs_error"] == 0.0
    assert all(s["max_abs_error"] == 0.0 for s in report["stages"])


def _first_user(path: Path, layer: int) -> tuple[int, int]:
    """An expert that some token uses in `layer`, and the first position using it."""
    chosen = []
    real = deepseek_v4.route
    deepseek_v4.route = lambda *a: chosen.append(real(*a)) or chosen[-1]
    try:
        reference_model(path).forward(TOKENS, layers=layer + 1)
    finally:
        deepseek_v4.route = real
    experts = chosen[layer][0]  # [t, k]
    expert = int(experts[-1, 0])
    return expert, int(np.flatnonzero((experts == expert).any(axis=1))[0])


def _rewrite(path: Path, name: str, change) -> None:
    """Replace one stored tensor in place (same dtype and shape)."""
    source = V4Checkpoint(path)
    reader, entry = source._entry(name)
    offset = reader.header.data_offset + entry.start
    value = change(np.array(reader.get(name)))
    source.close()
    with open(reader.path, "r+b") as f:
        f.seek(offset)
        f.write(np.ascontiguousarray(value).tobytes())


def test_a_corrupted_fp4_expert_fails_naming_its_layer_position_and_stream(
        checkpoints, run_cli, tmp_path):
    released, upcast, _ = checkpoints
    expert, first = _first_user(released, 1)
    bad = tmp_path / "bad"
    shutil.copytree(released, bad)
    # swap the nibbles of every byte: the expert's inputs are permuted pairwise
    _rewrite(bad, f"layers.1.ffn.experts.{expert}.w1.weight",
             lambda a: ((a.view(np.uint8) >> 4) | (a.view(np.uint8) << 4)).view(np.int8))
    r = run_cli("verify", bad, "--against", upcast, "--tokens", TOKEN_ARG, "--json")
    assert r.exit_code == 1
    report = json.loads(r.stdout)
    d = report["first_divergence"]
    assert (d["stage"], d["layer"], d["position"]) == ("layer 1", 1, first)
    assert d["stream"] in range(CONFIG["hc_mult"])
    assert report["stages"][0]["within_tolerance"]
    human = run_cli("verify", bad, "--against", upcast, "--tokens", TOKEN_ARG)
    assert f"layer 1 (residual stream {d['stream']}) diverges first, at position {first}" in (
        human.stdout)


def test_a_corrupted_hc_attn_fn_fails_at_its_layer(checkpoints, run_cli, tmp_path):
    released, upcast, _ = checkpoints
    bad = tmp_path / "bad"
    shutil.copytree(released, bad)
    _rewrite(bad, "layers.2.hc_attn_fn", lambda a: -a)
    r = run_cli("verify", bad, "--against", upcast, "--tokens", TOKEN_ARG, "--json")
    assert r.exit_code == 1
    report = json.loads(r.stdout)
    assert report["first_divergence"]["layer"] == 2
    assert [s["within_tolerance"] for s in report["stages"]][:2] == [True, True]


def test_forward_writes_streams_logits_and_mtp_and_verify_reads_them(checkpoints, run_cli,
                                                                     tmp_path):
    released, upcast, _ = checkpoints
    hidden = tmp_path / "hidden.npz"
    r = run_cli("forward", released, "--layers", "2", "--tokens", TOKEN_ARG, "--out", hidden,
                "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["shape"] == [20, 4 * 64]
    r = run_cli("verify", upcast, "--logits", hidden, "--layers", "2", "--json")
    assert r.exit_code == 0, r.stderr

    logits = tmp_path / "logits.npy"
    assert run_cli("forward", released, "--tokens", TOKEN_ARG, "--out", logits).exit_code == 0
    np.testing.assert_array_equal(np.load(logits), forward(upcast, TOKENS))
    mtp = tmp_path / "mtp.npy"
    r = run_cli("forward", released, "--mtp", "--tokens", TOKEN_ARG, "--out", mtp, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["output"] == "mtp_logits"
    assert np.load(mtp).shape == (19, CONFIG["vocab_size"])


@pytest.mark.parametrize("which", [0, 2])  # released (Hub names, FP8/FP4), transformers names
def test_v4_forward_and_verify_advance_layer_by_layer_in_stored_bytes(checkpoints, which):
    source, upcast = checkpoints[which], checkpoints[1]
    layers = CONFIG["num_hidden_layers"]
    stored = {}
    for shard in sorted(source.glob("*.safetensors")):
        for name, entry in read_header(shard).entries.items():
            if not name.startswith("mtp.") and any(f"layers.{i}." in name for i in range(layers)):
                stored[name] = entry.nbytes
    progress = Recorder()
    logits = forward(source, TOKENS, progress=progress)
    (total, label), = progress.starts
    assert label == "forward" and len(progress.steps) == layers and progress.finished == 1
    assert sum(progress.steps) == total == sum(stored.values())
    progress = Recorder()
    assert verify(source, upcast, TOKENS, progress=progress).ok
    assert len(progress.steps) == layers and sum(progress.steps) == progress.starts[0][0] > 0
    progress = Recorder()
    assert verify(source, logits, TOKENS, progress=progress).ok
    assert sum(progress.steps) == progress.starts[0][0] == total


@pytest.mark.reference
def test_hf_names_are_transformers_own(checkpoints):
    """Every non-expert Hub name maps to a parameter of transformers' model."""
    torch = pytest.importorskip("torch", reason=NEEDS_REFERENCE)
    transformers = pytest.importorskip("transformers", reason=NEEDS_REFERENCE)
    from ckpt_tools.reference.v4_checkpoint import load_config

    released, _, _ = checkpoints
    raw = json.loads((released / "config.json").read_text())
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(
            transformers.AutoConfig.for_model(**raw))
    names = set(model.state_dict())
    config = load_config(released / "config.json")
    hub = [n for n in hub_tensors(CONFIG, 5) if not n.startswith("mtp.")
           and ".ffn.experts." not in n]
    assert config.num_hidden_layers == 3
    assert [n for n in hub if hf_name(n) not in names] == []
    assert "model.layers.1.mlp.experts.gate_up_proj" in names


def test_a_v4_config_without_a_decoder_key_is_one_line(checkpoints, run_cli, tmp_path):
    released, _, _ = checkpoints
    bad = tmp_path / "bad"
    shutil.copytree(released, bad)
    raw = json.loads((bad / "config.json").read_text())
    del raw["index_topk"]
    (bad / "config.json").write_text(json.dumps(raw))
    r = run_cli("forward", bad, "--out", tmp_path / "x.npy")
    assert r.exit_code == 1 and "index_topk" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_fp8_rows_streamed_across_block_boundaries_equal_whole_reads(checkpoints):
    """Slices of 100 rows start inside 128-row scale blocks: still the same numbers."""
    from ckpt_tools.reference.deepseek_v4 import Model
    from ckpt_tools.reference.v4_weights import V4Weights

    released, _, _ = checkpoints
    source = V4Checkpoint(released)
    whole = source.read_float32("layers.1.attn.wq_b.weight")  # [256, 32], 2 row blocks
    parts = [source.read_float32_rows("layers.1.attn.wq_b.weight", r, min(r + 100, 256))
             for r in range(0, 256, 100)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    small = Model(V4Weights(source, chunk_bytes=100 * 32 * 4)).forward(TOKENS)
    # the same weights; only BLAS's blocking of the smaller products may differ
    np.testing.assert_allclose(small, Model(V4Weights(source)).forward(TOKENS), atol=1e-5)
