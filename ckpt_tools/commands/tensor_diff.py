"""Tensor-level comparison of two checkpoint directories, for `ckpt diff`.

`header_diff` compares names, shapes and dtypes from the index and shard headers, grouped
by tensor-plan family. `value_diff` compares every common tensor numerically (max abs,
relative L2, cosine) by streaming row chunks: a quantised weight is dequantised with its
scale in the format its plan gives (block FP8 with F32 `weight_scale_inv` or E8M0 `.scale`,
MXFP4 with E8M0 `.scale`), so a quantised weight against a BF16 one is compared by value.
Which tensor is whose scale comes from each checkpoint's plan, never from a name suffix.
Memory: a few chunks of one tensor (float64 temporaries of `_CHUNK_ELEMENTS` elements).
NumPy is imported only when values are compared.
"""

import math
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ..io.dtypes import FP8_DTYPES
from ..formats import FP8_BLOCK
from ..execution.progress import Progress, or_null
from ..results import Result

if TYPE_CHECKING:
    from ..inventory.checkpoint import Checkpoint
    from ..io.safetensors_io import TensorEntry

class TensorGroupDiff(Result):
    family: str = Field(description="Plan family of the tensors, or the name itself if unknown")
    kind: Literal["only_a", "only_b", "shape", "dtype", "fp8_vs_float"] = Field(
        description="fp8_vs_float: quantised (FP8 or MXFP4, with a scale) on one side only")
    count: int
    a: str | None = Field(description="Shape and dtype on side A of the first tensor")
    b: str | None
    examples: list[str]


class HeaderDiff(Result):
    tensors_a: int
    tensors_b: int
    common: int
    layout_a: str
    layout_b: str
    matching: bool = Field(description="Same names, shapes and dtypes up to quantised vs float "
                           "storage")
    scales_only_a: int = Field(description="Scales in A whose weight B stores unquantised")
    scales_only_b: int
    groups: list[TensorGroupDiff]


class TensorValueDiff(Result):
    name: str
    family: str | None = Field(description="Plan family of A's tensor, None if the plan has "
                               "no such tensor")
    layer: int | None = Field(description="Decoder layer (MTP layers follow the main ones); "
                              "None for global tensors")
    shape: list[int]
    dtype_a: str
    dtype_b: str
    max_abs: float | None = Field(description="None when NaN/inf differ (one side only)")
    rel_l2: float | None = Field(description="||a - b|| / ||a||; 0 when both are zero, None "
                                 "when not finite (NaN/inf on one side, or a zero A)")
    cosine: float | None = Field(description="a.b / (||a|| ||b||); 1 when equal, None when "
                                 "not finite")


class ValueDiff(Result):
    compared: int
    identical: int
    skipped: dict[str, int] = Field(description="Reason -> tensors not compared")
    bytes_read: int
    non_finite: int = Field(description="Tensors whose metrics are not finite (listed first)")
    max_rel_l2: float = Field(description="Over the tensors with finite metrics")
    max_abs: float
    min_cosine: float
    tensors: list[TensorValueDiff] = Field(description="Worst first (relative L2, then max abs)")
    family_order: list[str] = Field(
        default_factory=list, description="A's tensor families in its tensor plan's order "
        "(the columns of `diff --values --plot`)")


_EXAMPLES = 3


def _describe(entry) -> str:
    return f"{list(entry.shape)} {entry.dtype}"


def _scale_of(ck: "Checkpoint", name: str) -> str | None:
    """The scale tensor `ck` stores for weight `name`, None when it stores it unquantised."""
    spec = ck.plan.get(name)
    scale = spec.scale_name if spec is not None else None
    return scale if scale is not None and scale in ck else None


def _scaled_weight(ck: "Checkpoint", name: str) -> str | None:
    """The weight that `name` is the scale of in `ck`'s plan, None for any other tensor."""
    spec = ck.plan.get(name)
    return spec.scale_of if spec is not None else None


def _is_quantised(ck: "Checkpoint", name: str, entry: "TensorEntry") -> bool:
    return entry.dtype in FP8_DTYPES or _scale_of(ck, name) is not None


def _logical_shape(ck: "Checkpoint", name: str, entry: "TensorEntry") -> tuple[int, ...]:
    """The shape of the value: an MXFP4 weight stores two codes a byte ([out, in/2] I8)."""
    if entry.dtype in _PACKED and _scale_of(ck, name) is not None:
        return (*entry.shape[:-1], entry.shape[-1] * 2)
    return tuple(entry.shape)


