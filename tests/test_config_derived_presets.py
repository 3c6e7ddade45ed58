"""The DeepSeek-derived families' presets (tests/data/derived_presets/, not loaded by ckpt yet:
the family registry will) and transformers' committed parameter counts of them
(tests/data/derived_param_counts.json, written by tests/data/make_derived_param_counts.py)."""

import json
from pathlib import Path

import pytest
from conftest import NEEDS_REFERENCE, counts_script

from ckpt_tools.commands.info import rounds_to

DATA = Path(__file__).parent / "data"
PRESETS = sorted((DATA / "derived_presets").glob("*.json"))
COUNTS = json.loads((DATA / "derived_param_counts.json").read_text())
FAMILIES = {"glm-5": "glm_moe_dsa", "glm-4.7-flash": "glm4_moe_lite", "mistral-4": "mistral4",
            "mistral-large-4": "mistral_large4", "longcat-flash": "longcat_flash"}


def test_one_preset_per_family_each_with_its_provenance():
    assert {p.stem for p in PRESETS} == set(FAMILIES) == set(COUNTS)
    for path in PRESETS:
        raw = json.loads(path.read_text())
        assert raw["model_type"] == FAMILIES[path.stem]
        prov = raw["_provenance"]
        assert prov["kind"] in ("verbatim", "reconstructed") and prov["sources"]
        assert prov["hub_repo"].count("/") == 1
        assert prov["kind"] == "verbatim" or prov["reconstructed"]  # says what is not verbatim


def _language_total(entry: dict) -> int:
    """The language model as released: transformers' count without other towers and without
    weights it allocates for LongCat-Flash's zero experts, which the release does not store."""
    return (entry["language_model_parameters"] + entry["persistent_buffers"]
            - entry["not_built"].get("zero_expert_gate_up_elements", 0))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_committed_counts_agree_with_the_publishers_headline(name):
    entry = COUNTS[name]
    published = entry["published"]
    assert rounds_to(_language_total(entry), published["total"]), (name, published)
    activated = entry["activated_per_token"]
    if published["activated"] is None:  # Mistral 4: only the total is in the name
        return
    if "value" in activated:
        assert rounds_to(activated["value"], published["activated"])
    else:  # LongCat-Flash publishes its range
        low, high = published["activated"].split(" ")[0].split("-")
        assert rounds_to(activated["min"], low) and rounds_to(activated["max"], high)


def test_counts_say_what_they_count():
    glm5 = COUNTS["glm-5"]
    # aux-loss-free routers: the score-correction bias is a saved buffer, 256 per MoE layer
    assert glm5["persistent_buffers_by_name"] == {
        "model.layers.N.mlp.gate.e_score_correction_bias": 256 * 75}
    assert glm5["checkpoint_elements"] == glm5["parameters"] + 256 * 75
    assert "mtp_layers" in glm5["not_built"]
    assert COUNTS["mistral-4"]["persistent_buffers"] == 0  # its router has no bias
    ml4 = COUNTS["mistral-large-4"]
    assert ml4["parameters_by_kind"]["vision_tower"] > 0
    assert ml4["language_model_parameters"] < ml4["parameters"]


@pytest.mark.reference
@pytest.mark.parametrize("name", ["glm-4.7-flash"])
def test_committed_counts_are_what_transformers_builds(name):
    """Live check of the smallest (the script rebuilds all five in about 30 s)."""
    pytest.importorskip("torch", reason=NEEDS_REFERENCE)
    pytest.importorskip("transformers", reason=NEEDS_REFERENCE)
    script = counts_script()
    live = script.count(DATA / "derived_presets" / f"{name}.json")
    assert {k: v for k, v in live.items() if k != "transformers"} == {
        k: v for k, v in COUNTS[name].items() if k != "transformers"}
