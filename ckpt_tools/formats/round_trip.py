"""The round-trip error of a quantisation, accumulated chunk by chunk (quantize's report)."""

from __future__ import annotations

import math

import numpy as np


class RoundTripStats:
    """max |back - ref|, relative L2 error and the count of non-finite reference values,
    over every chunk added. Each error is |float32(back - ref)| in float64, over the finite
    reference values; the sums' order differs between the NumPy and compiled paths, so the
    relative L2 error may differ in its last bits (the written bytes do not)."""

    def __init__(self):
        self.max_abs, self.sq_err, self.sq_ref, self.nonfinite = 0.0, 0.0, 0.0, 0

    def add(self, ref: np.ndarray, back: np.ndarray) -> None:
        finite = np.isfinite(ref)
        if not finite.all():
            self.nonfinite += int(finite.size - np.count_nonzero(finite))
            ref, back = ref[finite], back[finite]
        err = np.abs(back - ref, dtype=np.float64)
        if err.size:
            self.max_abs = max(self.max_abs, float(err.max()))
        # einsum, not np.dot: dot goes to BLAS, whose threads spin on every core (a
        # quantize worker took two cores' CPU time for one core's work)
        self.sq_err += float(np.einsum("i,i->", err.ravel(), err.ravel()))
        ref64 = ref.astype(np.float64).ravel()
        self.sq_ref += float(np.einsum("i,i->", ref64, ref64))

    def add_sums(self, max_abs: float, sq_err: float, sq_ref: float, nonfinite: int) -> None:
        """What a compiled kernel accumulated over one chunk."""
        self.max_abs = max(self.max_abs, float(max_abs))
        self.sq_err += float(sq_err)
        self.sq_ref += float(sq_ref)
        self.nonfinite += int(nonfinite)

    def sums(self) -> list:
        """What the parts of one tensor add up (`combine_errors`)."""
        return [self.max_abs, self.sq_err, self.sq_ref, self.nonfinite]

    def result(self) -> list:
        """[max_abs, rel_l2, nonfinite], as the reports store it."""
        return combine_errors([self.sums()])


def combine_errors(sums: list[list]) -> list:
    """[max_abs, rel_l2, nonfinite] of a tensor from its parts' `sums`, added in part order
    (so the figure does not depend on which part finished first)."""
    max_abs = max((s[0] for s in sums), default=0.0)
    sq_err, sq_ref = sum(s[1] for s in sums), sum(s[2] for s in sums)
    rel = math.sqrt(sq_err / sq_ref) if sq_ref > 0 else 0.0
    return [max_abs, rel, sum(s[3] for s in sums)]