_PACKED = frozenset({"I8", "U8"})  # MXFP4: two e2m1 codes per byte


def header_diff(ck_a: "Checkpoint", ck_b: "Checkpoint") -> HeaderDiff:
    """Names, shapes and dtypes of two checkpoints' tensors, grouped by plan family."""
    names_a, names_b = ck_a.index.weight_map, ck_b.index.weight_map
    groups: dict[tuple[str, str], list] = {}

    def family(name: str) -> str:
        spec = ck_a.plan.get(name) or ck_b.plan.get(name)
        return spec.family if spec else name

    def add(kind: str, name: str, a: str | None, b: str | None) -> None:
        bucket = groups.setdefault((family(name), kind), [0, a, b, []])
        bucket[0] += 1
        if len(bucket[3]) < _EXAMPLES:
            bucket[3].append(name)

    scales_only = {"a": 0, "b": 0}
    for this, other, ck, side in ((names_a, names_b, ck_a, "a"), (names_b, names_a, ck_b, "b")):
        for name in this:
            if name in other:
                if side == "b":
                    continue
                ea, eb = ck_a.locate(name)[1], ck_b.locate(name)[1]
                if _logical_shape(ck_a, name, ea) != _logical_shape(ck_b, name, eb):
                    add("shape", name, _describe(ea), _describe(eb))
                elif ea.dtype != eb.dtype:
                    quantised = _is_quantised(ck_a, name, ea) != _is_quantised(ck_b, name, eb)
                    add("fp8_vs_float" if quantised else "dtype", name, _describe(ea),
                        _describe(eb))
            elif _scaled_weight(ck, name) in other:
                scales_only[side] += 1  # quantised on this side, unquantised on the other
            else:
                described = _describe(ck.locate(name)[1])
                add(f"only_{side}", name,
                    *((described, None) if side == "a" else (None, described)))
    out = [TensorGroupDiff(family=f, kind=k, count=n, a=a, b=b, examples=ex)
           for (f, k), (n, a, b, ex) in groups.items()]
    return HeaderDiff(
        tensors_a=len(names_a), tensors_b=len(names_b),
        common=sum(1 for n in names_a if n in names_b), layout_a=ck_a.layout, layout_b=ck_b.layout,
        matching=all(g.kind == "fp8_vs_float" for g in out), scales_only_a=scales_only["a"],
        scales_only_b=scales_only["b"], groups=out)


_CHUNK_ELEMENTS = 1 << 21  # float32 rows per step: 8 MB per side and for their difference


def _float32_rows(ck: "Checkpoint", name: str, start: int, stop: int):
    """Rows [start, stop) of a tensor's value in float32, dequantised with its scale in the
    format the plan gives it (FP8 blocks with F32 or E8M0 scales, MXFP4)."""
    scale = _scale_of(ck, name)
    entry = ck.locate(name)[1]
    if scale is None or (entry.dtype in FP8_DTYPES and ck.locate(scale)[1].dtype == "F32"):
        return ck.read_float32_rows(name, start, stop)  # weight_scale_inv: Checkpoint's own
    from ..formats.mxfp4 import decode_rows  # numpy: E8M0-scaled FP8 and MXFP4 codecs

    weights, scales = ck.reader(ck.locate(name)[0]), ck.reader(ck.locate(scale)[0])
    return decode_rows(lambda a, b: weights.read_rows(name, a, b),
                       lambda a, b: scales.read_rows(scale, a, b), entry.dtype, start, stop,
                       entry.shape[0], name)


