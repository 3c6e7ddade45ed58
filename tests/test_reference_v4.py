"""The NumPy DeepSeek-V4 decoder against transformers' DeepseekV4ForCausalLM (live when torch
is installed, golden logits otherwise), its tie rule, and its lazy weight access.

Tiny checkpoints are written with DeepSeek's Hub tensor names and loaded by transformers
through its own rename map (tests/v4_tiny.py), so the names are checked too.

The indexer keeps the top `index_topk` of scores that are sums of ReLUs: exact ties occur
(often at 0) and torch.topk orders them as it likes. Our rule is "earlier entry first"
(`select_compressed`). The live comparison runs transformers twice: as shipped, on a case
built to have no tie at any top-k boundary (checked, not assumed), and with its indexer's
`Tensor.topk` replaced by a stable sort (our rule) on every case, ties included.
"""

from __future__ import annotations

import contextlib
import sys
from collections import namedtuple
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from conftest import NEEDS_REFERENCE

from ckpt_tools.errors import ConfigError, MissingTensorError, ShapeMismatchError
from ckpt_tools.reference import deepseek_v4
from ckpt_tools.reference.deepseek_v4 import Model, select_compressed, sinkhorn
from ckpt_tools.reference.v4_weights import DictSource, V4Weights

sys.path.insert(0, str(Path(__file__).parent))
from v4_tiny import hub_config, hub_tensors, namespace, write_float32_checkpoint  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "reference_v4_logits.npz"
REAL_YARN = {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536,
             "beta_fast": 32, "beta_slow": 1}
# name -> (config overrides, sequence lengths). Together: every attention type (0, 4, 128)
# and CSA first; hash and learned MoE layers; lengths below a compression ratio (3), below
# and above the sliding window, above 128 (one and two HCA entries); index_topk below the
# number of CSA entries; YaRN ramps inside the rope dims (tiny original length) and real.
CASES = {
    "sliding-csa-hca": ({"sliding_window": 32, "index_topk": 2}, (3, 12)),
    "csa-first-one-hca-entry": ({"num_hidden_layers": 2, "compress_ratios": [4, 128, 0],
                                 "index_topk": 4}, (140,)),
    "two-hash-layers-real-yarn": ({"num_hidden_layers": 4, "compress_ratios": [4, 128, 0, 4, 0],
                                   "num_hash_layers": 2, "sliding_window": 16, "index_topk": 8,
                                   "rope_scaling": REAL_YARN}, (260,)),
}
# 16 indexer heads make an all-negative (score exactly 0) entry rare: no boundary ties.
UNPATCHED_CASE = ("many-indexer-heads", {"num_hidden_layers": 2, "compress_ratios": [4, 128, 0],
                                         "index_n_heads": 16, "index_topk": 4}, 140)
SEED = 1
GOLDEN_ROWS = slice(None, None, 7)  # every 7th position keeps the file small


def tokens_for(config: dict, length: int) -> list[int]:
    return np.random.default_rng(length).integers(0, config["vocab_size"], length).tolist()


def numpy_model(config: dict) -> Model:
    return Model(V4Weights(DictSource(namespace(config), hub_tensors(config, SEED))))


_TopK = namedtuple("_TopK", "values indices")


def _stable_topk(self, k, dim=-1, largest=True, sorted=True):
    import torch

    order = torch.argsort(-self if largest else self, dim=dim, stable=True).narrow(dim, 0, k)
    return _TopK(self.gather(dim, order), order)


def transformers_outputs(tmp_path: Path, config: dict, tokens: list[int], *, our_ties: bool):
    """Logits [t, o] and the streams after each layer, from transformers in float32."""
    torch = pytest.importorskip("torch", reason=NEEDS_REFERENCE)
    transformers = pytest.importorskip("transformers", reason=NEEDS_REFERENCE)
    transformers.logging.set_verbosity_error()
    path = write_float32_checkpoint(tmp_path / "ckpt", config, hub_tensors(config, SEED))
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    # Tensor.topk is called only by the indexer (the routers call torch.topk)
    ties = (mock.patch.object(torch.Tensor, "topk", _stable_topk) if our_ties
            else contextlib.nullcontext())
    with torch.no_grad(), ties:
        out = model(torch.tensor([tokens]), output_hidden_states=True)
    return out.logits[0].numpy(), [h[0].numpy() for h in out.hidden_states]


def boundary_ties(model: Model, tokens: list[int], monkeypatch) -> int:
    """Rows where the top-k boundary falls inside a group of equal indexer scores."""
    found = []
    real = deepseek_v4.select_compressed

    def spy(scores, visible, topk):
        for row, seen in zip(scores, visible):
            kept = np.sort(row[seen])[::-1]
            found.append(len(kept) > topk and kept[topk - 1] == kept[topk])
        return real(scores, visible, topk)

    monkeypatch.setattr(deepseek_v4, "select_compressed", spy)
    model.forward(tokens)
    monkeypatch.undo()
    return sum(found)


