"""`ckpt validate` for DeepSeek-V4 checkpoints (Hub names, `.scale` beside `.weight`).

What differs from V2/V3 (validate.py runs the shared structure checks, then this):
- pairing: every quantized weight has its `<module>.scale`, stored as F8_E8M0. An F8_E4M3
  weight needs [ceil(out/128), ceil(in/128)]; an I8 weight is MXFP4 and needs [out, in/32]
  (its logical in = 2 x the stored columns). The format is read from the tensors, never
  from `expert_dtype` (a published Pro config omits it).
- plan: the V4 tensor plan in the layout and expert format the tensors show.
- hash routing: every `ffn.gate.tid2eid` entry in [0, n_routed_experts) (a few MB, read
  always); `--deep` adds E8M0 NaN bytes (255) in any scale (value_scan).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from ...errors import CkptError
from ...inventory.findings import Findings
from ...formats import block_grid, fp4_scale_shape
from ...io.safetensors_io import TensorEntry
from ...io.source import Source
from ...configs.v4 import DeepseekV4Config, ExpertDtype
from . import EMBED, SCALE_DTYPE, TID2EID, row_of
from .mp_layout import check_blocks, rank_pieces
from .tensor_plan import (
    V4_SCALE_SUFFIX,
    V4TensorPlan,
    v4_scale_name,
    v4_weight_name,
)

QUANTIZED = ("F8_E4M3", "I8")
HF_EMBED = EMBED.hf  # a V4 checkpoint under transformers' names (`upcast --layout hf`)
# The largest |code| of each quantized weight format: e4m3fn 448, e2m1 (MXFP4) 6.
_CODE_MAX = {"F8_E4M3": 448.0, "I8": 6.0}


def largest_finite_scale_byte(weight_dtype: str) -> int:
    """The largest E8M0 byte b (scale 2^(b-127)) for which every dequantised value of a
    `weight_dtype` weight stays finite in BF16 and F32, which both end just below 2^128:
    code_max * 2^(b-127) < 2^128 (and code_max's mantissa, 1.75 or 1.5, fits BF16's)."""
    return 254 - math.floor(math.log2(_CODE_MAX[weight_dtype]))


def scale_byte_limits(entries: dict[str, TensorEntry]) -> dict[str, int]:
    """scale name -> largest allowed byte, for every quantized weight's E8M0 scale."""
    return {v4_scale_name(n): largest_finite_scale_byte(entries[n].dtype)
            for n in quantized_weights(entries)}


def quantized_weights(entries: dict[str, TensorEntry]) -> list[str]:
    return [n for n, e in entries.items() if e.dtype in QUANTIZED and n.endswith(".weight")]


def detect_layout(entries: dict[str, TensorEntry]
                  ) -> tuple[Literal["bf16", "fp8", "hf"], ExpertDtype | None]:
    """("fp8", expert format) when quantized weights are present, else ("bf16", None), or
    ("hf", None) under transformers' names; the expert format is the dtype of the routed
    experts found (I8 = fp4, F8_E4M3 = fp8)."""
    if HF_EMBED in entries:
        return "hf", None
    if not any(e.dtype in QUANTIZED and n.endswith(".weight") for n, e in entries.items()):
        return "bf16", None  # (stops at the first quantized weight)
    experts = [e.dtype for n, e in entries.items() if _is_routed_expert(n)]
    fp4 = sum(d == "I8" for d in experts)
    return "fp8", ("fp4" if fp4 * 2 >= len(experts) else "fp8")


def _is_routed_expert(name: str) -> bool:
    row = row_of(name)
    return row is not None and row.section == "routed_expert" and name.endswith(".weight")


def expected_scale(weight: TensorEntry) -> tuple[tuple[int, ...], str] | None:
    """(scale shape, format name) a quantized weight needs, or None if it is not 2-D."""
    if len(weight.shape) != 2:
        return None
    if weight.dtype == "I8":
        return fp4_scale_shape(weight.shape), "MXFP4 (one scale per 32 inputs)"
    return block_grid(weight.shape), "FP8 (128x128 blocks)"


def check_pairing(entries: dict[str, TensorEntry], where: dict[str, str], skip: set[str],
                  f: Findings) -> set[str]:
    """Pair every quantized weight with its scale; returns the scale names seen."""
    weights = quantized_weights(entries)
    scales = {n for n in entries if n.endswith(V4_SCALE_SUFFIX)}
    paired = set()
    wanted = {}  # (dtype, shape) -> expected_scale: V4-Pro's 72k weights have a few shapes
    for name in weights:
        scale = v4_scale_name(name)
        paired.add(scale)
        s = entries.get(scale)
        fmt = "MXFP4" if entries[name].dtype == "I8" else "FP8"
        if s is None:
            if scale not in skip:
                f.add("scale-missing", f"{where[name]}: {fmt} tensor '{name}' has no '{scale}'",
                      file=where[name], tensor=name, expected=scale)
            continue
        if s.dtype != SCALE_DTYPE:
            f.add("scale-dtype", f"{where[scale]}: tensor '{scale}': expected {SCALE_DTYPE}, found "
                  f"{s.dtype}", file=where[scale], tensor=scale, expected=SCALE_DTYPE,
                  found=s.dtype)
        w = entries[name]
        want = wanted.get((w.dtype, w.shape), False)
        if want is False:
            want = wanted[w.dtype, w.shape] = expected_scale(w)
        if want is None or s.shape != want[0]:
            need = list(want[0]) if want else f"a 2-D weight (found {list(entries[name].shape)})"
            what = want[1] if want else fmt
            f.add("scale-shape", f"{where[scale]}: tensor '{scale}': expected {need} for {what} "
                  f"weight {entries[name].dtype} {list(entries[name].shape)}, found "
                  f"{list(s.shape)}", file=where[scale], tensor=scale, expected=need,
                  found=s.shape)
    for name in sorted(scales - paired):
        weight = v4_weight_name(name)
        if weight in skip:
            continue
        w = entries.get(weight)
        what = "absent" if w is None else f"stored as {w.dtype}, not FP8 or MXFP4"
        f.add("scale-orphan", f"{where[name]}: tensor '{name}': its weight '{weight}' is {what}",
              file=where[name], tensor=name, found=what)
    return scales


