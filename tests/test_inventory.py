"""One inventory: validate and every writer judge a checkpoint the same way.

The property, over a corpus of tiny checkpoints (every preset, BF16 and FP8, HF and
model-parallel, plus damaged variants): each writer succeeds exactly when `validate`
reports no error, and when it refuses, its error carries a code `validate` gave.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import reindex

from ckpt_tools.inventory.checkpoint import Checkpoint
from ckpt_tools.commands.convert import quantize, upcast
from ckpt_tools.commands.download import check_tensors
from ckpt_tools.errors import CkptError
from ckpt_tools.configs.layouts import family_at
from ckpt_tools.families import family_of
from ckpt_tools.formats.fp8_block import BF16
from ckpt_tools.io.index import INDEX_FILE, read_index
from ckpt_tools.inventory.inspect import inspect
from ckpt_tools.inventory.policy import TOLERATED
from ckpt_tools.presets import all_presets, find_preset
from ckpt_tools.commands.reshard import from_deepseek_mp, reshard_by_size, to_deepseek_mp
from ckpt_tools.io.safetensors_io import SafetensorsReader, read_header, write_safetensors
from ckpt_tools.inventory.tensor_plan import SCALE_SUFFIX
from ckpt_tools.commands.tiny import make_tiny
from ckpt_tools.commands.validate import validate
from ckpt_tools.commands.verify import open_tensor_source

BIAS = "mlp.gate.e_score_correction_bias"
# FP8 widths whose 128-row scale blocks split whole across 2 ranks (tiny widths do not)
FP8_MP_WIDTHS = dict(num_attention_heads=16, num_key_value_heads=16, qk_nope_head_dim=16,
                     qk_rope_head_dim=16, v_head_dim=16, intermediate_size=256,
                     moe_intermediate_size=256)


# -- damage: each keeps the index consistent, so it stays the only defect ------------------
def _edit_all(ck: Path, fn) -> None:
    """Rewrite every shard through fn(dict) -> dict, then the index as the shards are."""
    shards = read_index(ck / INDEX_FILE).shards
    for shard in shards:
        with SafetensorsReader(ck / shard) as r:
            tensors = {n: np.array(r.get(n)) for n in r.names}
        edited = fn(tensors, shard == shards[0])
        if edited is not None:
            write_safetensors(ck / shard, edited)
    reindex(ck)


def bf16_score_bias(ck: Path) -> None:  # what model.to(torch.bfloat16) saves
    _edit_all(ck, lambda t, _: {n: a.astype(BF16) if n.endswith(BIAS) else a
                                for n, a in t.items()})


def f32_norms(ck: Path) -> None:
    _edit_all(ck, lambda t, _: {n: a.astype(np.float32) if "norm" in n else a
                                for n, a in t.items()})


def missing_tensor(ck: Path) -> None:
    name = "model.layers.1.post_attention_layernorm.weight"
    _edit_all(ck, lambda t, _: {n: a for n, a in t.items() if n != name})


def wrong_shape(ck: Path) -> None:
    name = "model.layers.1.input_layernorm.weight"
    _edit_all(ck, lambda t, _: {n: a[:-1] if n == name else a for n, a in t.items()})


def missing_scale(ck: Path) -> None:
    name = "model.layers.1.self_attn.o_proj.weight" + SCALE_SUFFIX
    _edit_all(ck, lambda t, _: {n: a for n, a in t.items() if n != name})


def extra_tensor(ck: Path) -> None:
    _edit_all(ck, lambda t, first: {**t, "model.layers.0.mlp.extra.weight":
                                    np.zeros((4, 4), BF16)} if first else None)


VARIANTS = {"bf16-bias": bf16_score_bias, "f32-norms": f32_norms,
            "missing-tensor": missing_tensor, "wrong-shape": wrong_shape,
            "missing-scale": missing_scale, "extra-tensor": extra_tensor}
# V2/V3-architecture presets: DeepSeek-V4's writers take other arguments (layouts, expert
# formats; deepseek-mp from the released FP8 only) and are held to the same inventory in
# test_v4_convert.py and test_v4_reshard.py.
V2_V3 = [p for p in all_presets() if find_preset(p).raw_config.get("model_type") != "deepseek_v4"]
CASES = ([(p, fp8, None) for p in V2_V3 for fp8 in (False, True)
          if not fp8 or family_of(find_preset(p).config).no_block_fp8 is None]
         + [(p, fp8, v) for p in ("v3", "v2-lite") for fp8 in (False, True) for v in VARIANTS
            if fp8 or v != "missing-scale"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    built: dict[tuple, Path] = {}

    def get(preset: str, fp8: bool, variant: str | None) -> Path:
        key = (preset, fp8, variant)
        if key not in built:
            path = root / f"{preset}-{'fp8' if fp8 else 'bf16'}-{variant or 'clean'}"
            if variant is None:
                make_tiny(path, preset, fp8=fp8, shards=2,
                          overrides=FP8_MP_WIDTHS if fp8 else None)
            else:
                shutil.copytree(get(preset, fp8, None), path)
                VARIANTS[variant](path)
            built[key] = path
        return built[key]

    return get


def _outcome(run) -> CkptError | None:
    try:
        result = run()
    except CkptError as e:
        return e
    if hasattr(result, "problems") and result.problems:  # download's tensor check
        return CkptError(result.problems[0])
    return None


def _agrees(name: str, src: Path, run, tolerated=frozenset()) -> None:
    errors = {f.code for f in validate(src).findings if f.severity == "error"} - tolerated
    refused = _outcome(run)
    if not errors:
        assert refused is None, f"{name} refused {src.name}, which validate passes: {refused}"
        return
    assert refused is not None, f"{name} wrote {src.name} despite validate's {sorted(errors)}"
    code = refused.finding or str(refused).rsplit("[", 1)[-1].split("]")[0]
    assert code in errors and f"[{code}]" in str(refused), (name, str(refused), errors)


def _hf_writers(src: Path, out: Path, fp8: bool) -> dict:
    writers = {
        "upcast": lambda: upcast(src, out / "upcast", workers=1, allow_copy=True),
        "reshard": lambda: reshard_by_size(src, out / "size", 10**5, workers=1),
        "to-mp": lambda: to_deepseek_mp(src, out / "mp", 2, keep_mtp=True, workers=1),
        "read": lambda: open_tensor_source(src).close(),
        "download": lambda: check_tensors(src, read_index(src / INDEX_FILE).shards),
    }
    if not fp8:
        writers["quantize"] = lambda: quantize(src, out / "quantize", workers=1)
    family = family_at(src)  # a family that refuses a layout by design: not a finding
    if family.no_mp_layout is not None:
        del writers["to-mp"]
    if family.no_block_fp8 is not None:
        writers.pop("quantize", None)
    return writers


@pytest.mark.parametrize("preset, fp8, variant", CASES,
                         ids=[f"{p}-{'fp8' if f else 'bf16'}-{v or 'clean'}" for p, f, v in CASES])
def test_every_writer_agrees_with_validate(corpus, tmp_path, preset, fp8, variant):
    src = corpus(preset, fp8, variant)
    for name, run in _hf_writers(src, tmp_path, fp8).items():
        command = {"to-mp": "reshard"}.get(name, name)
        _agrees(name, src, run, TOLERATED[command])
    mp = tmp_path / "mp"
    if mp.is_dir():  # the model-parallel copy is judged the same way
        _agrees("from-mp", mp, lambda: from_deepseek_mp(mp, tmp_path / "back", workers=1))
        _agrees("read-mp", mp, lambda: open_tensor_source(mp).close())


def test_model_parallel_damage_is_refused_with_validates_code(corpus, tmp_path):
    mp = tmp_path / "mp"
    to_deepseek_mp(corpus("v3", True, None), mp, 2, workers=1)
    rank1 = mp / "model1-mp2.safetensors"
    with SafetensorsReader(rank1) as r:
        tensors = {n: np.array(r.get(n)) for n in r.names}
    tensors["layers.0.attn_norm.weight"] = tensors["layers.0.attn_norm.weight"][:-1]
    write_safetensors(rank1, tensors)
    assert {f.code for f in validate(mp).findings if f.severity == "error"} == {"shape-mismatch"}
    _agrees("from-mp", mp, lambda: from_deepseek_mp(mp, tmp_path / "back", workers=1))


@pytest.mark.parametrize("fp8", [False, True])
def test_bf16_bias_reshards_to_deepseek_mp_and_back_bit_exactly(corpus, tmp_path, fp8):
    src = corpus("v3", fp8, "bf16-bias")
    report = validate(src)
    assert report.errors == 0 and {f.code for f in report.findings} == {"dtype-differs"}
    to_deepseek_mp(src, tmp_path / "mp", 2, keep_mtp=True, workers=1)
    assert {f.code for f in validate(tmp_path / "mp").findings} == {"dtype-differs"}
    from_deepseek_mp(tmp_path / "mp", tmp_path / "back", workers=1)

    def tensors(ck: Path) -> dict[str, tuple[str, bytes]]:
        out = {}
        for shard in Checkpoint(ck).shard_names:
            with SafetensorsReader(ck / shard) as r:
                out.update({n: (r.header[n].dtype, r.get(n).tobytes())
                            for n in r.names})
        return out

    before, after = tensors(src), tensors(tmp_path / "back")
    assert before == after
    assert {d for n, (d, _) in after.items() if n.endswith(BIAS)} == {"BF16"}


def test_one_shard_of_a_set_is_judged_on_its_own_entries(corpus, tmp_path):
    src = corpus("v3", True, None)
    index = read_index(src / INDEX_FILE)
    shards, where = index.shards, index.weight_map
    crossing = [n for n, s in where.items()  # scales the other shard's weight owns
                if n.endswith(SCALE_SUFFIX) and where[n.removesuffix(SCALE_SUFFIX)] != s]
    assert len(shards) == 2 and crossing
    for shard in shards:  # a clean shard: nothing missing, even scales held by the other
        report = validate(src / shard)
        assert report.errors == 0, [f.message for f in report.findings]
        assert report.tensors == len(read_header(src / shard).entries)
    alone = tmp_path / "no-index"  # without the index: the rest of the set is unknown
    shutil.copytree(src, alone)
    (alone / INDEX_FILE).unlink()
    for shard in shards:
        assert validate(alone / shard).errors == 0
    broken = corpus("v3", True, "wrong-shape")
    found = {s: {f.code for f in inspect(broken / s).findings if f.severity == "error"}
             for s in shards}
    assert sorted(found.values(), key=len) == [set(), {"shape-mismatch"}]


def test_policy_tolerates_a_missing_mtp_layer_only_where_the_output_stays_right(corpus, tmp_path):
    """Reshard plans only the MTP layer the tensors hold (and says so); upcast would write a
    checkpoint whose config declares a layer it lacks, so it refuses under validate's code."""
    src = tmp_path / "no-mtp"
    shutil.copytree(corpus("v3", True, None), src)
    _edit_all(src, lambda t, _: {n: a for n, a in t.items() if not n.startswith(
        "model.layers.4.")})  # v3's tiny preset: 4 decoder layers, then the MTP layer
    assert {f.code for f in validate(src).findings if f.severity == "error"} == {"mtp-missing"}
    _agrees("upcast", src, lambda: upcast(src, tmp_path / "up", workers=1, allow_copy=True))
    report = reshard_by_size(src, tmp_path / "size", 10**5, workers=1)
    assert report.mtp == "absent" and report.notes
    open_tensor_source(src).close()
