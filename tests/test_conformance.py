"""Conformance: every registered preset through the whole pipeline, at tiny widths.

make-tiny -> validate -> upcast and quantize (each of the family's formats) -> reshard by
size -> DeepSeek's model-parallel layout and back -> verify against the source -> diff and
`diff --values` against the round trip -> forward against transformers. Every step's report
is `.ok`, every written checkpoint validates without error, and what should be bit-exact is
(HF -> mp -> HF, by-size resharding, FP8 with power-of-two scales upcast and quantized back).

The matrix comes from the preset registry (`ckpt_tools.presets`): each preset is built in
BF16 and, when its release is FP8, in FP8 with the release's scale format (and each expert
format its config offers). A family added to the registry is covered by its presets; only a
family whose storage has a new shape needs a row in `FAMILY_STORAGE` or `FAMILY_LAYOUTS`.

Known failures are listed in `KNOWN_FAILURES` with the exact failure and who fixes it:
they run as strict xfails, so fixing one turns the suite red until its entry is removed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import NEEDS_REFERENCE, shrink_vision_tower, transformers_model_with_experts_filled

from ckpt_tools import (
    CkptError,
    diff,
    forward,
    make_tiny,
    quantize,
    read_config_file,
    reshard,
    upcast,
    validate,
    verify,
)
from ckpt_tools.inventory.checkpoint import Checkpoint
from ckpt_tools.families import family_named
from ckpt_tools.presets import all_presets

# -- how each family is stored: the only per-family data this module holds ------------------
# model_type -> the expert formats its FP8 layout offers (make-tiny's and quantize's
# `expert_dtype`); a family without this choice has none.
FAMILY_STORAGE: dict[str, tuple[str, ...]] = {"deepseek_v4": ("fp4", "fp8")}
# model_type -> upcast layouts beyond the source's own names
FAMILY_LAYOUTS: dict[str, tuple[str, ...]] = {"deepseek_v4": ("hf",)}
# model_type -> the layout DeepSeek's model-parallel files are made from ("fp8": the
# release; DeepSeek's V4 convert.py dequantises wo_a from it), default: any
MP_SOURCE_LAYOUT: dict[str, str] = {"deepseek_v4": "fp8"}
# FP8 weights split across 2 ranks must keep whole 128-wide scale blocks per rank
# (the V2/V3 families; V4's tiny widths are multiples of 128 already)
FP8_MP_WIDTHS = dict(num_attention_heads=16, num_key_value_heads=16, qk_nope_head_dim=16,
                     qk_rope_head_dim=16, v_head_dim=16, intermediate_size=256,
                     moe_intermediate_size=256)
MODEL_PARALLEL = 2
TOKENS = [0, 15, 3, 7, 100, 200, 5, 9, 11, 42, 64, 1]  # below V4's tiny vocab (256)


@dataclass(frozen=True)
class Case:
    preset: str
    model_type: str
    fp8: bool
    scale_fmt: str | None  # the release's (None: float amax/448 scales)
    expert_dtype: str | None  # V4's expert format in its FP8 layout

    @property
    def id(self) -> str:
        storage = "bf16" if not self.fp8 else f"fp8-{self.scale_fmt or 'float'}"
        return f"{self.preset}-{storage}" + (f"-experts-{self.expert_dtype}"
                                             if self.expert_dtype else "")

    @property
    def power_of_two_scales(self) -> bool:
        return self.scale_fmt == "ue8m0"

    @property
    def family(self):
        return family_named(self.model_type)

    @property
    def quantize_formats(self) -> list[dict]:
        """The quantize options of every FP8 format of the family (none: block FP8 is
        refused by design, e.g. Mistral 4's fused experts)."""
        if self.family.no_block_fp8 is not None:
            return []
        if self.model_type in FAMILY_STORAGE:
            return [{"expert_dtype": e} for e in FAMILY_STORAGE[self.model_type]]
        return [{"scale_fmt": "float"}, {"scale_fmt": "ue8m0"}]

    @property
    def has_mp(self) -> bool:
        if self.family.no_mp_layout is not None:  # refused by design, naming why
            return False
        return MP_SOURCE_LAYOUT.get(self.model_type, "fp8" if self.fp8 else "bf16") == (
            "fp8" if self.fp8 else "bf16")

    @property
    def overrides(self) -> dict | None:
        return FP8_MP_WIDTHS if self.fp8 and self.model_type not in FAMILY_STORAGE else None


def _cases() -> list[Case]:
    out = []
    for name, preset in sorted(all_presets().items()):
        config = preset.config
        qc = config.quantization_config
        out.append(Case(name, config.model_type, False, None, None))
        if qc is None and preset.raw_config.get("quantization_config") is None:
            continue  # released in BF16 only
        for experts in FAMILY_STORAGE.get(config.model_type, (None,)):
            out.append(Case(name, config.model_type, True, qc.scale_fmt if qc else None, experts))
    return out


CASES = _cases()
BY_ID = {c.id: c for c in CASES}


# -- known failures: (case id, step) -> the failure and who fixes it ----------------------------
def _v4(step: str, reason: str, helper: str) -> dict:
    return {(c.id, step): f"{reason}; fixed by issue 24 {helper}" for c in CASES
            if c.model_type == "deepseek_v4"}


KNOWN_FAILURES: dict[tuple[str, str], str] = {}


def case_params(step: str, keep=lambda c: True) -> list:
    """The cases of one step, each marked xfail(strict) when a known failure."""
    params = []
    for c in CASES:
        if not keep(c):
            continue
        reason = KNOWN_FAILURES.get((c.id, step))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(c, id=c.id, marks=marks))
    return params


