"""E8M0 scales are checked against the range in which the dequantised weight stays finite
(issue 27, 10): `validate --deep` reports `e8m0-overflow` (NaN keeps `e8m0-nan`), and
upcast refuses such a scale naming tensor and byte instead of writing Inf."""

from __future__ import annotations

import numpy as np
import pytest

from ckpt_tools.commands.convert import upcast
from ckpt_tools.errors import FormatError
from ckpt_tools.io.safetensors_io import SafetensorsReader, read_header, write_safetensors
from ckpt_tools.commands.tiny import make_tiny
from ckpt_tools.families.deepseek_v4.checks import largest_finite_scale_byte
from ckpt_tools.commands.validate import validate


def test_limits_follow_the_weight_format():
    # e4m3 448 = 1.75 * 2^8: 448 * 2^(246-127) = 1.75 * 2^127 < 2^128; MXFP4 6 = 1.5 * 2^2
    assert largest_finite_scale_byte("F8_E4M3") == 246
    assert largest_finite_scale_byte("I8") == 252


def _set_scale_byte(root, fmt: str, byte: int) -> str:
    """Set every byte of one `fmt` weight's E8M0 scale; returns the scale's name."""
    for path in sorted(root.glob("*.safetensors")):
        entries = read_header(path).entries
        weight = next((n for n, e in entries.items() if e.dtype == fmt
                       and n.removesuffix(".weight") + ".scale" in entries), None)
        if weight is None:
            continue
        scale = weight.removesuffix(".weight") + ".scale"
        with SafetensorsReader(path) as r:
            tensors = {n: np.array(r.get(n)) for n in r.names}
        tensors[scale] = np.full_like(tensors[scale].view(np.uint8), byte).view(
            tensors[scale].dtype)
        write_safetensors(path, tensors)
        return scale
    raise AssertionError(f"no {fmt} weight")


@pytest.mark.parametrize("fmt, byte, ok", [("F8_E4M3", 254, False), ("F8_E4M3", 246, True),
                                           ("I8", 253, False), ("I8", 252, True)])
def test_deep_and_upcast_agree_on_the_finite_range(tmp_path, fmt, byte, ok):
    src = make_tiny(tmp_path / "v4", "v4-flash", fp8=True, seed=6).path
    scale = _set_scale_byte(src, fmt, byte)
    codes = {f.code for f in validate(src, deep=True).findings if f.tensor == scale}
    assert ("e8m0-overflow" not in codes) == ok, codes
    if ok:
        report = upcast(src, tmp_path / "out", workers=1)
        assert report.ok
        assert not validate(tmp_path / "out", deep=True).findings  # no Inf written
    else:
        with pytest.raises(FormatError, match=rf"'{scale}': E8M0 scale byte {byte} .*"
                                              r"\[e8m0-overflow\]"):
            upcast(src, tmp_path / "out", workers=1)


def test_nan_scale_keeps_its_own_code(tmp_path):
    src = make_tiny(tmp_path / "v4", "v4-flash", fp8=True, seed=6).path
    scale = _set_scale_byte(src, "F8_E4M3", 255)
    codes = {f.code for f in validate(src, deep=True).findings if f.tensor == scale}
    assert codes == {"e8m0-nan"}
