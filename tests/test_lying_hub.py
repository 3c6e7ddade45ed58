"""A Hub that serves bytes differing from its listed LFS SHA-256 (same length, header intact):
every writer reading hf:// refuses naming the file and both digests, writes nothing derived
from that file, and once the Hub serves the right bytes the rerun equals the run from disk."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from test_remote import loopback_only  # noqa: F401  (autouse fixture)
from test_remote_convert import _cli, files_of, hub, sources  # noqa: F401  (fixtures)

from ckpt_tools.commands import convert
from ckpt_tools.commands.convert import quantize, upcast
from ckpt_tools.errors import CkptError
from ckpt_tools.io.output import JOURNAL_FILE, SOURCE_COPY_DIR
from ckpt_tools.remote import streamed, verified
from ckpt_tools.commands.reshard import reshard_by_size, to_deepseek_mp
from ckpt_tools.io.safetensors_io import read_header
from ckpt_tools.remote.stores import HEADER_PROBE_BYTES

RUNS = {"upcast": ("org/fp8", "fp8", lambda s, d: upcast(s, d, workers=2)),
        "quantize": ("org/bf16", "bf16", lambda s, d: quantize(s, d, workers=1)),
        "reshard-size": ("org/fp8", "fp8", lambda s, d: reshard_by_size(s, d, 150_000, workers=2)),
        "reshard-mp": ("org/bf16", "bf16", lambda s, d: to_deepseek_mp(s, d, 2, workers=1))}


def _lie_about_last_shard(hub, local):
    """Flip bytes in the middle of the last shard's tensor data; returns its name and the
    SHA-256 the Hub lists for it."""
    shard = sorted(p for p in local.glob("*.safetensors"))[-1]
    header = read_header(shard)
    hub.corrupt(shard.name, at=(header.data_offset + shard.stat().st_size) // 2)
    return shard.name


@pytest.mark.parametrize("case", list(RUNS))
def test_lying_hub_is_refused_naming_the_file_and_nothing_derived_is_written(case, hub, sources,
                                                                              tmp_path):
    repo, local_name, run = RUNS[case]
    local = sources / local_name
    bad = _lie_about_last_shard(hub, local)
    dst = tmp_path / "out"
    with pytest.raises(CkptError) as caught:
        run(f"hf://{repo}", dst)
    message = str(caught.value)
    listed = hashlib.sha256((local / bad).read_bytes()).hexdigest()
    assert bad in message and listed in message and "SHA-256" in message
    assert "checksum-mismatch" in message
    assert not (dst / SOURCE_COPY_DIR / listed).exists()  # the bad copy is not kept
    run(local, tmp_path / "from-disk")
    want = files_of(tmp_path / "from-disk")
    for p in dst.glob("*.safetensors"):  # under a final name: only what is right
        assert p.read_bytes() == want[p.name], p.name
    hub.serve_correctly(bad)  # the source fixed: the rerun resumes nothing bad
    run(f"hf://{repo}", dst)
    assert files_of(dst) == want
    assert not (dst / SOURCE_COPY_DIR).exists()  # the checked copies go with the run


def test_lying_hub_cli_error_is_one_line(hub, sources, tmp_path):
    bad = _lie_about_last_shard(hub, sources / "fp8")
    r = _cli(["reshard", "hf://org/fp8", tmp_path / "out", "--to", "deepseek-mp",
              "--model-parallel", "2"])
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("Error: ") and len(r.stderr.strip().splitlines()) == 1
    assert bad in r.stderr and "differs from the Hub's" in r.stderr


def _run_in_thread(run):
    """`run()` in a thread; returns (thread, box): box gets "error" or "report"."""
    box: dict = {}

    def target():
        try:
            box["report"] = run()
        except BaseException as e:  # noqa: BLE001  (handed to the test thread)
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def _converted_bytes_appear(partial, thread) -> bool:
    """Wait until `partial` (created sparse by part_writer) holds converted bytes past its
    header; False if the run ended first."""
    while thread.is_alive():
        try:
            data = partial.read_bytes()
        except FileNotFoundError:
            data = b""
        if len(data) > 8 and any(data[8 + int.from_bytes(data[:8], "little"):]):
            return True
        time.sleep(0.05)
    return False


def test_a_lie_near_the_end_of_a_file_fails_after_its_beginning_was_converted(
        hub, sources, tmp_path, monkeypatch):
    """The copy is read while it is written: parts of the last shard are converted from its
    beginning while its tail is still held by the server; the lying bytes in the tail then
    fail the run, and none of those parts reaches a final name or the journal."""
    local = sources / "fp8"
    bad = sorted(p.name for p in local.glob("*.safetensors"))[-1]
    size = (local / bad).stat().st_size
    hub.corrupt(bad, at=size - 200)  # inside the last tensor
    hub.hold(bad, after=size - 1024)  # the tail (with the lie) waits for the test
    monkeypatch.setattr(verified, "STREAM_BYTES", 16 << 10)
    monkeypatch.setattr(convert, "PART_BYTES", 32 << 10)  # several parts per shard
    dst = tmp_path / "out"
    thread, box = _run_in_thread(lambda: upcast("hf://org/fp8", dst, workers=1))
    assert _converted_bytes_appear(dst / f"{bad}.partial", thread), box  # the tail still held
    assert not (dst / bad).exists()
    hub.release(bad)
    thread.join(120)
    error = box.get("error")
    assert isinstance(error, CkptError), box
    listed = hashlib.sha256((local / bad).read_bytes()).hexdigest()
    assert bad in str(error) and listed in str(error) and "checksum-mismatch" in str(error)
    assert not (dst / bad).exists() and not (dst / f"{bad}.partial").exists()
    assert bad not in json.loads((dst / JOURNAL_FILE).read_text())["done"]
    assert not list((dst / SOURCE_COPY_DIR).glob("*.partial"))  # no temporary copy left
    hub.serve_correctly(bad)
    upcast("hf://org/fp8", dst, workers=1)
    upcast(local, tmp_path / "from-disk", workers=1)
    assert files_of(dst) == files_of(tmp_path / "from-disk")


def test_a_header_changed_after_planning_fails_naming_the_file(hub, sources, tmp_path,
                                                               monkeypatch):
    """The server serves another header to the copier than to planning: the copy refuses
    before serving a byte of it (its digest would only tell at the end of the file)."""
    bad = sorted(p.name for p in (sources / "fp8").glob("*.safetensors"))[0]
    real_start = verified.CheckedCopies.start

    def start_after_a_change(self):
        hub.corrupt(bad, at=100)  # inside the JSON header, after planning read it
        real_start(self)

    monkeypatch.setattr(verified.CheckedCopies, "start", start_after_a_change)
    dst = tmp_path / "out"
    with pytest.raises(CkptError) as caught:
        upcast("hf://org/fp8", dst, workers=1)
    message = str(caught.value)
    assert bad in message and "header bytes" in message and "planned" in message
    assert not (dst / bad).exists()


def test_a_copy_source_reads_ranges_as_the_copy_grows_and_fails_with_the_copy(tmp_path,
                                                                              monkeypatch):
    monkeypatch.setattr(verified, "_reads", {})  # this test's account of reads, whatever fails
    copies, sha256 = tmp_path / "copies", "ab" * 32
    copies.mkdir()
    data = bytes(range(256)) * 64
    source = verified.CopySource(copies, sha256, len(data), "hf://org/x/file.safetensors")
    partial = copies / f"{sha256}.partial"

    def copier():
        with open(partial, "wb", buffering=0) as f:
            for pos in range(0, len(data), 1000):
                f.write(data[pos:pos + 1000])
        (copies / f"{sha256}.partial").rename(copies / sha256)

    thread = threading.Thread(target=copier)
    thread.start()
    assert source.read_at(len(data) - 10, 10) == data[-10:]  # waits for the copy's end
    thread.join()
    assert source.read_at(5, 300) == data[5:305]
    source.close()
    verified.await_checked_reads()  # the copy is complete under its digest's name

    other = verified.CopySource(copies, "cd" * 32, 100, "hf://org/x/other.safetensors")
    (copies / f"{'cd' * 32}.partial").write_bytes(b"x" * 10)
    (copies / f"{'cd' * 32}.failed").write_text("hf://org/x/other.safetensors: SHA-256 1 "
                                                "differs from the Hub's 2 [checksum-mismatch]")
    assert other.read_at(0, 10) == b"x" * 10  # what is copied is served
    with pytest.raises(CkptError, match="other.safetensors.*checksum-mismatch"):
        other.read_at(0, 11)
    with pytest.raises(CkptError, match="other.safetensors"):
        verified.await_checked_reads()  # what was derived from it may not count
    other.close()


def test_a_damaged_copy_kept_by_an_earlier_run_is_fetched_again(hub, sources, tmp_path):
    """Kept copies are not synced to disk: a crash can leave one damaged under its digest's
    name. The rerun hashes it again before any result derived from it counts (reshard by
    size: its output files draw on several source files, which are copied)."""
    local = sources / "fp8"
    name = sorted(p.name for p in local.glob("*.safetensors"))[0]
    data = (local / name).read_bytes()
    kept = tmp_path / "out" / SOURCE_COPY_DIR / hashlib.sha256(data).hexdigest()
    kept.parent.mkdir(parents=True)
    kept.write_bytes(data[:-100] + bytes(100))  # the right size, a zeroed tail
    reshard_by_size("hf://org/fp8", tmp_path / "out", 150_000, workers=1)
    reshard_by_size(local, tmp_path / "from-disk", 150_000, workers=1)
    assert files_of(tmp_path / "out") == files_of(tmp_path / "from-disk")


def test_ctrl_c_while_a_copy_is_under_way_leaves_no_temporary_copy(hub, sources, tmp_path):
    name = sorted(p.name for p in (sources / "fp8").glob("*.safetensors"))[-1]
    hub.hold(name, after=(sources / "fp8" / name).stat().st_size - 1024)  # the copy waits
    dst = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "ckpt_tools", "reshard", "hf://org/fp8",
                            str(dst), "--max-shard-size", "150KB", "--workers", "1"],
                           stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    copies = dst / SOURCE_COPY_DIR
    while run.poll() is None and not list(copies.glob("*.partial")):
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    hub.release(name)  # the request under way ends; the copy then stops
    assert run.wait(120) == 130, run.stderr.read()
    assert "Traceback" not in run.stderr.read()
    assert not list(copies.glob("*.partial"))


# -- files a job streams itself ------------------------------------------------------------
def _shard_gets(hub, since: int = 0) -> dict[str, list[tuple[int, int]]]:
    """Byte ranges GET per shard, in arrival order (from the fake Hub's log)."""
    found: dict[str, list[tuple[int, int]]] = {}
    for r in hub.gets(since=since):
        name = r.path.rsplit("/", 1)[-1]
        if name.endswith(".safetensors") and r.status == 206:
            first, _, last = r.range.removeprefix("bytes=").partition("-")
            found.setdefault(name, []).append((int(first), int(last) + 1))
    return found


@pytest.mark.parametrize("case", ["upcast", "quantize"])
def test_a_file_one_job_reads_whole_is_streamed_once_in_order_and_not_copied(
        case, hub, sources, tmp_path, monkeypatch):
    repo, local_name, run = RUNS[case]
    local = sources / local_name
    step = 48 << 10  # several chunks per shard, none the size of planning's header probe
    monkeypatch.setattr(verified, "STREAM_BYTES", step)
    copied = []
    real_one = verified.CheckedCopies._one
    monkeypatch.setattr(verified.CheckedCopies, "_one",
                        lambda self, root, rel: copied.append(rel) or real_one(self, root, rel))
    since = len(hub.log)
    run(f"hf://{repo}", tmp_path / "out")
    assert not [r for r in copied if r.endswith(".safetensors")]  # no shard copied to disk
    gets = _shard_gets(hub, since)
    for shard in local.glob("*.safetensors"):
        size, header = shard.stat().st_size, read_header(shard)
        # its header; its scales' values (planning checks them; a scale of another shard's
        # weight is also witnessed: read by the planner and by that weight's job)
        planning = {(0, min(size, HEADER_PROBE_BYTES))} | {
            (header.data_offset + e.start, header.data_offset + e.end)
            for n, e in header.entries.items() if n.endswith("_scale_inv")}
        streamed = [r for r in gets[shard.name] if r[0] % step == 0 and r not in planning]
        assert streamed[0][0] == 0 and streamed[-1][1] == size, shard.name
        assert all(a[1] == b[0] for a, b in zip(streamed, streamed[1:]))  # in order, once
        assert set(gets[shard.name]) <= set(streamed) | planning  # no other read of it
    run(local, tmp_path / "from-disk")
    assert files_of(tmp_path / "out") == files_of(tmp_path / "from-disk")


def test_a_streamed_source_holds_what_it_passed_over_and_refuses_a_second_read(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setattr(verified, "_streams", [])
    monkeypatch.setattr(verified, "STREAM_BYTES", 1000)
    data = bytes(range(256)) * 40  # 10,240 bytes: 11 chunks
    fetched = []

    class Store:
        def read_exact(self, offset, length):
            fetched.append((offset, length))
            return data[offset:offset + length]

        def close(self):
            fetched.append("closed")

    digest = hashlib.sha256(data).hexdigest()
    header = (100, hashlib.sha256(data[:100]).hexdigest())
    source = streamed.StreamedSource(Store(), digest, len(data), (header, ()), "hf://org/x/f")
    assert source.read_at(5000, 10) == data[5000:5010]  # a scale after its weight: ahead
    assert fetched == [(i, 1000) for i in range(0, 6000, 1000)]
    assert source.read_at(100, 4900) == data[100:5000]  # what it passed over, held
    assert sorted(source._held) == [5000]  # chunks read whole (the header counts) let go
    with pytest.raises(CkptError, match=r"bytes \[200, 300\) read twice"):
        source.read_at(200, 100)
    assert source.read_at(5010, 990) == data[5010:6000]
    assert not source._held
    verified.await_checked_reads()  # streams the rest (not kept) and checks the digest
    assert fetched[-2:] == [(10000, 240), "closed"] and not verified._streams

    lying = streamed.StreamedSource(Store(), "0" * 64, len(data), None, "hf://org/x/g")
    assert lying.read_at(0, 10) == data[:10]
    with pytest.raises(CkptError, match=r"hf://org/x/g: SHA-256 .* differs.*checksum-mismatch"):
        verified.await_checked_reads()
    changed = streamed.StreamedSource(Store(), digest, len(data), ((100, "f" * 64), ()),
                                      "hf://x/h")
    with pytest.raises(CkptError, match="header bytes .* differ"):
        changed.read_at(0, 10)  # a header other than the one planned: before any byte is used


def test_a_file_a_job_reads_out_of_order_is_copied(hub, tmp_path):
    from ckpt_tools.execution.job import Job
    from ckpt_tools.io.source import Source
    from ckpt_tools.remote.output import open_output

    src = Source.open("hf://org/fp8")
    files = sorted(f for f in src.path.tree.files if f.endswith(".safetensors"))
    whole = [src.for_tensors(src.path, [(src.path / f, list(src.header(src.path / f).entries))])
             for f in files]
    first = src.header(src.path / files[0])
    part = src.for_tensors(src.path, [(src.path / files[0], list(first.entries)[:1])])
    jobs = [Job("a", 1, (whole[0],), in_order=True),  # files[0]: also read by "d"
            Job("b", 1, (whole[1],), in_order=True),  # files[1]: streamed
            Job("c", 1, (whole[2],)),  # files[2]: read whole, not in order
            Job("d", 1, (part,))]  # not in order: it could not wait for "a"
    begun = []
    with open_output(tmp_path / "out", sources=[src.path]) as _out:
        tree = src.path.tree
        real = tree.copier.begin
        tree.copier.begin = lambda streamed=frozenset(): begun.append(streamed) or real(streamed)
        streamed.plan_streams(jobs)
        assert set(tree.streamed) == {files[1]}
        assert begun == [frozenset({(id(tree), files[1])})]
        assert isinstance(tree.open(files[1]), streamed.StreamedSource)
        assert isinstance(tree.open(files[0]), verified.CopySource)
        verified.forget_reads()


def _cross_shard_scale(local):
    """(scale name, its shard, its weight's shard) of a scale stored apart from its weight
    (make-tiny does this once, as V3's release does at shard boundaries)."""
    owner = json.loads((local / "model.safetensors.index.json").read_text())["weight_map"]
    return next((n, owner[n], owner[n.removesuffix("_scale_inv")]) for n in owner
                if n.endswith("_scale_inv") and owner[n] != owner[n.removesuffix("_scale_inv")])


def test_a_lie_in_a_scale_another_shards_job_read_keeps_that_shard_from_counting(
        hub, sources, tmp_path):
    """The scale is read by its weight's job (a witnessed range) while its own shard is
    streamed by another job: the lie fails the streaming job, and the weight's shard, which
    waits for that job, never reaches its final name nor the journal."""
    local = sources / "fp8"
    scale, scale_shard, weight_shard = _cross_shard_scale(local)
    header = read_header(local / scale_shard)
    hub.corrupt(scale_shard, at=header.data_offset + header.entries[scale].start)
    dst = tmp_path / "out"
    with pytest.raises(CkptError, match=f"{scale_shard}: SHA-256 .*checksum-mismatch"):
        upcast("hf://org/fp8", dst, workers=2)
    assert not (dst / weight_shard).exists() and not (dst / scale_shard).exists()
    journal = json.loads((dst / JOURNAL_FILE).read_text())["done"]
    assert weight_shard not in journal and scale_shard not in journal
    hub.serve_correctly(scale_shard)
    upcast("hf://org/fp8", dst, workers=2)
    upcast(local, tmp_path / "from-disk", workers=1)
    assert files_of(dst) == files_of(tmp_path / "from-disk")


def test_a_witnessed_range_is_checked_by_its_reader_and_by_the_stream(monkeypatch):
    monkeypatch.setattr(verified, "_streams", [])
    monkeypatch.setattr(verified, "STREAM_BYTES", 1000)
    data = bytes(range(256)) * 8  # 2,048 bytes; [1500, 1540) is read by another job
    served = bytearray(data)

    class Store:
        def read_exact(self, offset, length):
            return bytes(served[offset:offset + length])

        def close(self):
            pass

    plan = (None, ((1500, 1540, hashlib.sha256(data[1500:1540]).hexdigest()),))
    digest = hashlib.sha256(data).hexdigest()
    other = streamed.StreamedSource(Store(), digest, len(data), plan, "hf://org/x/f")
    assert other.read_at(1510, 20) == data[1510:1530]  # from the witnessed range, not streamed
    assert other._pos == 0
    streaming = streamed.StreamedSource(Store(), digest, len(data), plan, "hf://org/x/f")
    assert streaming.read_at(0, 1500) == data[:1500]
    assert streaming.read_at(1540, 508) == data[1540:]
    assert not streaming._held  # the witnessed bytes count as read
    verified.await_checked_reads()  # both: the reader waits for nothing, the stream matched
    served[1520] ^= 0xFF  # the server now serves other bytes there
    late = streamed.StreamedSource(Store(), digest, len(data), plan, "hf://org/x/g")
    with pytest.raises(CkptError, match=r"bytes \[1500, 1540\) differ from those read when"):
        late.read_at(1500, 40)
    stream = streamed.StreamedSource(Store(), digest, len(data), plan, "hf://org/x/g")
    with pytest.raises(CkptError, match=r"bytes \[1500, 1540\) differ from those read when"):
        stream.read_at(0, 2048 - 8)


def test_a_resumed_run_does_not_fetch_again_a_shard_it_streamed_and_finished(
        hub, sources, tmp_path, monkeypatch):
    """A run fails on its last shard (a lie) after streaming and converting the others; the
    rerun after the fix streams only what is left: a finished shard, matched before, is not
    fetched again to be checked."""
    local = sources / "fp8"
    step = 48 << 10
    monkeypatch.setattr(verified, "STREAM_BYTES", step)
    shards = sorted(local.glob("*.safetensors"), key=lambda p: p.stat().st_size)
    bad = shards[0].name  # the smallest: its job runs last with one worker
    hub.corrupt(bad, at=(read_header(shards[0]).data_offset + shards[0].stat().st_size) // 2)
    dst = tmp_path / "out"
    with pytest.raises(CkptError, match="checksum-mismatch"):
        upcast("hf://org/fp8", dst, workers=1)
    done = set(json.loads((dst / JOURNAL_FILE).read_text())["done"])
    assert done and bad not in done
    hub.serve_correctly(bad)
    since = len(hub.log)
    upcast("hf://org/fp8", dst, workers=1)
    gets = _shard_gets(hub, since)
    for name in done:  # planning reads headers and scales; nothing streams it again
        size = (local / name).stat().st_size
        assert not [r for r in gets.get(name, []) if r[0] % step == 0 and r[1] - r[0] in (
            step, size % step) and r != (0, min(size, HEADER_PROBE_BYTES))], name
    assert [r for r in gets[bad] if r[0] == 0 and r[1] == step]  # the failed one: streamed
    upcast(local, tmp_path / "from-disk", workers=1)
    assert files_of(dst) == files_of(tmp_path / "from-disk")