def test_the_matrix_covers_every_family_and_format_the_issue_names():
    ids = set(BY_ID)
    for expected in ("v2-lite-bf16", "v2.5-bf16", "v3-bf16", "v3-fp8-float",
                     "v3.1-fp8-ue8m0", "v3.2-fp8-ue8m0", "kimi-k2-fp8-float", "moonlight-bf16",
                     "v4-flash-fp8-ue8m0-experts-fp4", "v4-flash-fp8-ue8m0-experts-fp8",
                     "v4-pro-fp8-ue8m0-experts-fp4", "v4-pro-fp8-ue8m0-experts-fp8"):
        assert expected in ids, expected
    assert {c.preset for c in CASES} == set(all_presets())
    assert all(case_id in BY_ID for case_id, _ in KNOWN_FAILURES)


# -- helpers --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """case -> its tiny checkpoint (built once per module)."""
    built: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("conformance")

    def get(case: Case) -> Path:
        if case.id not in built:
            dst = root / case.id
            make_tiny(dst, case.preset, fp8=case.fp8, expert_dtype=case.expert_dtype,
                      overrides=case.overrides)
            built[case.id] = dst
        return built[case.id]

    return get


@pytest.fixture(scope="module")
def round_trips(sources, tmp_path_factory):
    """case -> (source, its family's longest lossless round trip): through DeepSeek's
    model-parallel layout where the family makes it from this storage, else resharded by
    size (built once per module)."""
    built: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("round-trips")

    def get(case: Case) -> tuple[Path, Path]:
        src = sources(case)
        if case.id not in built:
            out = root / case.id
            if case.has_mp:
                built[case.id] = _mp_round_trip(src, out)
            else:
                assert reshard(src, out / "sz", max_shard_size=shard_size(src), workers=1).ok
                built[case.id] = out / "sz"
        return src, built[case.id]

    return get


def shard_size(path: Path) -> int:
    """A maximum shard size that makes about four shards of `path`."""
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) // 4 + 1


def tensors(path: Path) -> dict[str, bytes]:
    with Checkpoint(path) as ck:
        return {n: ck.read(n).tobytes() for n in ck.index.weight_map}


def scale_names(path: Path) -> set[str]:
    with Checkpoint(path) as ck:
        return {s.name for s in ck.plan.specs if s.scale_of}


def assert_valid(path: Path) -> None:
    report = validate(path)
    problems = [f"{f.code}: {f.message}" for f in report.findings if f.severity == "error"]
    assert report.ok and report.errors == 0, problems


def assert_clean_failure(error: BaseException, dst: Path) -> None:
    """A refusal is a one-line CkptError and leaves no partial output behind."""
    assert isinstance(error, CkptError), f"{type(error).__name__}: {error}"
    assert "\n" not in str(error)
    left = sorted(p.name for p in dst.iterdir()) if dst.exists() else []
    assert left == [], left


