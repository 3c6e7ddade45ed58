"""Headers are read once per run (issue 26): the inventory reads each file's header, and
every reader and job after it reuses that one (`source.Source`)."""

from __future__ import annotations

import json
import math
import pickle
import random
from collections import Counter
from pathlib import Path

import pytest

from ckpt_tools import from_deepseek_mp, quantize, to_deepseek_mp, upcast, validate
from ckpt_tools.io import safetensors_header, safetensors_io
from ckpt_tools.io.source import Source


@pytest.fixture
def header_reads(monkeypatch):
    """Counts header parses per file name (every header read goes through this)."""
    reads: Counter = Counter()
    parse = safetensors_header.parse_header_bytes

    def counted(path, header, file_size):
        reads[Path(str(path)).name] += 1
        return parse(path, header, file_size)

    monkeypatch.setattr(safetensors_header, "parse_header_bytes", counted)
    return reads


def _shards(ck: Path) -> set[str]:
    return {p.name for p in ck.glob("*.safetensors")}


@pytest.mark.parametrize("deep", [False, True])
def test_validate_reads_each_header_once(make_ckpt, header_reads, deep):
    ck = make_ckpt("v3", fp8=True, shards=3)
    assert validate(ck, deep=deep, workers=1).ok
    assert set(header_reads) == _shards(ck)
    assert set(header_reads.values()) == {1}


def test_upcast_reads_each_source_header_once(make_ckpt, header_reads, tmp_path):
    ck = make_ckpt("v3", fp8=True, shards=3)
    upcast(ck, tmp_path / "out", workers=1)
    assert {n: header_reads[n] for n in _shards(ck)} == dict.fromkeys(_shards(ck), 1)


def test_quantize_reads_each_source_header_once(make_ckpt, header_reads, tmp_path):
    ck = make_ckpt("v3", shards=2)
    quantize(ck, tmp_path / "out", workers=1)
    assert {n: header_reads[n] for n in _shards(ck)} == dict.fromkeys(_shards(ck), 1)


@pytest.mark.parametrize("run", ["upcast", "upcast-hf", "quantize-fp8-experts", "to-mp"])
def test_v4_conversions_read_each_source_header_once(make_ckpt, header_reads, tmp_path, run):
    """DeepSeek-V4's jobs (its own formats) reuse the run's headers as V3's do; the rank
    files written to deepseek-mp are then joined back reading each of theirs once."""
    ck = make_ckpt("v4-flash", fp8=True, shards=3)
    out = tmp_path / "out"
    if run.startswith("upcast"):
        upcast(ck, out, workers=1, layout="hf" if run == "upcast-hf" else None)
    elif run == "quantize-fp8-experts":
        quantize(ck, out, workers=1, expert_dtype="fp8")
    else:
        to_deepseek_mp(ck, out, 2, workers=1)
    assert {n: header_reads[n] for n in _shards(ck)} == dict.fromkeys(_shards(ck), 1)
    if run == "to-mp":
        header_reads.clear()
        from_deepseek_mp(out, tmp_path / "back")
        assert {n: header_reads[n] for n in _shards(out)} == dict.fromkeys(_shards(out), 1)


def test_a_job_source_carries_its_entries_and_reads_no_header(make_ckpt, header_reads):
    """What a worker gets: the entries it reads, pickled, and no header read there."""
    ck = make_ckpt("v3", shards=1)
    source = Source.open(ck)
    shard = next(iter(_shards(ck)))
    full = source.header(ck / shard)
    name = next(iter(full.entries))
    job = pickle.loads(pickle.dumps(source.for_tensors(ck, [(ck / shard, [name])])))
    before = sum(header_reads.values())
    with job.reader(ck / shard) as r:
        assert list(r.header.entries) == [name]
        assert r.get(name).tobytes() == source.reader(ck / shard).get(name).tobytes()
    assert sum(header_reads.values()) == before == 1


