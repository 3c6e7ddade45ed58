"""Regenerate the README's pictures, docs/img/*.png, from presets and tiny checkpoints.

    python docs/make_images.py        (needs the plot extra: pip install -e ".[plot]")

1. verify.png: a tiny V3 (make-tiny, BF16) block-quantised to FP8 by `ckpt quantize`,
   verified against its BF16 original, layer by layer.
2. diff.png: `ckpt diff v2.5 v3` (presets).
3. values.png: `ckpt diff BF16 FP8 --values` on the same two tiny checkpoints: where the
   FP8 rounding error sits, by layer and tensor family.
4. info.png: `ckpt info v3` (preset): where the 689 GB of the FP8 release live.

Everything is drawn by ckpt_tools.plot from the library's reports, exactly as `--plot`
draws it; the tiny checkpoints are built in a temporary directory and removed. Each image
must stay under 200 KB (checked here) so that it can live in git.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # draw with the code next to this script

from ckpt_tools.convert import quantize  # noqa: E402
from ckpt_tools.diff import diff  # noqa: E402
from ckpt_tools.info import describe  # noqa: E402
from ckpt_tools.plot import (diff_figure, info_figure, save_figure, value_diff_figure,  # noqa: E402
                             verify_figure)
from ckpt_tools.tiny import make_tiny  # noqa: E402
from ckpt_tools.verify import verify  # noqa: E402

IMAGES = DOCS / "img"
MAX_BYTES = 200_000


def main() -> int:
    IMAGES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        bf16, fp8 = Path(tmp) / "v3-tiny-bf16", Path(tmp) / "v3-tiny-fp8"
        make_tiny(bf16, "v3", seed=0)
        quantize(bf16, fp8, workers=1)
        figures = {
            "verify": verify_figure(verify(fp8, bf16)),
            "diff": diff_figure(diff("v2.5", "v3")),
            "values": value_diff_figure(diff(bf16, fp8, values=True)),
            "info": info_figure(describe("v3")),
        }
    too_big = []
    for name, figure in figures.items():
        path = save_figure(figure, IMAGES / f"{name}.png")
        size = path.stat().st_size
        print(f"{path.relative_to(DOCS.parent)}: {size / 1000:.0f} KB")
        if size >= MAX_BYTES:
            too_big.append(path.name)
    if too_big:
        print(f"over {MAX_BYTES // 1000} KB: {', '.join(too_big)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
