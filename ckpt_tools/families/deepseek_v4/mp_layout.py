"""DeepSeek-V4's model-parallel layout as data: which rank holds which piece of a tensor.

The rules of DeepSeek's V4 `inference/convert.py` (see `mp`, which writes and reads the
layout): split on dim 0 or 1 by module, routed experts whole to rank e // (E / N),
everything else replicated, `wo_a` dequantised to BF16 per rank. Apart from the writer so
that the inventory can check rank files against it without importing the writers.
"""

from __future__ import annotations

from typing import NamedTuple

from ...errors import ConfigError
from ..base import EXPERT, Rule
from . import row_of
from ...formats import FP8_BLOCK
from .tensor_plan import V4TensorPlan


def rule_of(name: str) -> Rule:
    """The split of the tensor's row (`families.deepseek_v4`); unknown names: replicated."""
    row = row_of(name)
    return None if row is None else row.split


class Piece(NamedTuple):
    """What one rank stores for one source tensor."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    dim: int | None  # split dim; None: whole tensor
    start: int
    stop: int
    dequantize_with: str | None = None  # wo_a: the source scale applied, then dropped


def rank_pieces(plan: V4TensorPlan, n: int) -> list[list[Piece]]:
    """Every rank's tensors, in plan order; ConfigError when N does not divide something."""
    c = plan.config
    if c.n_routed_experts % n:
        raise ConfigError(f"model_parallel {n} does not divide n_routed_experts "
                          f"{c.n_routed_experts}")
    per_rank = c.n_routed_experts // n
    ranks: list[list[Piece]] = [[] for _ in range(n)]
    for s in plan.specs:
        rule = rule_of(s.name)
        if rule == EXPERT:
            ranks[s.expert // per_rank].append(Piece(s.name, s.dtype, s.shape, None, 0, 0))
            continue
        if rule is None:
            for r in range(n):
                ranks[r].append(Piece(s.name, s.dtype, s.shape, None, 0, 0))
            continue
        size = s.shape[rule]
        if size % n:
            raise ConfigError(f"model_parallel {n} does not divide dim {rule} ({size}) of "
                              f"'{s.name}' {list(s.shape)}")
        part = size // n
        shape = s.shape[:rule] + (part,) + s.shape[rule + 1:]
        row = row_of(s.name)
        dequantized = row is not None and row.mp_dequantized  # wo_a
        if s.scale_of and dequantized:
            continue  # applied to its weight on each rank, not written
        wo_a = dequantized and s.scale_name is not None
        for r in range(n):
            ranks[r].append(Piece(s.name, "BF16" if wo_a else s.dtype, shape, rule, r * part,
                                  (r + 1) * part, s.scale_name if wo_a else None))
    return ranks


def check_blocks(plan: V4TensorPlan, n: int) -> None:
    """A split FP8 weight's share must be whole 128-blocks, or its scale cannot follow."""
    for s in plan.specs:
        rule = rule_of(s.name)
        if isinstance(rule, int) and s.scale_name and (s.shape[rule] // n) % FP8_BLOCK[0]:
            raise ConfigError(f"model_parallel {n} splits dim {rule} of FP8 '{s.name}' "
                              f"{list(s.shape)} into {s.shape[rule] // n}-wide pieces, not whole "
                              f"128-blocks: its scale cannot be split with it")
