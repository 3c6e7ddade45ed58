"""Hostile and random bytes: the header reader and the index parser raise only our own
errors, in bounded time and memory (issue: reliability)."""

import json
import resource
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckpt_tools.errors import FormatError
from ckpt_tools.io.index import read_index
from ckpt_tools.io.safetensors_io import SafetensorsReader, read_header, write_safetensors

FUZZ = settings(max_examples=300, deadline=2000,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_file(tmp_path):
    p = tmp_path / "valid.safetensors"
    write_safetensors(p, {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
                          "b": np.ones((4,), dtype=np.int64)})
    return p.read_bytes()


def _check(path):
    """Either a valid header whose tensors read back, or a FormatError; nothing else."""
    try:
        h = read_header(path)
    except FormatError:
        return
    with SafetensorsReader(path, h) as r:
        for name in h.entries:
            assert r.get(name).nbytes == h.entries[name].nbytes


@FUZZ
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes(tmp_path, data):
    p = tmp_path / "x.safetensors"
    p.write_bytes(data)
    _check(p)


@FUZZ
@given(st.data())
def test_mutated_valid_file(tmp_path, data):
    raw = bytearray(_valid_file(tmp_path))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
        pos = data.draw(st.integers(0, len(raw) - 1))
        if op == "flip":
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "truncate":
            del raw[pos:]
            if not raw:
                break
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    p = tmp_path / "m.safetensors"
    p.write_bytes(bytes(raw))
    _check(p)


json_values = st.recursive(
    (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
     | st.text(max_size=8)),
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.text(max_size=6), children, max_size=4)),
    max_leaves=12,
)


@FUZZ
@given(header=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
       tail=st.binary(max_size=64))
def test_random_json_headers(tmp_path, header, tail):
    hb = json.dumps(header).encode()
    p = tmp_path / "j.safetensors"
    p.write_bytes(struct.pack("<Q", len(hb)) + hb + tail)
    _check(p)


@FUZZ
@given(doc=json_values)
def test_index_parser_raises_only_format_errors(tmp_path, doc):
    p = tmp_path / "model.safetensors.index.json"
    p.write_text(json.dumps(doc))
    try:
        idx = read_index(p)
    except FormatError:
        return
    assert all(isinstance(v, str) for v in idx.weight_map.values())


def test_index_parser_on_garbage_bytes(tmp_path):
    p = tmp_path / "model.safetensors.index.json"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(FormatError, match="not valid JSON"):
        read_index(p)


def test_million_tensor_header_is_refused_before_parsing(tmp_path):
    """1,000,000 zero-size tensors: refused (over MAX_TENSORS) without decoding the JSON."""
    entries = ",".join(f'"t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'
                       for i in range(1_000_000))
    hb = ("{" + entries + "}").encode()
    p = tmp_path / "many.safetensors"
    p.write_bytes(struct.pack("<Q", len(hb)) + hb)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(FormatError, match="declares 1,000,000 tensors"):
        read_header(p)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200, grown_mb  # the 60 MB header itself, not a parsed million dicts


def test_many_tensors_under_the_cap_still_parse(tmp_path):
    n = 100_000
    entries = ",".join(f'"t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'
                       for i in range(n))
    hb = ("{" + entries + "}").encode()
    p = tmp_path / "many.safetensors"
    p.write_bytes(struct.pack("<Q", len(hb)) + hb)
    assert len(read_header(p).entries) == n