# -- against transformers --------------------------------------------------------------
def test_the_cases_cover_what_the_issue_asks():
    ratios, mlp, lengths = set(), set(), []
    for overrides, lens in CASES.values():
        c = hub_config(**overrides)
        L = c["num_hidden_layers"]
        ratios |= set(c["compress_ratios"][:L])
        mlp |= {layer < c["num_hash_layers"] for layer in range(L)}
        for n in lens:
            lengths.append((n, c["sliding_window"]))
            if 4 in c["compress_ratios"][:L] and n >= 8:
                assert n // 4 > c["index_topk"]
    assert ratios == {0, 4, 128} and mlp == {True, False}
    assert any(n < 4 for n, _ in lengths) and any(n > 128 * 2 for n, _ in lengths)
    assert any(n < w for n, w in lengths) and any(n > w for n, w in lengths)


@pytest.mark.reference
@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_and_streams_match_transformers_with_our_tie_rule(tmp_path, case):
    overrides, lengths = CASES[case]
    config = hub_config(**overrides)
    model = numpy_model(config)
    for n in lengths:
        tokens = tokens_for(config, n)
        logits, hidden = transformers_outputs(tmp_path / str(n), config, tokens, our_ties=True)
        got = model.forward(tokens)
        assert got.shape == logits.shape == (n, config["vocab_size"])
        assert np.abs(got - logits).max() <= 1e-4, f"{case}, {n} tokens"
        # transformers: the streams after 0..L-1 layers, then the final norm's output
        assert len(hidden) == config["num_hidden_layers"] + 1
        ours = [model.streams(tokens, 0)] + [s for _, s in model.hidden_states(tokens)]
        for k, streams in enumerate(hidden[:-1]):
            np.testing.assert_allclose(ours[k], streams, atol=1e-4, rtol=0,
                                       err_msg=f"{case}, after {k} layers")
        np.testing.assert_allclose(model.final_norm(ours[-1]), hidden[-1], atol=1e-4, rtol=0)


@pytest.mark.reference
def test_logits_match_transformers_as_shipped_when_no_tie_sits_on_a_topk_boundary(
        tmp_path, monkeypatch):
    name, overrides, n = UNPATCHED_CASE
    config = hub_config(**overrides)
    model, tokens = numpy_model(config), tokens_for(config, n)
    assert boundary_ties(model, tokens, monkeypatch) == 0  # the premise, checked
    logits, _ = transformers_outputs(tmp_path, config, tokens, our_ties=False)
    assert np.abs(model.forward(tokens) - logits).max() <= 1e-4


def test_tiny_cases_do_have_ties_so_the_rule_matters(monkeypatch):
    overrides, (n,) = CASES["two-hash-layers-real-yarn"]
    config = hub_config(**overrides)
    assert boundary_ties(numpy_model(config), tokens_for(config, n), monkeypatch) > 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_golden_transformers_logits(case):
    """Numbers transformers produced once (see `main` below); runs without torch."""
    overrides, lengths = CASES[case]
    config = hub_config(**overrides)
    model = numpy_model(config)
    with np.load(GOLDEN) as golden:
        for n in lengths:
            tokens = tokens_for(config, n)
            assert golden[f"{case}.{n}.tokens"].tolist() == tokens
            got = model.forward(tokens)[GOLDEN_ROWS]
            assert np.abs(got - golden[f"{case}.{n}"]).max() <= 1e-4, f"{case}, {n} tokens"


# -- pieces, against independent formulas ----------------------------------------------
def test_select_compressed_keeps_visible_top_k_and_breaks_ties_towards_earlier_entries():
    scores = np.array([[0.0, 0.5, 0.0, 0.0, 9.0],
                       [0.0, 0.0, 0.0, -1.0, 0.0]], np.float32)
    visible = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool)
    got = select_compressed(scores, visible, 2)
    # row 0: 9.0 is not visible; 0.5, then the first of the tied zeros
    assert got[0].tolist() == [True, True, False, False, False]
    assert got[1].tolist() == [True, True, False, False, False]
    # fewer visible entries than k: all of them, never an invisible one
    few = select_compressed(scores, np.array([[1, 0, 0, 0, 0]] * 2, bool), 3)
    assert few.tolist() == [[True, False, False, False, False]] * 2


def test_sinkhorn_gives_nearly_doubly_stochastic_matrices():
    rng = np.random.default_rng(0)
    comb = np.exp(rng.normal(size=(5, 4, 4))).astype(np.float32)
    out = sinkhorn(comb, 20, 1e-6)
    np.testing.assert_allclose(out.sum(-2), 1.0, atol=1e-5)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-3)


def test_hash_layers_route_by_token_id_not_by_score(monkeypatch):
    """Two different tokens with identical hidden states get the experts tid2eid lists."""
    config = hub_config(**CASES["sliding-csa-hca"][0])
    tensors = hub_tensors(config, SEED)
    chosen = []
    real = deepseek_v4.route
    monkeypatch.setattr(deepseek_v4, "route",
                        lambda *a: chosen.append(real(*a)) or chosen[-1])
    Model(V4Weights(DictSource(namespace(config), tensors))).forward([5, 7, 5])
    experts, _ = chosen[0]  # layer 0 is a hash layer
    table = tensors["layers.0.ffn.gate.tid2eid"]
    assert experts.tolist() == table[[5, 7, 5]].tolist()