# -- make-tiny -> validate --------------------------------------------------------------------
@pytest.mark.parametrize("case", case_params("make_tiny"))
def test_make_tiny_writes_a_checkpoint_that_validates(tmp_path, case):
    report = make_tiny(tmp_path / "t", case.preset, fp8=case.fp8, expert_dtype=case.expert_dtype,
                       overrides=case.overrides)
    assert report.ok and report.tensors > 0 and report.layout == ("fp8" if case.fp8 else "bf16")
    assert_valid(tmp_path / "t")


@pytest.mark.parametrize("case", case_params("make_tiny_shrunk", lambda c: not c.fp8))
def test_make_tiny_reports_what_it_shrunk(tmp_path, case):
    report = make_tiny(tmp_path / "t", case.preset)
    assert "hidden_size" in report.shrunk and "num_hidden_layers" in report.shrunk
    source, tiny = report.shrunk["hidden_size"]
    assert tiny < source


# -- upcast and quantize ----------------------------------------------------------------------
@pytest.mark.parametrize("case", case_params("upcast_quantize", lambda c: c.fp8))
def test_upcast_then_quantize_back(sources, tmp_path, case):
    src = sources(case)
    up = upcast(src, tmp_path / "up", workers=1)
    assert up.ok and up.dequantized > 0
    assert_valid(tmp_path / "up")
    back = quantize(tmp_path / "up", tmp_path / "back", workers=1, scale_fmt=case.scale_fmt,
                    expert_dtype=case.expert_dtype)
    assert back.ok and back.quantized > 0
    assert_valid(tmp_path / "back")
    assert tensors(tmp_path / "back").keys() == tensors(src).keys()
    values = diff(src, tmp_path / "back", values=True).values
    assert values.compared == len(tensors(src)) and values.skipped == {}
    scales = scale_names(src)
    weights = [t for t in values.tensors if t.name not in scales]
    if case.power_of_two_scales:
        # q x 2^k is exact in BF16, so every weight's value comes back bit for bit (its
        # bytes may not: a block whose largest code was at most 224 comes back as 2q x 2^(k-1))
        assert [t.name for t in weights if t.max_abs != 0] == []
    else:  # float scales: the BF16 rounding of q x s may move a code, not more
        assert max(t.rel_l2 for t in weights) < 0.02


@pytest.mark.parametrize("case", case_params("quantize_upcast", lambda c: not c.fp8))
def test_quantize_each_format_then_upcast(sources, tmp_path, case):
    src = sources(case)
    n = len(tensors(src))
    if not case.quantize_formats:  # the family refuses block FP8, in one line, writing nothing
        with pytest.raises(CkptError) as info:
            quantize(src, tmp_path / "q", workers=1)
        assert_clean_failure(info.value, tmp_path / "q")
    for i, options in enumerate(case.quantize_formats):
        q, up = tmp_path / f"q{i}", tmp_path / f"up{i}"
        report = quantize(src, q, workers=1, **options)
        assert report.ok and report.quantized > 0, options
        assert_valid(q)
        assert upcast(q, up, workers=1).ok
        assert_valid(up)
        values = diff(src, up, values=True).values
        assert values.compared == n and values.min_cosine > 0.98, options


@pytest.mark.parametrize("case", case_params(
    "upcast_hf_then_convert", lambda c: c.fp8 and c.model_type in FAMILY_LAYOUTS))
def test_upcast_to_another_layout_then_quantize_and_reshard(sources, tmp_path, case):
    src = sources(case)
    for layout in FAMILY_LAYOUTS[case.model_type]:
        out = tmp_path / layout
        assert upcast(src, out, workers=1, layout=layout).ok
        assert_valid(out)
        try:  # quantize writes DeepSeek's names: from transformers' stacked experts it may
            # refuse, in one line and writing nothing, but never crash
            assert quantize(out, tmp_path / f"{layout}-q", workers=1,
                            expert_dtype=case.expert_dtype).ok
        except CkptError as error:
            assert layout == "hf" and "layout" in str(error), error
            assert_clean_failure(error, tmp_path / f"{layout}-q")
        else:
            assert_valid(tmp_path / f"{layout}-q")
        assert reshard(out, tmp_path / f"{layout}-sz", max_shard_size=shard_size(out), workers=1).ok
        assert tensors(tmp_path / f"{layout}-sz") == tensors(out)


@pytest.mark.parametrize("case", case_params(
    "upcast_unknown_layout", lambda c: c.fp8 and c.model_type not in FAMILY_LAYOUTS))
