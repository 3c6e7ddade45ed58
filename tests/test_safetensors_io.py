"""The reader follows the spec and refuses every malformed header with a named defect;
files interoperate with the `safetensors` package both ways, for every dtype."""

import json
import os
import resource
import struct

import ml_dtypes
import numpy as np
import pytest
from conftest import NEEDS_REFERENCE
from safetensors.numpy import load_file as st_load_numpy
from safetensors.numpy import save_file as st_save_numpy

from ckpt_tools.io.dtypes import DTYPES
from ckpt_tools.errors import FormatError
from ckpt_tools.io.safetensors_io import (
    MAX_HEADER_BYTES,
    SafetensorsReader,
    SafetensorsWriter,
    read_header,
    write_safetensors,
)

RNG = np.random.default_rng(0)


def sample(dtype_name):
    dt = DTYPES[dtype_name].numpy
    if dtype_name == "BOOL":
        return RNG.integers(0, 2, (3, 5)).astype(bool)
    if dt.kind in "iu":
        return RNG.integers(0, 100, (3, 5)).astype(dt)
    if dtype_name == "F8_E8M0":
        return np.exp2(RNG.integers(-5, 5, (3, 5)).astype(np.float32)).astype(dt)
    return RNG.normal(size=(3, 5)).astype(np.float32).astype(dt)


def test_golden_bytes_of_a_2x2_tensor(tmp_path):
    p = tmp_path / "a.safetensors"
    write_safetensors(p, {"x": np.array([[1, 2], [3, 4]], dtype=np.float32)}, metadata=None)
    raw = p.read_bytes()
    header = b'{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}'
    header += b" " * (-len(header) % 8)
    assert raw == struct.pack("<Q", len(header)) + header + np.arange(1, 5, dtype="<f4").tobytes()


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d != "F8_E8M0"])
def test_round_trip_with_safetensors_package(tmp_path, dtype):
    # safetensors has no numpy BF16/FP8
    torch = pytest.importorskip("torch", reason=NEEDS_REFERENCE)
    from safetensors.torch import load_file as st_load_torch
    from safetensors.torch import save_file as st_save_torch

    arr = sample(dtype)
    ours = tmp_path / "ours.safetensors"
    write_safetensors(ours, {"t": arr, "empty": np.zeros((0, 4), arr.dtype)})
    loaded = st_load_torch(str(ours))
    got = loaded["t"]
    want_bytes = np.ascontiguousarray(arr).view(np.uint8).tobytes()
    assert got.contiguous().view(torch.uint8).numpy().tobytes() == want_bytes
    assert loaded["empty"].shape == (0, 4)

    theirs = tmp_path / "theirs.safetensors"
    st_save_torch({"t": got}, str(theirs), metadata={"format": "pt"})
    with SafetensorsReader(theirs) as r:
        assert r.header.entries["t"].dtype == dtype
        back = r.get("t")
        assert back.dtype == arr.dtype and back.tobytes() == want_bytes
        assert r.header.metadata == {"format": "pt"}


def test_numpy_backend_interop(tmp_path):
    p = tmp_path / "n.safetensors"
    arrs = {"a": sample("F32"), "b": sample("I64"), "c": sample("F16")}
    st_save_numpy(arrs, str(p))
    with SafetensorsReader(p) as r:
        for k, v in arrs.items():
            np.testing.assert_array_equal(r.get(k), v)
    write_safetensors(p, arrs)
    back = st_load_numpy(str(p))
    for k, v in arrs.items():
        np.testing.assert_array_equal(back[k], v)


def _write_raw(path, header_obj, data=b"", *, header_bytes=None, n_override=None):
    hb = header_bytes if header_bytes is not None else json.dumps(header_obj).encode()
    n = len(hb) if n_override is None else n_override
    path.write_bytes(struct.pack("<Q", n) + hb + data)
    return path


