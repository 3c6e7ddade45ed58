"""Real config files (tests/data/configs, see SOURCES.md): every DeepSeek-architecture one is
described by info and diff, becomes a tiny checkpoint that validates, and gives the
published parameter counts where any exist; every other architecture is refused in one
line naming what it is."""

import json
from pathlib import Path

import pytest

from ckpt_tools.configs.parse import read_config_file
from ckpt_tools.errors import UnsupportedModelError
from ckpt_tools.commands.info import describe, rounds_to

CORPUS = Path(__file__).parent / "data" / "configs"
ACCEPTED = sorted([*CORPUS.glob("*.json"), *CORPUS.glob("transformers5/*.json")])
REFUSED = sorted(CORPUS.glob("refused/*.json"))

# Published total / activated parameters: DeepSeek-V2 (arXiv:2405.04434: 236B / 21B, Lite
# 15.7B / 2.4B), DeepSeek-V3 (arXiv:2412.19437: 671B / 37B; V3.2 keeps them, its indexer adds
# 0.85B), Kimi-K2 (model card: 1T / 32B).
V3, V2, V2_LITE, KIMI = ("671B", "37B"), ("236B", "21B"), ("15.7B", "2.4B"), ("1T", "32B")
PUBLISHED = {
    "deepseek-r1.json": V3, "deepseek-r1-0528.json": V3, "helpy-deepseek-v3.json": V3,
    "inference-config_671B.json": V3, "inference-config_v3.1.json": V3,
    "tt-metal-config_671B-max-batch.json": V3, "ascend-config_671B-bf16.json": V3,
    "deepseek_v3-defaults.json": V3, "deepseek-r1-resaved.json": V3,
    "deepseek-r1-0528-resaved.json": V3,
    "inference-config_671B_v3.2.json": V3, "deepseek_v32-defaults.json": V3,
    "inference-config_236B.json": V2, "inference-config_16B.json": V2_LITE,
    "ktransformers-deepseek-v2-lite.json": V2_LITE,
    "ktransformers-deepseek-v2-lite-resaved.json": V2_LITE,
    "create-bot-v1-kimi-k2-renamed.json": KIMI, "kimi-k2-renamed-resaved.json": KIMI,
}
QUANTISED = {"ascend-config_671B_test-int8.json": "int8", "ascend-config_debug-int4.json": "int4"}
REFUSAL = {
    "ktransformers-llama4-scout.json": "llama4",
    "llm-prof-llama-3.1-8b.json": "a Llama config",
    "llm-prof-qwen2.5-7b.json": "a Qwen2 config",
    "llm-prof-qwen3-30b-a3b.json": "a Qwen3-MoE config",
    "transformers5-deepseek_v2-defaults.json": "field 'num_experts_per_tok': null",
}


def test_corpus_size():
    assert len(ACCEPTED) >= 20 and len(REFUSED) >= 5
    assert set(PUBLISHED) <= {p.name for p in ACCEPTED}
    assert {p.name for p in REFUSED} == set(REFUSAL)


@pytest.mark.parametrize("path", ACCEPTED, ids=lambda p: p.name)
def test_info_describes_and_figures_match_published(path, run_cli):
    r = run_cli("info", path, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["reading"]["architecture"] in ("deepseek_v2", "deepseek_v3", "deepseek_v32")
    assert not doc["reading"]["inconsistencies"]
    assert not doc["reading"]["warnings"]  # no "did you mean" for keys real files use
    if path.name in PUBLISHED:
        total, activated = PUBLISHED[path.name]
        p = doc["parameters"]
        assert rounds_to(p["main"], total), (p["main"], total)
        assert rounds_to(p["activated"], activated), (p["activated"], activated)
    if path.name in QUANTISED:
        assert QUANTISED[path.name] in doc["reading"]["quantization_scheme"]


@pytest.mark.parametrize("path", ACCEPTED, ids=lambda p: p.name)
def test_diff_against_the_release_of_its_family(path, run_cli):
    family = describe(path).reading.architecture
    release = {"deepseek_v3": "v3", "deepseek_v32": "v3.2"}.get(family, "v2-lite")
    r = run_cli("diff", path, release, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["a"]["reading"]["architecture"] == family


@pytest.mark.parametrize("path", ACCEPTED, ids=lambda p: p.name)
def test_tiny_checkpoint_of_it_validates(path, run_cli, tmp_path):
    out = tmp_path / "tiny"
    r = run_cli("make-tiny", out, "--config", path, "--shards", "1")
    assert r.exit_code == 0, r.output
    if path.name in QUANTISED:  # the architecture, as BF16: the other scheme is left out
        written = json.loads((out / "config.json").read_text())
        assert "quantization_config" not in written and written["torch_dtype"] == "bfloat16"
        with pytest.raises(UnsupportedModelError, match=QUANTISED[path.name]):
            read_config_file(path)  # as every writer reads it: refused, naming the scheme
    r = run_cli("validate", out, "--strict", "--json")
    assert r.exit_code == 0, r.stdout
    assert run_cli("validate", out, "--config", path, "--json").exit_code == 1  # other widths


@pytest.mark.parametrize("path", REFUSED, ids=lambda p: p.name)
def test_refused_in_one_line_naming_what_it_is(path, run_cli):
    r = run_cli("info", path)
    assert r.exit_code == 1
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.output
    assert REFUSAL[path.name] in r.stderr


def test_diff_says_what_the_inference_format_leaves_out(run_cli):
    r = run_cli("diff", CORPUS / "inference-config_671B.json", "v3")
    assert r.exit_code == 0
    assert "leaves out: the MTP module" in r.stdout
    doc = json.loads(run_cli("diff", CORPUS / "inference-config_671B.json", "v3", "--json").stdout)
    changed = {c["field"] for c in doc["config_changes"]}
    assert "num_nextn_predict_layers" in changed
    assert doc["figures_a"]["parameters"]["main"] == doc["figures_b"]["parameters"]["main"]


def test_renamed_kimi_is_read_as_v3_and_written_back_with_its_name(tmp_path, run_cli):
    out = tmp_path / "k"
    assert run_cli("make-tiny", out, "--config",
                   CORPUS / "create-bot-v1-kimi-k2-renamed.json").exit_code == 0
    assert json.loads((out / "config.json").read_text())["model_type"] == "Create-Bot-V2_k2"
    doc = json.loads(run_cli("info", out, "--json").stdout)
    assert doc["reading"]["recognised_by"].startswith("architectures: DeepseekV3ForCausalLM")


def test_v32_inference_config_makes_a_tiny_v32_that_transformers_would_load(tmp_path, run_cli):
    """No model_type or architectures in DeepSeek's config_671B_v3.2.json: the tiny model's
    config.json names V3.2's class, and transformers 5's V3.2 per-layer lists are respelled
    for the tiny layer count."""
    for name in ("inference-config_671B_v3.2.json", "transformers5/deepseek_v32-defaults.json"):
        out = tmp_path / name.replace("/", "-")
        assert run_cli("make-tiny", out, "--config", CORPUS / name).exit_code == 0
        written = json.loads((out / "config.json").read_text())
        assert written["model_type"] == "deepseek_v32"
        assert written["architectures"] == ["DeepseekV32ForCausalLM"]
        n = written["num_hidden_layers"]
        for key in ("mlp_layer_types", "layer_types"):
            assert key not in written or len(written[key]) == n, key