def test_upcast_layout_option_is_refused_or_honoured_never_ignored(sources, tmp_path, case):
    """The family's own names may already be the layout asked for; then the report says so."""
    try:
        report = upcast(sources(case), tmp_path / "hf", workers=1, layout="hf")
    except Exception as error:  # noqa: BLE001  (what is raised is the point)
        assert_clean_failure(error, tmp_path / "hf")
    else:
        assert getattr(report, "layout", None) == "hf", "the layout option was ignored"


# -- reshard ----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", case_params("reshard_by_size"))
def test_reshard_by_size_is_bit_exact(sources, tmp_path, case):
    src = sources(case)
    report = reshard(src, tmp_path / "sz", max_shard_size=shard_size(src), workers=1)
    assert report.ok and len(report.files) > 2
    assert_valid(tmp_path / "sz")
    assert tensors(tmp_path / "sz") == tensors(src)


def _mp_round_trip(src: Path, out: Path) -> Path:
    to_mp = reshard(src, out / "mp", to="deepseek-mp", model_parallel=MODEL_PARALLEL,
                    keep_mtp=True, workers=1)
    assert to_mp.ok
    back = reshard(out / "mp", out / "back", to="hf", workers=1)
    assert back.ok
    return out / "back"


@pytest.mark.parametrize("case", case_params("mp_round_trip", lambda c: c.has_mp))
def test_hf_to_deepseek_mp_and_back_is_bit_exact(sources, tmp_path, case):
    src = sources(case)
    back = _mp_round_trip(src, tmp_path)
    assert_valid(back)
    assert tensors(back) == tensors(src)
    assert read_config_file(back / "config.json") == read_config_file(src / "config.json")


@pytest.mark.parametrize("case", case_params("mp_refused", lambda c: not c.has_mp))
def test_deepseek_mp_from_a_layout_it_is_not_made_from_is_refused_cleanly(sources, tmp_path, case):
    with pytest.raises(Exception) as info:
        reshard(sources(case), tmp_path / "mp", to="deepseek-mp", model_parallel=MODEL_PARALLEL,
                workers=1)
    assert_clean_failure(info.value, tmp_path / "mp")


@pytest.mark.parametrize("case", case_params("mp_to_mp", lambda c: c.has_mp))
def test_deepseek_mp_to_deepseek_mp_converts_or_refuses_cleanly(sources, tmp_path, case):
    src = sources(case)
    assert reshard(src, tmp_path / "mp", to="deepseek-mp", model_parallel=MODEL_PARALLEL,
                   workers=1).ok
    try:
        report = reshard(tmp_path / "mp", tmp_path / "mp2", to="deepseek-mp",
                         model_parallel=MODEL_PARALLEL, workers=1)
    except Exception as error:  # noqa: BLE001  (what is raised is the point)
        assert_clean_failure(error, tmp_path / "mp2")
    else:
        assert report.ok
        back = reshard(tmp_path / "mp2", tmp_path / "back", to="hf", workers=1)
        assert back.ok and tensors(tmp_path / "back").keys() <= tensors(src).keys()


# -- verify and diff against the round trip ----------------------------------------------------
@pytest.mark.parametrize("case", case_params("verify"))
def test_round_trip_verifies_against_the_source(round_trips, case):
    src, back = round_trips(case)
    report = verify(back, src, TOKENS)
    assert report.ok and report.max_abs_error == 0.0


@pytest.mark.parametrize("case", case_params("diff"))
def test_diff_against_the_round_trip_shows_identical_tensors(round_trips, case):
    src, back = round_trips(case)
    n = len(tensors(src))
    report = diff(src, back)
    assert report.ok and report.headers is not None and report.values is None
    assert report.headers.matching and report.headers.common == n and report.headers.groups == []
    values = diff(src, back, values=True).values
    assert values.compared == values.identical == n
    assert values.max_abs == 0.0 and values.max_rel_l2 == 0.0 and values.skipped == {}


