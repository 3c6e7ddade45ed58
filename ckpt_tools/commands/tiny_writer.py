"""Writing a tiny checkpoint from its plan (any family: `tiny` for V2/V3,
`families/deepseek_v4/tiny`), and the report of what was written. Apart from `tiny` so that
`tiny` can hand V4 sources to `families/deepseek_v4/tiny` without the two importing each
other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, computed_field

from ..io.index import INDEX_FILE, ShardIndex, shard_file_name, write_index, write_json_atomic
from ..io.output import OutputDir
from ..execution.progress import Progress, or_null
from ..results import Result
from ..io.safetensors_io import SafetensorsWriter
from ..configs.sources import CONFIG_FILE
from ..inventory.tensor_plan import TensorSpec


def _split(specs: list[TensorSpec], shards: int) -> list[list[TensorSpec]]:
    """Contiguous groups of about equal bytes; with FP8, the first boundary falls between a
    weight and its scale so that one scale lives in another shard (as in V3's release)."""
    shards = max(1, min(shards, len(specs)))
    total = sum(s.nbytes for s in specs)
    cuts, acc = [], 0
    for i, s in enumerate(specs[:-1]):
        acc += s.nbytes
        wanted = shards - 1 - len(cuts)
        # one big tensor may pass several shares: then cut right after it, as often as the
        # tensors left still allow `shards` files in all
        if wanted and (acc >= total * (len(cuts) + 1) / shards or len(specs) - i - 1 == wanted):
            cuts.append(i + 1)
    if cuts:
        limit = cuts[1] if len(cuts) > 1 else len(specs)
        scale_at = next((j for j in range(cuts[0], limit) if specs[j].scale_of), None)
        if scale_at is not None:
            cuts[0] = scale_at  # the scale opens the next shard; its weight closes this one
    bounds = [0, *cuts, len(specs)]
    return [specs[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


class TinyCheckpoint(Result):
    """What `make_tiny` wrote; `ckpt make-tiny --json` prints exactly this."""

    path: Path
    preset: str = Field(description="The source: a preset, config.json or checkpoint directory")
    layout: Literal["bf16", "fp8"]
    shards: int
    tensors: int
    total_bytes: int = Field(description="Bytes of tensor data (the index's total_size)")
    shrunk: dict[str, tuple[Any, Any]] = Field(
        default_factory=dict, description="Config fields made smaller: {field: [source value, "
                                          "tiny value]}")

    @computed_field(description="Always true: make_tiny raises when it cannot write")
    @property
    def ok(self) -> bool:
        return True


def write_tiny(dst: str | Path, plan, shards: int, encode, raw: dict[str, Any], *,
               overwrite: bool, side_files: dict[str, dict[str, Any]],
               progress: Progress | None = None) -> int:
    """Write `plan`'s tensors into `shards` shards (a scale opens the next shard at a cut),
    with index, config.json `raw` and `side_files`. `encode(spec, pending_scales)` streams
    the stored bytes of a non-scale tensor and leaves its scale, if any, in
    `pending_scales[spec.scale_name]` for when the scale's turn comes. Returns the number
    of shards."""
    progress = or_null(progress)
    groups = _split(list(plan.specs), shards)
    with OutputDir(dst, overwrite=overwrite) as out:
        weight_map: dict[str, str] = {}
        pending_scales: dict[str, np.ndarray] = {}
        for i, group in enumerate(groups, start=1):
            fname = shard_file_name(i, len(groups))
            with SafetensorsWriter(out.path / fname,
                                   [(s.name, s.dtype, s.shape) for s in group]) as w:
                for s in group:
                    if s.scale_of:
                        w.write(s.name, pending_scales.pop(s.name))
                        progress.advance(s.nbytes)
                    else:
                        w.write_bytes(s.name, encode(s, pending_scales))
                    weight_map[s.name] = fname
        write_index(out.path / INDEX_FILE, ShardIndex(weight_map, plan.total_bytes))
        write_json_atomic(out.path / CONFIG_FILE, raw)
        for name, content in side_files.items():
            write_json_atomic(out.path / name, content)
    return len(groups)
