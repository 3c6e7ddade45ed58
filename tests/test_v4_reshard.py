"""DeepSeek-V4 reshard: by size, to DeepSeek's model-parallel layout and back, bit for bit.

The expected per-rank content is derived here independently, the way DeepSeek's V4
`inference/convert.py` (deepseek-ai/DeepSeek-V4-Flash) decides it from each name: the key is
the last name component for names with "hc", "attn_sink" or "ape" in them, else the
second-to-last; keys embed/head/wq_b/wo_a/attn_sink/weights_proj split on dim 0, wo_b on
dim 1, anything else is copied; routed experts go to rank int(name.split(".")[-3]) // (E/N);
afterwards each rank's wo_a is dequantised to BF16 and its scale dropped."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

from ckpt_tools.errors import ConfigError
from ckpt_tools.io.index import INDEX_FILE, read_index
from ckpt_tools.commands.reshard import from_deepseek_mp, reshard_by_size, to_deepseek_mp
from ckpt_tools.io.safetensors_io import SafetensorsReader
from ckpt_tools.commands.tiny import make_tiny
from ckpt_tools.commands.validate import validate

DIMS = {"embed": 0, "head": 0, "wq_b": 0, "wo_a": 0, "wo_b": 1, "attn_sink": 0,
        "weights_proj": 0}


def hub_tensors(ck) -> dict[str, np.ndarray]:
    index = ck / INDEX_FILE
    shards = sorted(set(read_index(index).weight_map.values())) if index.exists() else [
        "model.safetensors"]
    out = {}
    for shard in shards:
        with SafetensorsReader(ck / shard) as r:
            out.update({n: np.array(r.get(n)) for n in r.names})
    return out


def expected_ranks(tensors: dict[str, np.ndarray], n: int, experts: int) -> list[dict]:
    ranks = [{} for _ in range(n)]
    for name, value in tensors.items():
        key = name.split(".")[-1] if any(x in name for x in ("hc", "attn_sink", "ape")) \
            else name.split(".")[-2]
        dim = DIMS.get(key)
        for i in range(n):
            if "experts" in name and "shared_experts" not in name:
                if int(name.split(".")[-3]) // (experts // n) != i:
                    continue
                ranks[i][name] = value
            elif dim is not None:
                size = value.shape[dim] // n
                ranks[i][name] = np.take(value, range(i * size, (i + 1) * size), axis=dim)
            else:
                ranks[i][name] = value
    for rank in ranks:
        for name in [n for n in rank if n.endswith("wo_a.weight")]:
            w = rank[name].astype(np.float32)
            s = rank.pop(name.replace("weight", "scale")).astype(np.float32)
            r, c = w.shape
            blocks = w.reshape(r // 128, 128, c // 128, 128) * s[:, None, :, None]
            rank[name] = blocks.reshape(r, c).astype(ml_dtypes.bfloat16)
    return ranks


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("v4mp") / "ck", "v4-flash", fp8=True, shards=3).path


@pytest.mark.parametrize("n", [1, 2])
def test_to_deepseek_mp_matches_convert_py_and_back_is_bit_exact(src, tmp_path, n):
    report = to_deepseek_mp(src, tmp_path / "mp", n)
    assert [f.name for f in report.files] == [f"model{i}-mp{n}.safetensors" for i in range(n)]
    source = hub_tensors(src)
    want = expected_ranks(source, n,
                          json.loads((src / "config.json").read_text())["n_routed_experts"])
    for i in range(n):
        with SafetensorsReader(tmp_path / "mp" / f"model{i}-mp{n}.safetensors") as r:
            got = {name: np.array(r.get(name)) for name in r.names}
        assert got.keys() == want[i].keys()
        for name, value in want[i].items():
            assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
            assert got[name].tobytes() == value.tobytes(), name
    assert any(k.startswith("mtp.0.") for k in want[0])  # V4's converter keeps MTP
    back = from_deepseek_mp(tmp_path / "mp", tmp_path / "back")
    assert back.mode == "hf" and back.ok and back.coverage.output_tensors == len(source)
    assert report.ok and report.coverage.source_tensors == len(source)
    assert report.coverage.placed_elements == report.coverage.source_elements
    assert (report.coverage.replica_elements > 0) == (n > 1)
    assert back.coverage.compared_elements == report.coverage.replica_elements
    again = hub_tensors(tmp_path / "back")
    assert again.keys() == source.keys()
    assert all(again[k].dtype == source[k].dtype and again[k].tobytes() == source[k].tobytes()
               for k in source)
    assert validate(tmp_path / "back", deep=True).findings == []


def test_split_that_breaks_scale_blocks_is_refused(src, tmp_path):
    with pytest.raises(ConfigError, match="128-blocks"):
        to_deepseek_mp(src, tmp_path / "mp", 4)
    assert not (tmp_path / "mp").exists()


def test_reshard_by_size_v4(src, tmp_path):
    report = reshard_by_size(src, tmp_path / "out", 1 << 20)
    assert len(report.files) > 1
    assert validate(tmp_path / "out", deep=True).findings == []
    a, b = hub_tensors(src), hub_tensors(tmp_path / "out")
    assert a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_cli_round_trip(src, tmp_path, run_cli):
    r = run_cli("reshard", src, tmp_path / "mp", "--to", "deepseek-mp", "--model-parallel", "2",
                "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["mode"] == "deepseek-mp" and out["ok"] and out["notes"][0].startswith("6 wo_a")
    r = run_cli("reshard", tmp_path / "mp", tmp_path / "hf", "--to", "hf")
    assert r.exit_code == 0, r.output


def test_validate_v4_rank_files(src, tmp_path):
    to_deepseek_mp(src, tmp_path / "mp", 2)
    report = validate(tmp_path / "mp", deep=True)
    assert report.findings == [] and "plan" in report.checks
    from ckpt_tools.io.safetensors_io import write_safetensors

    rank1 = tmp_path / "mp" / "model1-mp2.safetensors"
    with SafetensorsReader(rank1) as r:
        kept = {n: np.array(r.get(n)) for n in r.names if n != "layers.2.attn.wq_b.scale"}
    write_safetensors(rank1, kept)
    report = validate(tmp_path / "mp")
    assert {f.code for f in report.findings} == {"tensor-missing"}
    assert report.findings[0].tensor == "layers.2.attn.wq_b.scale"


def test_verify_hub_against_its_deepseek_mp_reshard(src, run_cli, tmp_path):
    """forward/verify read V4 rank files through mp_v4's split rules: the same function
    (wo_a's BF16 per rank is exact: e4m3 codes times powers of two)."""
    to_deepseek_mp(src, tmp_path / "mp", 2)
    tokens = "3,17,5,200,9,41,7,128,64,1,2,250"
    r = run_cli("verify", src, "--against", tmp_path / "mp", "--tokens", tokens, "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["ok"] and report["top1_agreement"] == 1.0
    assert report["max_abs_error"] == 0.0
    out = tmp_path / "mtp.npy"
    r = run_cli("forward", tmp_path / "mp", "--mtp", "--tokens", tokens, "--out", out, "--json")
    assert r.exit_code == 0, r.stderr
    assert np.load(out).shape[0] == 11


def test_v4_mp_rows_equal_the_hub_rows(src, tmp_path):
    """Row ranges that cross rank boundaries (dim 0) and every rank's columns (wo_b)."""
    from ckpt_tools.reference.v4_checkpoint import V4Checkpoint, V4MpCheckpoint

    to_deepseek_mp(src, tmp_path / "mp", 2)
    hub, mp = V4Checkpoint(src), V4MpCheckpoint(tmp_path / "mp")
    try:
        for name in ("embed.weight", "layers.0.attn.wq_b.weight", "layers.0.attn.wo_a.weight",
                     "layers.0.attn.wo_b.weight", "layers.2.attn.indexer.wq_b.weight",
                     "layers.3.ffn.experts.7.w1.weight", "layers.0.attn.attn_sink",
                     "mtp.0.e_proj.weight"):
            assert mp.shape_of(name) == hub.shape_of(name), name
            rows = hub.shape_of(name)[0]
            for a, b in ((0, rows), (max(0, rows // 2 - 3), min(rows, rows // 2 + 5)),
                         (1, rows - 1)):
                np.testing.assert_array_equal(mp.read_float32_rows(name, a, b),
                                              hub.read_float32_rows(name, a, b), err_msg=name)
    finally:
        hub.close()
        mp.close()


def test_ranks_writes_only_those_rank_files(src, tmp_path):
    """--ranks as for V2/V3: only the named ranks' files, byte-identical to a full run's."""
    full = to_deepseek_mp(src, tmp_path / "full", 2)
    part = to_deepseek_mp(src, tmp_path / "part", 2, ranks=[1])
    assert [f.name for f in part.files] == ["model1-mp2.safetensors"] and part.ranks == [1]
    assert full.ranks is None and sum(n.jobs for n in full.nodes) == 2
    assert not (tmp_path / "part" / "model0-mp2.safetensors").exists()
    assert ((tmp_path / "part" / "model1-mp2.safetensors").read_bytes()
            == (tmp_path / "full" / "model1-mp2.safetensors").read_bytes())
    with pytest.raises(ConfigError, match="rank 2 is outside 0-1"):
        to_deepseek_mp(src, tmp_path / "bad", 2, ranks=[2])