# -- lazy weights and errors -------------------------------------------------------------
class Recording(DictSource):
    def __init__(self, config, tensors):
        super().__init__(namespace(config), tensors)
        self.reads: list[str] = []

    def read_float32(self, name):
        self.reads.append(name)
        return super().read_float32(name)


def test_long_prompts_in_query_blocks_give_the_same_logits(monkeypatch):
    overrides, (n,) = CASES["csa-first-one-hca-entry"]
    config = hub_config(**overrides)
    model, tokens = numpy_model(config), tokens_for(config, n)
    whole = model.forward(tokens)
    monkeypatch.setattr(deepseek_v4, "SCORE_BYTES", 4096)  # a few queries per block
    np.testing.assert_allclose(model.forward(tokens), whole, atol=1e-5)


def test_experts_are_read_only_when_chosen_and_layers_only_when_run():
    config = hub_config(**CASES["sliding-csa-hca"][0])
    src = Recording(config, hub_tensors(config, SEED))
    Model(V4Weights(src)).forward(tokens_for(config, 5), layers=2)
    assert {n.split(".")[1] for n in src.reads if n.startswith("layers.")} == {"0", "1"}
    assert "head.weight" not in src.reads and not any(n.startswith("mtp.") for n in src.reads)
    experts = {n for n in src.reads if ".experts." in n}
    assert experts and len(experts) < 2 * 8 * 3  # 5 tokens x 2 of 8 experts: some unread


def test_streamed_row_reads_give_the_same_logits():
    class Rows(DictSource):
        def shape_of(self, name):
            return self.tensors[name].shape

        def read_float32_rows(self, name, start, stop):
            return np.asarray(self.tensors[name][start:stop], np.float32)

    config = hub_config(**CASES["sliding-csa-hca"][0])
    tensors, tokens = hub_tensors(config, SEED), tokens_for(config, 12)
    whole = Model(V4Weights(DictSource(namespace(config), tensors))).forward(tokens)
    streamed = Model(V4Weights(Rows(namespace(config), tensors), chunk_bytes=64 * 24 * 4))
    np.testing.assert_allclose(streamed.forward(tokens), whole, atol=1e-5)


def test_missing_and_mis_shaped_tensors_are_named():
    config = hub_config(**CASES["sliding-csa-hca"][0])
    tensors = hub_tensors(config, SEED)
    ape = "layers.1.attn.compressor.ape"
    bad = {**tensors, ape: tensors[ape][:, :-1]}
    with pytest.raises(ShapeMismatchError, match=r"'layers.1.attn.compressor.ape': expected "
                                                 r"shape \[4, 128\], found \[4, 127\]"):
        Model(V4Weights(DictSource(namespace(config), bad))).forward([1, 2, 3, 4])
    del tensors["layers.0.hc_ffn_fn"]
    with pytest.raises(MissingTensorError, match="'layers.0.hc_ffn_fn' is missing"):
        Model(V4Weights(DictSource(namespace(config), tensors))).forward([1, 2])


def test_unknown_compress_ratio_is_refused():
    tensors = hub_tensors(hub_config(compress_ratios=[0, 0, 128, 0]), SEED)
    config = hub_config(compress_ratios=[0, 8, 128, 0])  # the config schema refuses it too
    with pytest.raises(ConfigError, match=r"compress_ratios\[1\] must be 0, 4 or 128, found 8"):
        Model(V4Weights(DictSource(namespace(config), tensors))).forward([1, 2])


def test_mtp_is_causal_and_reads_only_its_module():
    config = hub_config(**CASES["sliding-csa-hca"][0])
    src = Recording(config, hub_tensors(config, SEED))
    model = Model(V4Weights(src))
    tokens = tokens_for(config, 12)
    streams = model.streams(tokens)
    src.reads.clear()
    logits = model.mtp_logits(tokens, streams)
    assert logits.shape == (11, config["vocab_size"])
    assert {n.split(".")[0] for n in src.reads} == {"mtp", "embed", "head"}
    changed = model.mtp_logits(tokens[:-1] + [1], np.concatenate([streams[:-1], streams[:1]]))
    np.testing.assert_array_equal(changed[:-1], logits[:-1])
    assert not np.allclose(changed[-1], logits[-1])


def main(out: Path = GOLDEN) -> None:
    """Regenerate the golden logits with transformers: python tests/test_reference_v4.py"""
    import tempfile

    arrays = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case, (overrides, lengths) in CASES.items():
            config = hub_config(**overrides)
            for n in lengths:
                tokens = tokens_for(config, n)
                logits, _ = transformers_outputs(Path(tmp) / f"{case}-{n}", config, tokens,
                                                 our_ties=True)
                arrays[f"{case}.{n}"] = logits[GOLDEN_ROWS].astype(np.float32)
                arrays[f"{case}.{n}.tokens"] = np.array(tokens, np.int32)
    np.savez_compressed(out, **arrays)


if __name__ == "__main__":
    main()
