"""DeepSeek-V4 upcast (deepseek and hf layouts) and quantize (MXFP4, FP8 experts, re-pack)."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

from ckpt_tools.commands.convert import quantize, upcast
from ckpt_tools.errors import ArgumentError, MissingTensorError
from ckpt_tools.io.index import INDEX_FILE, read_index
from ckpt_tools.io.safetensors_io import SafetensorsReader
from ckpt_tools.commands.tiny import make_tiny
from ckpt_tools.formats.mxfp4 import dequantize_fp4, dequantize_fp8
from ckpt_tools.commands.validate import validate

BF16 = np.dtype(ml_dtypes.bfloat16)


def tensors(ck) -> dict[str, np.ndarray]:
    out = {}
    for shard in sorted(set(read_index(ck / INDEX_FILE).weight_map.values())):
        with SafetensorsReader(ck / shard) as r:
            out.update({n: np.array(r.get(n)) for n in r.names})
    return out


def same_bits(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[n].dtype == b[n].dtype and a[n].shape == b[n].shape
        and a[n].tobytes() == b[n].tobytes() for n in a)


@pytest.fixture(scope="module")
def fp4_src(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("v4src") / "ck", "v4-flash", fp8=True, shards=3).path


def test_upcast_deepseek_layout_is_the_definition(fp4_src, tmp_path):
    report = upcast(fp4_src, tmp_path / "bf16")
    assert report.layout == "deepseek" and report.fp4_dequantized == 3 * 8 * 6
    src, out = tensors(fp4_src), tensors(tmp_path / "bf16")
    assert set(out) == {n for n in src if not n.endswith(".scale")}
    for name, value in out.items():
        scale = name.removesuffix(".weight") + ".scale"
        if scale not in src:
            assert value.tobytes() == src[name].tobytes(), name
            continue
        want = (dequantize_fp4 if src[name].dtype == np.int8 else dequantize_fp8)(
            src[name], src[scale], BF16)
        assert value.dtype == BF16 and value.tobytes() == want.tobytes(), name
    cfg = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert "quantization_config" not in cfg and "expert_dtype" not in cfg
    assert validate(tmp_path / "bf16", deep=True).findings == []


def test_quantize_round_trip_and_expert_fp8(fp4_src, tmp_path):
    upcast(fp4_src, tmp_path / "bf16")
    report = quantize(tmp_path / "bf16", tmp_path / "q4")
    assert report.expert_dtype == "fp4" and report.quantized_fp4 == 3 * 8 * 6
    assert validate(tmp_path / "q4", deep=True).findings == []
    # V4's grids survive BF16: re-quantising the upcast gives the same values back
    upcast(tmp_path / "q4", tmp_path / "again")
    assert same_bits(tensors(tmp_path / "bf16"), tensors(tmp_path / "again"))
    q8 = quantize(tmp_path / "bf16", tmp_path / "q8", expert_dtype="fp8")
    assert q8.quantized_fp4 == 0
    assert (tensors(tmp_path / "q8")["layers.3.ffn.experts.0.w1.weight"].dtype
            == ml_dtypes.float8_e4m3fn)
    assert validate(tmp_path / "q8").findings == []


def test_repack_fp4_experts_to_fp8_is_lossless(fp4_src, tmp_path):
    report = quantize(fp4_src, tmp_path / "fp8", expert_dtype="fp8")
    assert report.repacked == 3 * 8 * 6 and report.max_abs_error == 0.0
    out = tensors(tmp_path / "fp8")
    assert out["layers.2.ffn.experts.5.w2.weight"].dtype == ml_dtypes.float8_e4m3fn
    assert out["layers.2.ffn.experts.5.w2.scale"].shape == (1, 1)
    assert validate(tmp_path / "fp8", deep=True).findings == []
    upcast(fp4_src, tmp_path / "a")
    upcast(tmp_path / "fp8", tmp_path / "b")
    assert same_bits(tensors(tmp_path / "a"), tensors(tmp_path / "b"))


def test_missing_scale_refused_before_writing(fp4_src, tmp_path):
    import shutil

    from ckpt_tools.io.index import ShardIndex, write_index

    ck = tmp_path / "ck"
    shutil.copytree(fp4_src, ck)
    index = read_index(ck / INDEX_FILE)
    weight_map = dict(index.weight_map)
    del weight_map["layers.2.attn.wo_b.scale"]
    write_index(ck / INDEX_FILE, ShardIndex(weight_map, index.total_size))
    with pytest.raises(Exception) as e:  # the index no longer lists a tensor the shard holds
        upcast(ck, tmp_path / "out")
    assert "layers.2.attn.wo_b.scale" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ArgumentError, match="layout 'deepseek' applies to DeepSeek-V4"):
        upcast(make_tiny(tmp_path / "v3", "v3", fp8=True).path, tmp_path / "o", layout="deepseek")


def test_missing_scale_is_named(fp4_src, tmp_path):
    import shutil

    from ckpt_tools.io.index import ShardIndex, write_index
    from ckpt_tools.io.safetensors_io import write_safetensors

    ck = tmp_path / "ck"
    shutil.copytree(fp4_src, ck)
    name = "layers.4.ffn.experts.7.w3.scale"
    index = read_index(ck / INDEX_FILE)
    shard = ck / index.weight_map[name]
    with SafetensorsReader(shard) as r:
        kept = {n: np.array(r.get(n)) for n in r.names if n != name}
    write_safetensors(shard, kept)
    write_index(ck / INDEX_FILE,
                ShardIndex({n: f for n, f in index.weight_map.items() if n != name},
                           index.total_size))
    with pytest.raises(MissingTensorError, match="layers.4.ffn.experts.7.w3.weight"):
        upcast(ck, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.reference
@pytest.mark.parametrize("expert_dtype", [None, "fp8"])
def test_hf_layout_loads_in_transformers_and_equals_its_dequantisation(tmp_path, expert_dtype):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    src = make_tiny(tmp_path / "src", "v4-flash", fp8=True, expert_dtype=expert_dtype).path
    report = upcast(src, tmp_path / "hf", layout="hf")
    assert report.experts_stacked == 2 * 5
    ours, info = transformers.DeepseekV4ForCausalLM.from_pretrained(
        tmp_path / "hf", dtype=torch.bfloat16, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    assert info["mismatched_keys"] == set()
    theirs = transformers.DeepseekV4ForCausalLM.from_pretrained(
        src, dtype=torch.bfloat16,
        quantization_config=transformers.FineGrainedFP8Config(dequantize=True))
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys()
    differ = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert differ == []
    stacked = tensors(tmp_path / "hf")["model.layers.3.mlp.experts.gate_up_proj"]
    assert stacked.shape == (8, 256, 128) and stacked.dtype == BF16


def test_hf_layout_names_and_validate(fp4_src, tmp_path):
    report = upcast(fp4_src, tmp_path / "hf", layout="hf")
    out = tensors(tmp_path / "hf")
    src = tensors(fp4_src)
    assert out["model.layers.2.mlp.experts.gate_up_proj"].shape == (8, 256, 128)
    assert out["model.layers.2.mlp.experts.down_proj"].shape == (8, 128, 128)
    # gate rows of expert 3 then its up rows, each the definition of the FP4 weight
    w1 = dequantize_fp4(src["layers.2.ffn.experts.3.w1.weight"],
                        src["layers.2.ffn.experts.3.w1.scale"], BF16)
    w3 = dequantize_fp4(src["layers.2.ffn.experts.3.w3.weight"],
                        src["layers.2.ffn.experts.3.w3.scale"], BF16)
    stacked = out["model.layers.2.mlp.experts.gate_up_proj"][3]
    assert stacked[:128].tobytes() == w1.tobytes() and stacked[128:].tobytes() == w3.tobytes()
    assert (out["model.layers.0.mlp.gate.tid2eid"].tobytes()
            == src["layers.0.ffn.gate.tid2eid"].tobytes())
    assert "model.layers.3.mlp.gate.e_score_correction_bias" in out
    assert "mtp.0.e_proj.weight" in out and report.experts_stacked == 10
    assert validate(tmp_path / "hf", deep=True).findings == []


def test_nan_scale_stops_upcast(fp4_src, tmp_path, run_cli):
    import shutil

    from ckpt_tools.io.safetensors_io import write_safetensors

    ck = tmp_path / "ck"
    shutil.copytree(fp4_src, ck)
    name = "layers.1.ffn.experts.2.w2.scale"
    shard = ck / read_index(ck / INDEX_FILE).weight_map[name]
    with SafetensorsReader(shard) as r:
        kept = {n: np.array(r.get(n)) for n in r.names}
    raw = kept[name].view(np.uint8).copy()
    raw[4, 1] = 255
    kept[name] = raw.view(kept[name].dtype)
    write_safetensors(shard, kept)
    r = run_cli("upcast", ck, tmp_path / "out", "-q")
    assert r.exit_code == 1 and "byte 255" in r.output and name in r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("layout", ["deepseek", "hf"])
def test_upcast_in_parts_gives_the_same_bytes(fp4_src, tmp_path, monkeypatch, layout):
    """Each output file is written by several part jobs (one tensor each with a tiny part
    size), at offsets fixed by the header: the same files as whole-part runs."""
    from ckpt_tools.families.deepseek_v4 import convert as convert_v4

    whole = upcast(fp4_src, tmp_path / "whole", layout=layout, workers=1)
    monkeypatch.setattr(convert_v4, "PART_BYTES", 1)
    works = []
    real = convert_v4._file_work
    monkeypatch.setattr(convert_v4, "_file_work", lambda *a: works.append(real(*a)) or works[-1])
    parts = upcast(fp4_src, tmp_path / "parts", layout=layout, workers=2)
    assert all(len(w.jobs) == len(w.specs) > 1 for w in works)  # upcast writes no scales
    assert len(works) == len(whole.files)
    for f in whole.files + [INDEX_FILE, "config.json"]:
        assert (tmp_path / "parts" / f).read_bytes() == (tmp_path / "whole" / f).read_bytes(), f
    assert sum(n.jobs for n in parts.nodes) == sum(len(w.jobs) for w in works)
    assert not list((tmp_path / "parts").glob("*.partial"))


def test_quantize_of_a_quantized_v4_names_the_argument_its_caller_spells(fp4_src, tmp_path,
                                                                          run_cli):
    """The library says expert_dtype='fp8', the CLI --expert-dtype fp8 (never a flag in a
    library message)."""
    from ckpt_tools.errors import UnexpectedTensorError

    with pytest.raises(UnexpectedTensorError) as e:
        quantize(fp4_src, tmp_path / "lib")
    assert "expert_dtype='fp8'" in str(e.value) and "--" not in str(e.value)
    r = run_cli("quantize", fp4_src, tmp_path / "cli", "--json")
    assert r.exit_code == 1
    assert "--expert-dtype fp8" in json.loads(r.stdout)["error"]["message"]
