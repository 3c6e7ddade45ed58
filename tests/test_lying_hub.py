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
from ckpt_tools.remote import verified
from ckpt_tools.commands.reshard import reshard_by_size, to_deepseek_mp
from ckpt_tools.io.safetensors_io import read_header

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
    r = _cli(["reshard", "hf://org/fp8", tmp_path / "out", "--to", "deepseek-mp", "--model-parallel", "2"])
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
    name. The rerun hashes it again before any result derived from it counts."""
    local = sources / "fp8"
    name = sorted(p.name for p in local.glob("*.safetensors"))[0]
    data = (local / name).read_bytes()
    kept = tmp_path / "out" / SOURCE_COPY_DIR / hashlib.sha256(data).hexdigest()
    kept.parent.mkdir(parents=True)
    kept.write_bytes(data[:-100] + bytes(100))  # the right size, a zeroed tail
    upcast("hf://org/fp8", tmp_path / "out", workers=1)
    upcast(local, tmp_path / "from-disk", workers=1)
    assert files_of(tmp_path / "out") == files_of(tmp_path / "from-disk")


def test_ctrl_c_while_a_copy_is_under_way_leaves_no_temporary_copy(hub, sources, tmp_path):
    name = sorted(p.name for p in (sources / "fp8").glob("*.safetensors"))[-1]
    hub.hold(name, after=(sources / "fp8" / name).stat().st_size - 1024)  # the copy waits
    dst = tmp_path / "out"
    run = subprocess.Popen([sys.executable, "-m", "ckpt_tools", "upcast", "hf://org/fp8",
                            str(dst), "--workers", "1"], stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    copies = dst / SOURCE_COPY_DIR
    while run.poll() is None and not list(copies.glob("*.partial")):
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    hub.release(name)  # the request under way ends; the copy then stops
    assert run.wait(120) == 130, run.stderr.read()
    assert "Traceback" not in run.stderr.read()
    assert not list(copies.glob("*.partial"))
