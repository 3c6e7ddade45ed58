"""DeepSeek-V4: tiny checkpoints with the Hub's names and dtypes, and `ckpt validate` on them
(each broken variant reported under its own code, nothing else wrong)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ckpt_tools.configs.parse import parse_config
from ckpt_tools.io.index import INDEX_FILE, ShardIndex, read_index, write_index
from ckpt_tools.io.safetensors_io import SafetensorsReader, read_header, write_safetensors
from ckpt_tools.commands.tiny import make_tiny
from ckpt_tools.families.deepseek_v4.tensor_plan import V4TensorPlan
from ckpt_tools.commands.validate import validate


@pytest.fixture(scope="session")
def v4_pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("v4")
    out = {}
    for name, kw in {"fp4": {"fp8": True}, "fp8": {"fp8": True, "expert_dtype": "fp8"},
                     "bf16": {}, "pro": {"fp8": True}}.items():
        preset = "v4-pro" if name == "pro" else "v4-flash"
        out[name] = make_tiny(root / name, preset, shards=3, **kw).path
    return out


@pytest.fixture
def v4_copy(v4_pristine, tmp_path):
    def copy(name="fp4"):
        dst = tmp_path / f"copy-{name}"
        shutil.copytree(v4_pristine[name], dst)
        return dst
    return copy


def all_entries(ck):
    out = {}
    for shard in sorted(ck.glob("*.safetensors")):
        out.update({n: (e.dtype, e.shape) for n, e in read_header(shard).entries.items()})
    return out


def codes(report):
    return {f.code for f in report.findings if f.severity in ("error", "warning")}


def edit(ck, name, fn):
    """Rewrite the shard holding `name` with fn(tensors) applied, and fix the index."""
    index = read_index(ck / INDEX_FILE)
    shard = ck / index.weight_map[name]
    with SafetensorsReader(shard) as r:
        tensors = {n: np.array(r.get(n)) for n in r.names}
    fn(tensors)
    write_safetensors(shard, tensors)
    weight_map = {n: f for n, f in index.weight_map.items() if f != shard.name}
    weight_map.update(dict.fromkeys(tensors, shard.name))
    total = sum(e.nbytes for s in ck.glob("*.safetensors") for e in read_header(s).entries.values())
    write_index(ck / INDEX_FILE, ShardIndex(weight_map, total))


def test_tiny_v4_has_hub_names_dtypes_and_every_block_kind(v4_pristine):
    ck = v4_pristine["fp4"]
    cfg = parse_config(json.loads((ck / "config.json").read_text()))
    assert cfg.compress_ratios[: cfg.num_hidden_layers] == [0, 0, 4, 128, 4]  # all three types
    assert cfg.num_hash_layers == 3 and cfg.num_hidden_layers == 5  # hash and learned layers
    entries = all_entries(ck)
    plan = V4TensorPlan(cfg)
    assert entries == {s.name: (s.dtype, s.shape) for s in plan.specs}
    assert entries["layers.0.ffn.gate.tid2eid"][0] == "I64"
    assert entries["layers.3.ffn.gate.bias"][0] == "F32"
    assert entries["layers.2.ffn.experts.1.w1.weight"] == ("I8", (128, 64))
    assert entries["layers.2.ffn.experts.1.w1.scale"] == ("F8_E8M0", (128, 4))
    assert entries["layers.2.attn.indexer.wq_b.scale"][0] == "F8_E8M0"
    assert "layers.3.attn.indexer.wq_b.weight" not in entries  # HCA
    assert "layers.0.attn.compressor.ape" not in entries  # sliding only
    assert {n.split(".")[1] for n in entries if n.startswith("mtp.")} == {"0"}
    assert "mtp.0.e_proj.scale" in entries and "mtp.0.hc_head_fn" in entries
    fp8 = all_entries(v4_pristine["fp8"])
    assert fp8["layers.2.ffn.experts.1.w1.weight"] == ("F8_E4M3", (128, 128))
    bf16 = all_entries(v4_pristine["bf16"])
    assert not any(n.endswith(".scale") for n in bf16)


def test_tiny_v4_is_deterministic(tmp_path):
    a = make_tiny(tmp_path / "a", "v4-flash", fp8=True, seed=3).path
    b = make_tiny(tmp_path / "b", "v4-flash", fp8=True, seed=3).path
    for shard in sorted(a.glob("*.safetensors")):
        assert shard.read_bytes() == (b / shard.name).read_bytes()


@pytest.mark.parametrize("name", ["fp4", "fp8", "bf16", "pro"])
def test_clean_v4_passes_deep(v4_pristine, name):
    report = validate(v4_pristine[name], deep=True)
    assert report.findings == [], report.findings
    assert "deep" in report.checks and "plan" in report.checks
    assert report.layout == ("bf16" if name == "bf16" else "fp8")


def test_missing_scale(v4_copy):
    ck = v4_copy()
    edit(ck, "layers.2.ffn.experts.3.w2.scale", lambda t: t.pop("layers.2.ffn.experts.3.w2.scale"))
    report = validate(ck)
    assert codes(report) == {"scale-missing"}
    assert report.findings[0].tensor == "layers.2.ffn.experts.3.w2.weight"
    assert "MXFP4" in report.findings[0].message


def test_wrong_fp4_scale_shape(v4_copy):
    ck = v4_copy()
    name = "layers.4.ffn.experts.0.w1.scale"
    edit(ck, name, lambda t: t.update({name: t[name][:, :2].copy()}))
    report = validate(ck)
    # the plan check sees the same tensor; the pairing finding names the format
    assert "scale-shape" in codes(report) and codes(report) <= {"scale-shape", "shape-mismatch"}
    f = next(f for f in report.findings if f.code == "scale-shape")
    assert f.tensor == name and "[128, 4]" in f.message and "MXFP4" in f.message


def test_nan_e8m0_scale_deep(v4_copy):
    ck = v4_copy()
    name = "layers.1.attn.wq_b.scale"

    def poison(t):
        raw = t[name].view(np.uint8).copy()
        raw[0, 0] = 255
        t[name] = raw.view(t[name].dtype)
    edit(ck, name, poison)
    assert validate(ck).findings == []  # a value defect: only the deep scan reads values
    report = validate(ck, deep=True)
    assert codes(report) == {"e8m0-nan"}
    assert report.findings[0].tensor == name


def test_tid2eid_out_of_range(v4_copy):
    ck = v4_copy()
    name = "layers.1.ffn.gate.tid2eid"

    def corrupt(t):
        t[name] = t[name].copy()
        t[name][5, 1] = 8  # == n_routed_experts of the tiny model
        t[name][7, 0] = -1
    edit(ck, name, corrupt)
    report = validate(ck)
    assert codes(report) == {"tid2eid-range"}
    assert "2 entries outside [0, 8)" in report.findings[0].message


def test_deep_scan_covers_fp4_bytes(v4_copy):
    ck = v4_copy()
    name = "layers.3.ffn.experts.2.w3.weight"
    edit(ck, name, lambda t: t.update({name: np.full_like(t[name], 0x08)}))  # +-0 pairs
    assert codes(validate(ck, deep=True)) == {"all-zero"}


def test_fp4_detected_from_tensors_not_expert_dtype(v4_copy):
    """The Pro config has no expert_dtype; a config claiming fp8 is still judged by tensors."""
    ck = v4_copy("pro")
    assert "expert_dtype" not in json.loads((ck / "config.json").read_text())
    assert validate(ck).findings == []
    ck = v4_copy("fp4")
    cfg = json.loads((ck / "config.json").read_text())
    (ck / "config.json").write_text(json.dumps({**cfg, "expert_dtype": "fp8"}))
    assert validate(ck).findings == []


def test_validate_cli_v4(v4_pristine, run_cli):
    r = run_cli("validate", v4_pristine["fp4"], "--deep", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["errors"] == 0


@pytest.mark.parametrize("expert_dtype", [None, "fp8"])
def test_make_tiny_cli_announces_and_writes_v4(tmp_path, run_cli, expert_dtype):
    """The CLI sizes a V4 checkpoint with V4's plan before writing it (as for V2/V3)."""
    args = ["make-tiny", tmp_path / "v4", "--preset", "v4-flash", "--fp8", "--json"]
    r = run_cli(*args, *(["--expert-dtype", expert_dtype] if expert_dtype else []))
    assert r.exit_code == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["layout"] == "fp8"
    assert "writing" in r.stderr and f"{doc['tensors']:,} tensors" in r.stderr
    experts = {e.dtype for n, e in _entries(tmp_path / "v4").items()
               if ".ffn.experts." in n and n.endswith(".weight")}
    assert experts == ({"F8_E4M3"} if expert_dtype == "fp8" else {"I8"})
    assert validate(tmp_path / "v4").errors == 0


def _entries(ck):
    out = {}
    for shard in read_index(ck / INDEX_FILE).shards:
        out.update(read_header(ck / shard).entries)
    return out