# -- forward against transformers ---------------------------------------------------------------
def transformers_logits(path: Path, tokens: list[int]) -> np.ndarray:
    torch = pytest.importorskip("torch", reason=NEEDS_REFERENCE)
    transformers = pytest.importorskip("transformers", reason=NEEDS_REFERENCE)
    transformers.logging.set_verbosity_error()
    raw = json.loads((path / "config.json").read_text())
    config = None
    if raw["model_type"] not in transformers.CONFIG_MAPPING:  # e.g. kimi_k2: remote code only
        ours = read_config_file(path / "config.json").model_type
        keep = {k: v for k, v in raw.items() if k not in ("model_type", "auto_map")}
        config = transformers.AutoConfig.for_model(ours, **keep)
    ours = read_config_file(path / "config.json").model_type
    # a text model transformers registers only inside its multimodal wrapper (Mistral 4):
    # the family's own causal-LM class
    classes = [getattr(transformers, a) for a in family_named(ours).architectures
               if a.endswith("ForCausalLM") and hasattr(transformers, a)]
    loader = transformers.AutoModelForCausalLM
    known = (transformers.CONFIG_MAPPING[raw["model_type"]]
             if raw["model_type"] in transformers.CONFIG_MAPPING else None)
    if known is not None and known not in transformers.MODEL_FOR_CAUSAL_LM_MAPPING:
        if classes:
            loader = classes[0]
        elif known in transformers.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING:  # Mistral Large 4
            loader = transformers.AutoModelForImageTextToText
            config = shrink_vision_tower(transformers.AutoConfig.from_pretrained(path))
    if getattr(read_config_file(path / "config.json"), "zero_experts", 0):  # slots it refuses
        model = transformers_model_with_experts_filled(classes[0], path)
    else:
        model = loader.from_pretrained(path, config=config, dtype=torch.float32,
                                       attn_implementation="eager")
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].numpy()


@pytest.mark.reference
@pytest.mark.parametrize("case", case_params("forward", lambda c: not c.fp8))
def test_forward_matches_transformers(sources, case):
    # 12 tokens: fewer than V4's tiny CSA layers could select from beyond index_topk, so
    # the indexer keeps every entry and torch's order of tied scores does not matter
    src = sources(case)
    expected = transformers_logits(src, TOKENS)
    got = forward(src, TOKENS)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4


# -- the CLI, for the headline path ---------------------------------------------------------------
HEADLINE = [c for c in CASES if c.id in ("v3-fp8-float", "v4-flash-fp8-ue8m0-experts-fp4")]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in HEADLINE])
def test_headline_path_through_the_cli(run_cli, tmp_path, case):
    def ok(*args) -> dict:
        result = run_cli(*args, "--json")
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        doc = json.loads(result.stdout)
        assert doc.get("ok") is True, (args, doc)
        return doc

    src, mp, back = tmp_path / "src", tmp_path / "mp", tmp_path / "back"
    sets = [f"--set={k}={json.dumps(v)}" for k, v in (case.overrides or {}).items()]
    expert = ["--expert-dtype", case.expert_dtype] if case.expert_dtype else []
    ok("make-tiny", src, "--preset", case.preset, "--fp8", *expert, *sets)
    ok("validate", src)
    ok("upcast", src, tmp_path / "up", "--workers", "1")
    ok("validate", tmp_path / "up")
    ok("quantize", tmp_path / "up", tmp_path / "q", "--workers", "1", *expert,
       *(["--scale-fmt", case.scale_fmt] if case.scale_fmt else []))
    ok("reshard", src, tmp_path / "sz", "--max-shard-size", str(shard_size(src)), "--workers", "1")
    ok("validate", tmp_path / "sz")
    ok("reshard", src, mp, "--to", "deepseek-mp", "--model-parallel", str(MODEL_PARALLEL),
       "--keep-mtp", "--workers", "1")
    ok("reshard", mp, back, "--to", "hf", "--workers", "1")
    ok("validate", back)
    assert ok("verify", back, "--against", src)["max_abs_error"] == 0.0
    values = ok("diff", src, back, "--values")["values"]
    assert values["compared"] == values["identical"] > 0 and values["max_abs"] == 0.0
    text = run_cli("diff", src, back, "-q")
    assert text.exit_code == 0 and "Checkpoint tensors (headers)" in text.stdout
    assert "Same architecture; configs identical" in text.stdout
    assert "Hyper-connections" not in text.stdout  # nothing changed: nothing to explain


def test_known_failures_name_their_fix():
    for (case_id, step), reason in KNOWN_FAILURES.items():
        assert case_id in BY_ID and reason.endswith(("registry", "reliability", "conformance"))
        assert step in {"make_tiny_shrunk", "upcast_hf_then_convert", "mp_to_mp",
                        "upcast_unknown_layout"}, step

