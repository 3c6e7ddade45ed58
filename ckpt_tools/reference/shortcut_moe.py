"""A decoder layer of two attention blocks with a shortcut-connected MoE (LongCat-Flash).

The parts are the shared ones (`deepseek.attention`, `mlp`, `moe`); what differs is the
order (transformers' `LongcatFlashDecoderLayer`, docs/derived_families.md):

    x1 = x + attn0(norm_in0(x)); h = norm_post0(x1)
    x2 = x1 + mlp0(h);           x3 = x2 + attn1(norm_in1(x2))
    out = x3 + mlp1(norm_post1(x3)) + moe(h)

The MoE runs beside the layer's second half, fed by the first half's normed state.
"""

from __future__ import annotations

import numpy as np

from ..errors import UnsupportedModelError
from .deepseek import Model, activation, attention, mlp, moe, rms_norm
from .weights import Config, Weights

MLP_ROLES = ("mlp.w1", "mlp.w3", "mlp.w2")


class Copy:
    """The weights of one copy of a section a layer holds several of (its `{I}`)."""

    def __init__(self, weights: Weights, copy: int):
        self.weights, self.copy = weights, copy

    def name(self, role: str, layer: int | None = None, expert: int | None = None) -> str:
        return self.weights.name(role, layer, expert, copy=self.copy)

    def __getattr__(self, attribute: str):
        return getattr(self.weights, attribute)


def shortcut_block(config: Config, w: Weights, layer: int, x: np.ndarray,
                   rope: tuple[np.ndarray, np.ndarray], selections: dict | None = None
                   ) -> np.ndarray:
    """One LongCat-Flash decoder layer (module docstring).  [t, d] -> [t, d]"""
    eps, act = config.rms_norm_eps, activation(config)
    first, second = Copy(w, 0), Copy(w, 1)
    x = x + attention(config, first, layer,
                      rms_norm(x, first.read(first.name("attn_norm", layer)), eps), rope)
    h = rms_norm(x, first.read(first.name("ffn_norm", layer)), eps)
    shortcut = moe(config, w, layer, h)
    x = x + mlp(first, h, *(first.name(role, layer) for role in MLP_ROLES), act=act)
    x = x + attention(config, second, layer,
                      rms_norm(x, second.read(second.name("attn_norm", layer)), eps), rope)
    h = rms_norm(x, second.read(second.name("ffn_norm", layer)), eps)
    return x + mlp(second, h, *(second.name(role, layer) for role in MLP_ROLES),
                   act=act) + shortcut


class ShortcutModel(Model):
    """The shared decoder with LongCat-Flash's layer order."""

    def block(self, layer: int, x: np.ndarray, rope: tuple[np.ndarray, np.ndarray],
              state: dict) -> np.ndarray:
        return shortcut_block(self.config, self.weights, layer, x, rope, state)

    def mtp_logits(self, tokens, normed, depth: int = 0):
        # its MTP block (model.mtp.: one attention block and a dense MLP, no head of its own)
        # is planned and converted, but no reference computes it: transformers ignores it
        raise UnsupportedModelError(
            "mtp: the NumPy reference does not run this family's MTP block (transformers "
            "ignores model.mtp.*, so there is nothing to check it against)")