def _compare(ck_a: "Checkpoint", ck_b: "Checkpoint", name: str, shape: tuple[int, ...]) -> tuple:
    """(max_abs, rel_l2, cosine) of one tensor (`shape`: its value's), streamed in row chunks."""
    import numpy as np

    rows = shape[0] if shape else 1
    cols = math.prod(shape[1:]) if len(shape) > 1 else 1
    step = max(1, _CHUNK_ELEMENTS // max(cols, 1))
    if step >= FP8_BLOCK[0]:
        step -= step % FP8_BLOCK[0]  # whole FP8 row blocks: no scale row is read twice
    sq_d = sq_a = sq_b = dot = 0.0
    max_abs = 0.0

    def inner(u, v) -> float:  # products and sum in float64, no float64 copies of the chunk
        return float(np.einsum("i,i->", u, v, dtype=np.float64))

    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        x = _float32_rows(ck_a, name, r0, r1).ravel()
        y = _float32_rows(ck_b, name, r0, r1).ravel()
        d = x - y
        dd = inner(d, d)
        if math.isnan(dd):  # equal non-finite values in the same place are no difference
            same = (x == y) | (np.isnan(x) & np.isnan(y))
            d[same] = 0.0
            x, y = np.where(same, 0.0, x), np.where(same, 0.0, y)
            dd = inner(d, d)
        sq_d, sq_a, sq_b, dot = sq_d + dd, sq_a + inner(x, x), sq_b + inner(y, y), dot + inner(x, y)
        if d.size:
            m = max(float(d.max()), -float(d.min()))  # max |d| without an |d| temporary
            if math.isnan(m) or m > max_abs:
                max_abs = m
    norm_a, norm_b, norm_d = math.sqrt(sq_a), math.sqrt(sq_b), math.sqrt(sq_d)
    rel = norm_d / norm_a if norm_a else (0.0 if norm_d == 0 else math.inf)
    if sq_d == 0:
        cosine = 1.0
    elif norm_a and norm_b:
        cosine = max(-1.0, min(1.0, dot / math.sqrt(sq_a * sq_b)))
    else:
        cosine = 0.0
    return max_abs, rel, cosine


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _worst_key(t: TensorValueDiff):
    rel = math.inf if t.rel_l2 is None else t.rel_l2
    mx = math.inf if t.max_abs is None else t.max_abs
    return (-rel, -mx, t.name)


def _only_reason(ck: "Checkpoint", name: str, other: dict, side: str) -> str:
    if _scaled_weight(ck, name) in other:
        return "scale, other side unquantised"
    return f"only in {side}"


def value_diff(ck_a: "Checkpoint", ck_b: "Checkpoint",
               progress: Progress | None = None) -> ValueDiff:
    """Per-tensor max abs, relative L2 and cosine of the tensors both checkpoints hold.

    Quantised weights are compared by their dequantised values (so FP8 or MXFP4 + scale
    against BF16 works); a scale tensor is skipped when the other side has none. Memory: a few row
    chunks of one tensor at a time.
    """
    progress = or_null(progress)
    names_b = ck_b.index.weight_map
    todo, skipped = [], {}
    names_a = ck_a.index.weight_map
    for name in names_a:
        if name not in names_b:
            reason = _only_reason(ck_a, name, names_b, "A")
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        (shard_a, ea), (_, eb) = ck_a.locate(name), ck_b.locate(name)
        shape = _logical_shape(ck_a, name, ea)
        if shape != _logical_shape(ck_b, name, eb):
            skipped["shape differs"] = skipped.get("shape differs", 0) + 1
            continue
        todo.append((shard_a, ea.start, name, shape, ea, eb))
    for name in names_b:
        if name not in names_a:
            reason = _only_reason(ck_b, name, names_a, "B")
            skipped[reason] = skipped.get(reason, 0) + 1
    shard_order = {shard: i for i, shard in enumerate(ck_a.shard_names)}
    todo.sort(key=lambda t: (shard_order[t[0]], t[1]))  # read A sequentially
    total = sum(ea.nbytes + eb.nbytes for *_, ea, eb in todo)
    progress.start(total, "comparing values")
    results = []
    try:
        for _, _, name, shape, ea, eb in todo:
            max_abs, rel, cos = _compare(ck_a, ck_b, name, shape)
            spec = ck_a.plan.get(name)
            results.append(TensorValueDiff(name=name, family=spec.family if spec else None,
                                           layer=spec.layer if spec else None,
                                           shape=list(shape), dtype_a=ea.dtype,
                                           dtype_b=eb.dtype, max_abs=_finite(max_abs),
                                           rel_l2=_finite(rel), cosine=_finite(cos)))
            progress.advance(ea.nbytes + eb.nbytes)
    finally:
        progress.finish()
    results.sort(key=_worst_key)
    return ValueDiff(
        compared=len(results), identical=sum(1 for r in results if r.max_abs == 0),
        skipped=skipped, bytes_read=total,
        non_finite=sum(1 for r in results if None in (r.max_abs, r.rel_l2, r.cosine)),
        max_rel_l2=max((r.rel_l2 for r in results if r.rel_l2 is not None), default=0.0),
        max_abs=max((r.max_abs for r in results if r.max_abs is not None), default=0.0),
        min_cosine=min((r.cosine for r in results if r.cosine is not None), default=1.0),
        tensors=results, family_order=list(dict.fromkeys(s.family for s in ck_a.plan.specs)))