def check_hash_tables(source: Source, root: Path, entries: dict[str, TensorEntry],
                      where: dict[str, str], experts: int, f: Findings) -> None:
    """Every tid2eid entry must name an expert: 0 <= id < n_routed_experts (read through
    the run's `source`: no header is read again)."""
    import numpy as np  # header-only runs without hash tables never load it

    for name in [n for n in entries if (row_of(n) or EMBED).role == TID2EID.role]:
        e = entries[name]
        if e.dtype not in ("I64", "I32"):
            continue  # the plan check reports the dtype
        bad = lo = hi = 0
        with source.reader(root / where[name]) as r:
            rows = e.shape[0] if e.shape else 1
            for r0 in range(0, rows, 1 << 16):
                t = np.asarray(r.read_rows(name, r0, min(rows, r0 + (1 << 16))))
                out = (t < 0) | (t >= experts)
                if out.any():
                    bad += int(np.count_nonzero(out))
                    lo, hi = min(lo, int(t.min())), max(hi, int(t.max()))
        if bad:
            f.add("tid2eid-range", f"{where[name]}: tensor '{name}': {bad:,} entries outside "
                  f"[0, {experts}) (n_routed_experts); found values from {lo} to {hi}",
                  file=where[name], tensor=name, expected=f"0..{experts - 1}",
                  found=f"{bad} entries in {lo}..{hi}")


def checkpoint_plan(config: DeepseekV4Config, entries: dict[str, TensorEntry]) -> V4TensorPlan:
    """The plan of a checkpoint's tensors: the layout and expert format they show."""
    layout, experts = detect_layout(entries)
    return V4TensorPlan(config, layout, expert_dtype=experts)


def check_v4(source: Source, root: Path, inv, cfg: DeepseekV4Config | None, own: bool,
             f: Findings, check_plan, expected_tensors, check_config_layout, expect
             ) -> tuple[str, list[str], V4TensorPlan | None]:
    """The V4 checks on an inventory from the inventory's structure pass; (layout, checks,
    the plan checked against). The inventory hands in its plan comparison helpers
    (`plan_checks`: one implementation of each)."""
    layout, experts = detect_layout(inv.entries)
    if cfg is not None and layout == "hf":  # upcast --layout hf: no scales
        inv.scales = set()
        plan = V4TensorPlan(cfg, "hf")
        mtp = range(cfg.num_hidden_layers, cfg.num_hidden_layers + cfg.num_mtp_layers)
        check_plan(expected_tensors(plan), inv, mtp, f)
        return "bf16", ["structure", "plan"], plan
    inv.scales = check_pairing(inv.entries, inv.shard_of, set(inv.unreadable), f)
    checks = ["structure", "pairing"]
    if cfg is None:
        return layout, checks, None
    if own:
        check_config_layout(cfg, layout, f)
    plan = V4TensorPlan(cfg, layout, expert_dtype=experts)
    mtp = range(cfg.num_hidden_layers, cfg.num_hidden_layers + cfg.num_mtp_layers)
    check_plan(expected_tensors(plan), inv, mtp, f)
    check_hash_tables(source, root, inv.entries, inv.shard_of, cfg.n_routed_experts, f)
    return layout, [*checks, "plan"], plan


def check_mp_v4(cfg: DeepseekV4Config, n: int, invs: dict, ranks: dict[int, str], f: Findings,
                check_plan, expect) -> list[str]:
    """DeepSeek-V4 rank files against DeepSeek's V4 convert.py rules (`mp`); the checks
    that ran."""
    first = next(iter(invs.values())).entries
    experts = "fp4" if any(e.dtype == "I8" for e in first.values()) else detect_layout(first)[1]
    plan = V4TensorPlan(cfg, "fp8", expert_dtype=experts)
    try:
        check_blocks(plan, n)
        pieces = rank_pieces(plan, n)
    except CkptError as e:
        f.add("mp-split-invalid", str(e))
        return ["structure"]
    for rank, inv in invs.items():
        expected = {p.name: expect(p.shape, p.dtype, None) for p in pieces[rank]}
        inv.scales = set()  # V4 scales are planned tensors here, checked by the plan
        check_plan(expected, inv, range(0), f, file=ranks[rank])
    return ["structure", "plan"]