def _header(entries: list[tuple[str, str, list, int, int]], order: list[int]) -> bytes:
    doc = {"__metadata__": {"format": "pt"}}
    for i in order:
        name, dtype, shape, start, end = entries[i]
        doc[name] = {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}
    return json.dumps(doc).encode()


@pytest.mark.parametrize("seed", range(6))
def test_header_fast_path_agrees_with_the_exact_checks(seed, monkeypatch):
    """Column-wise checks (`_sound_entries`) give what the entry-by-entry checks give: the
    same entries in the same order for sound headers (in file order, shuffled, with
    zero-size tensors), and the same error for broken ones."""
    rng = random.Random(seed)
    entries, pos = [], 0
    for i in range(40):
        dtype = rng.choice(["BF16", "F32", "F8_E4M3", "I64", "BOOL"])
        shape = [rng.choice([0, 1, 3, 7]) for _ in range(rng.randint(0, 3))]
        if i in (3, 39):  # the ones the broken cases shift or drop hold data
            dtype, shape = "BF16", [3]
        size = safetensors_io.ITEMSIZES[dtype] * math.prod(shape)
        entries.append((f"t{i}", dtype, shape, pos, pos + size))
        pos += size
    orders = [list(range(40)), rng.sample(range(40), 40)]
    broken = [
        lambda e: e[:3] + [(e[3][0], e[3][1], e[3][2], e[3][3] + 8, e[3][4] + 8)] + e[4:],
        lambda e: e[:5] + [(e[5][0], "F99", *e[5][2:])] + e[6:],
        lambda e: e[:2] + [(e[2][0], e[2][1], [True], *e[2][3:])] + e[3:],
        lambda e: e[:-1],  # trailing bytes
    ]

    def parse(raw, exact: bool):
        if exact:
            monkeypatch.setattr(safetensors_header, "_sound_entries", lambda doc, size: None)
        else:
            monkeypatch.undo()
        try:
            h = safetensors_io.parse_header_bytes(Path("f"), raw, 8 + len(raw) + pos)
            return list(h.entries.items())
        except safetensors_io.FormatError as e:
            return str(e)

    for order in orders:
        raw = _header(entries, order)
        assert parse(raw, False) == parse(raw, True) and isinstance(parse(raw, False), list)
        for breaking in broken:
            bad = breaking(list(entries))
            raw = _header(bad, [i for i in order if i < len(bad)])
            assert parse(raw, False) == parse(raw, True)
            assert isinstance(parse(raw, False), str)


def test_a_spec_becomes_a_path_in_one_place():
    """`io.source.locate` (which `Source.open` uses) is the only caller of the resolver
    (`remote.stores.as_path`): every other module takes the path or the Source it is given."""
    import ast

    import ckpt_tools

    package = Path(ckpt_tools.__file__).parent
    callers = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
                if name == "as_path":
                    callers.add(path.relative_to(package).as_posix())
    assert callers == {"io/source.py"}


def test_reshard_by_size_resolves_its_source_once_and_reads_each_header_once(
        make_ckpt, tmp_path, monkeypatch):
    """The spec a user typed becomes a path once; the jobs read through the run's headers."""
    from ckpt_tools.commands.reshard import reshard_by_size
    from ckpt_tools.io import source

    ck = make_ckpt("v3", shards=2)
    located, reads = [], Counter()
    locate, parse = source.locate, safetensors_header.parse_header_bytes

    def counted_locate(spec):
        located.append(spec)
        return locate(spec)

    def counted_parse(path, header, file_size):
        reads[Path(str(path)).parent == ck, Path(str(path)).name] += 1
        return parse(path, header, file_size)

    monkeypatch.setattr(source, "locate", counted_locate)
    monkeypatch.setattr(safetensors_header, "parse_header_bytes", counted_parse)
    reshard_by_size(str(ck), tmp_path / "out", "1MB", workers=1)
    assert [s for s in located if not isinstance(s, Source)] == [str(ck)]
    assert {name: n for (src, name), n in reads.items() if src} == dict.fromkeys(_shards(ck), 1)
