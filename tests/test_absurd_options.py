"""Absurd option values are usage errors (exit 2) naming the option and the bound, before
anything is allocated (issue 27, 11)."""

from __future__ import annotations

import pytest

from ckpt_tools.reference import deepseek as reference
from ckpt_tools.commands.tiny import make_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("absurd") / "v3", "v3", seed=1).path


@pytest.mark.parametrize("args, option", [
    (["reshard", "{src}", "{tmp}/x", "--to", "deepseek-mp", "--model-parallel", "2",
      "--ranks", "0-99999999999"], "--ranks"),
    (["reshard", "{src}", "{tmp}/x", "--to", "deepseek-mp", "--model-parallel", "99999999999"],
     "--model-parallel"),
    (["forward", "{src}", "--out", "{tmp}/o.npy", "--tokens", "1180591620717411303424"],
     "--tokens"),
    (["make-tiny", "{tmp}/y", "--seed", "-1"], "--seed"),
    (["make-tiny", "{tmp}/y", "--set", "hidden_size=1000000000"], "--set"),
    (["verify", "{src}", "--against", "{src}", "--rtol", "nan"], "--rtol"),
    (["verify", "{src}", "--against", "{src}", "--atol", "inf"], "--atol"),
])
def test_absurd_value_is_a_usage_error(tiny, tmp_path, run_cli, args, option):
    r = run_cli(*[a.format(src=tiny, tmp=tmp_path) for a in args])
    assert r.exit_code == 2, r.output
    assert option in r.output and "internal error" not in r.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_more_tokens_than_memory_holds_is_refused_with_the_need(tiny, tmp_path, run_cli,
                                                                 monkeypatch):
    monkeypatch.setattr(reference, "available_memory", lambda: 64 << 20)
    tokens = ",".join(["1"] * 60_000)
    r = run_cli("forward", tiny, "--out", tmp_path / "o.npy", "--tokens", tokens)
    assert r.exit_code == 2, r.output
    assert "60,000 tokens need about" in r.output and "GiB available" in r.output
    assert run_cli("forward", tiny, "--out", tmp_path / "o.npy", "--tokens", "1,2").exit_code == 0