@pytest.mark.parametrize("case,needle", [
    ("truncated_file", "truncated"),
    ("tiny_file", "too short"),
    ("header_past_end", "runs past the end"),
    ("header_over_cap", "exceeds"),
    ("header_2_63", "exceeds"),
    ("invalid_json", "not valid JSON"),
    ("not_object", "must be a JSON object"),
    ("duplicate_key", "duplicate key"),
    ("unknown_dtype", "unknown dtype"),
    ("negative_shape", "shape must be a list of non-negative"),
    ("overlap", "overlaps"),
    ("gap", "gap"),
    ("offsets_out_of_range", "past the end"),
    ("bytes_mismatch", "needs 16 bytes"),
    ("reversed_offsets", "data_offsets must be"),
    ("trailing_bytes", "trailing bytes"),
    ("bad_metadata", "__metadata__"),
])
def test_corrupt_headers_are_named(tmp_path, case, needle):
    p = tmp_path / f"{case}.safetensors"
    ok = {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
    if case == "truncated_file":
        _write_raw(p, ok, b"\0" * 10)
    elif case == "tiny_file":
        p.write_bytes(b"\1\0")
    elif case == "header_past_end":
        _write_raw(p, ok, n_override=10_000)
    elif case == "header_over_cap":
        _write_raw(p, ok, n_override=MAX_HEADER_BYTES + 1)
    elif case == "header_2_63":
        _write_raw(p, ok, n_override=2**63)
    elif case == "invalid_json":
        _write_raw(p, None, header_bytes=b"{nope")
    elif case == "not_object":
        _write_raw(p, [1, 2])
    elif case == "duplicate_key":
        _write_raw(p, None, b"\0" * 32, header_bytes=b'{"a":{"dtype":"F32","shape":[2,2],'
                   b'"data_offsets":[0,16]},"a":{"dtype":"F32","shape":[2,2],'
                   b'"data_offsets":[16,32]}}')
    elif case == "unknown_dtype":
        _write_raw(p, {"a": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, b"\0" * 16)
    elif case == "negative_shape":
        _write_raw(p, {"a": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]}},
                   b"\0" * 16)
    elif case == "overlap":
        _write_raw(p, {**ok, "b": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]}},
                   b"\0" * 24)
    elif case == "gap":
        _write_raw(p, {**ok, "b": {"dtype": "F32", "shape": [2, 2], "data_offsets": [20, 36]}},
                   b"\0" * 36)
    elif case == "offsets_out_of_range":
        _write_raw(p, {**ok, "b": {"dtype": "F32", "shape": [2, 2],
                                   "data_offsets": [10**12, 10**12 + 16]}},
                   b"\0" * 32)
    elif case == "bytes_mismatch":
        _write_raw(p, {"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}, b"\0" * 12)
    elif case == "reversed_offsets":
        _write_raw(p, {"a": {"dtype": "F32", "shape": [0], "data_offsets": [16, 0]}}, b"\0" * 16)
    elif case == "trailing_bytes":
        _write_raw(p, ok, b"\0" * 20)
    elif case == "bad_metadata":
        _write_raw(p, {**ok, "__metadata__": {"format": 1}}, b"\0" * 16)
    with pytest.raises(FormatError) as e:
        read_header(p)
    assert str(p) in str(e.value) and needle in str(e.value)


def test_shape_product_overflow_is_refused_without_allocating(tmp_path):
    p = _write_raw(tmp_path / "o.safetensors",
                   {"a": {"dtype": "F64", "shape": [2**62, 2**62], "data_offsets": [0, 16]}},
                   b"\0" * 16)
    with pytest.raises(FormatError, match="needs"):
        read_header(p)


def test_writer_refuses_wrong_order_and_leaves_no_partial(tmp_path):
    p = tmp_path / "w.safetensors"
    with pytest.raises(FormatError, match="expected tensor 'a' next"):
        with SafetensorsWriter(p, [("a", "F32", (2,)), ("b", "F32", (2,))]) as w:
            w.write("b", np.zeros(2, np.float32))
    assert not p.exists() and not list(tmp_path.iterdir())
    with pytest.raises(FormatError, match="closed before tensor 'b'"):
        with SafetensorsWriter(p, [("a", "F32", (2,)), ("b", "F32", (2,))]) as w:
            w.write("a", np.zeros(2, np.float32))
    assert not list(tmp_path.iterdir())
    with pytest.raises(FormatError, match="declared BF16"):
        with SafetensorsWriter(p, [("a", "BF16", (2,))]) as w:
            w.write("a", np.zeros(2, np.float32))


def test_chunked_copy_matches_view(tmp_path):
    p = tmp_path / "c.safetensors"
    a = RNG.normal(size=(64, 33)).astype(ml_dtypes.bfloat16)
    write_safetensors(p, {"a": a})
    with SafetensorsReader(p) as r:
        assert b"".join(r.iter_chunks("a", chunk_bytes=100)) == a.tobytes()
        out = tmp_path / "d.safetensors"
        with SafetensorsWriter(out, [("a", "BF16", a.shape)]) as w:
            w.write_bytes("a", r.iter_chunks("a", chunk_bytes=7))
    assert out.read_bytes() == p.read_bytes()


def _rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_reading_one_tensor_from_a_2gb_sparse_shard_stays_small(tmp_path):
    p = tmp_path / "big.safetensors"
    big = 2 * 1024**3
    header = {"big": {"dtype": "U8", "shape": [big], "data_offsets": [0, big]},
              "small": {"dtype": "F32", "shape": [4], "data_offsets": [big, big + 16]}}
    hb = json.dumps(header).encode()
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb)
        f.seek(8 + len(hb) + big)
        f.write(np.arange(4, dtype="<f4").tobytes())
    assert os.stat(p).st_blocks * 512 < 10 * 1024**2  # really sparse
    before = _rss_kb()
    with SafetensorsReader(p) as r:
        small = np.array(r.get("small"))
        assert r.get("big").shape == (big,)  # a view; nothing read
    grown_mb = (_rss_kb() - before) / 1024
    np.testing.assert_array_equal(small, np.arange(4, dtype=np.float32))
    assert grown_mb < 100, grown_mb
