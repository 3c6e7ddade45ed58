"""A finding that explains others comes first, and the ones it explains are not repeated
(`findings.Findings.explain`): a misspelled config key whose intended key took its default,
and a shard that cannot be read. The same order reaches every writer's refusal."""

from __future__ import annotations

import json
import os

from ckpt_tools import validate
from ckpt_tools.io.index import INDEX_FILE, read_index
from ckpt_tools.commands.tiny import make_tiny


def _misspell(ckpt, key: str, typo: str) -> None:
    path = ckpt / "config.json"
    config = json.loads(path.read_text())
    config[typo] = config.pop(key)
    path.write_text(json.dumps(config))


def test_a_misspelled_key_comes_first_and_summarises_the_plan_findings(make_ckpt, run_cli,
                                                                        tmp_path):
    ckpt = make_ckpt("v3")
    _misspell(ckpt, "num_hidden_layers", "num_hidden_layer")
    report = validate(ckpt)
    first = report.findings[0]
    assert first.code == "config-unknown-key" and "num_hidden_layers" in first.message
    assert "default, 61" in first.message  # what the typo did to the config
    errors = [f for f in report.findings if f.severity == "error"]
    assert errors and {f.code for f in errors} >= {"tensor-missing"}
    assert all(f.explained_by == "config-unknown-key config.json" for f in errors)
    assert report.explained == len(errors) and not report.ok

    r = run_cli("validate", ckpt)
    assert r.exit_code == 1
    text = " ".join(r.stdout.split())  # as read, whatever the width
    warning = text.index("did you mean 'num_hidden_layers'")
    assert "tensor 'model.layers" not in text  # summarised, not listed
    assert "tensor-missing" not in text[:warning]
    assert f"{len(errors):,} finding(s) follow from this" in text

    refused = run_cli("upcast", ckpt, tmp_path / "out")
    assert refused.exit_code == 1 and not (tmp_path / "out").exists()
    message = refused.stderr.strip().splitlines()[-1]
    assert message.index("did you mean") < message.index("[tensor-missing]")


def test_an_unrelated_typo_explains_nothing(make_ckpt):
    """A near-miss key whose intended key is also present changed nothing: a missing tensor
    stays listed on its own."""
    ckpt = make_ckpt("v3", shards=1)
    config = json.loads((ckpt / "config.json").read_text())
    config["norm_topk_probs"] = True  # beside norm_topk_prob
    (ckpt / "config.json").write_text(json.dumps(config))
    from safetensors.numpy import load_file, save_file
    shard = ckpt / read_index(ckpt / INDEX_FILE).shards[0]
    tensors = load_file(shard)
    tensors.pop("model.norm.weight")
    save_file(tensors, shard, metadata={"format": "pt"})
    report = validate(ckpt, config=None)
    codes = [f.code for f in report.findings]
    assert "config-unknown-key" in codes and "tensor-missing" in codes
    assert all(f.explained_by is None for f in report.findings)


def test_a_truncated_v4_shard_comes_first_and_its_tensors_are_not_repeated(tmp_path, run_cli):
    ckpt = tmp_path / "v4"
    make_tiny(ckpt, "v4-flash", fp8=True, shards=2)
    shard = ckpt / read_index(ckpt / INDEX_FILE).shards[0]
    os.truncate(shard, shard.stat().st_size - 1)
    report = validate(ckpt)
    assert report.findings[0].code == "shard-truncated"
    later = report.findings[1:]
    assert later and all(f.explained_by == f"shard-truncated {shard.name}" for f in later)

    r = run_cli("validate", ckpt)
    assert r.exit_code == 1
    text = " ".join(r.stdout.split())
    assert "tensor-unexpected (" not in text and ".scale' is not in" not in text
    assert f"{len(later):,} finding(s) follow from this" in text


def test_a_missing_shard_explains_the_tensors_indexed_in_it(make_ckpt):
    ckpt = make_ckpt("v3", fp8=True, shards=3)
    shard = ckpt / read_index(ckpt / INDEX_FILE).shards[1]
    shard.unlink()
    report = validate(ckpt)
    assert report.findings[0].code == "shard-missing"
    unexplained = [f for f in report.findings[1:] if f.explained_by is None]
    assert all(f.code not in ("tensor-missing", "scale-missing", "scale-orphan")
               for f in unexplained), unexplained
