"""A multi-worker run killed with SIGKILL takes its workers with it and its rerun resumes to
the same bytes; Ctrl-C twice ends the run with 130 and no traceback (issue 27, 1 and 2).

The run is stopped where a worker is known to be mid-job: `CKPT_FAULT_HANG_AFTER=N:FILE`
makes the first worker to reach its N-th crash point write its pid and hang there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ckpt_tools.execution.fault_injection import ENV_VAR, HANG_AFTER_VAR
from ckpt_tools.commands.tiny import make_tiny

WORKER_GRACE_SECONDS = 1.0  # the bound: no worker outlives its run by more than this


def _env(extra=None):
    env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, HANG_AFTER_VAR)}
    env.update(extra or {})
    return env


def _ckpt(args, extra_env=None):
    return subprocess.run([sys.executable, "-m", "ckpt_tools", *map(str, args)],
                          capture_output=True, text=True, env=_env(extra_env), timeout=300)


def _start(args, extra_env=None):
    return subprocess.Popen([sys.executable, "-m", "ckpt_tools", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(extra_env))


def _wait_for(path: Path, process: subprocess.Popen) -> int:
    while not (path.is_file() and path.read_text()):
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    return int(path.read_text())


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has exited (its new parent reaps it later)


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())
            if p.is_file() and not p.name.startswith(".")}


@pytest.fixture(scope="module")
def fp8_source(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("workers") / "fp8", "v3", fp8=True, shards=4,
                     seed=3).path


pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")


@pytest.mark.parametrize("command, points", [
    # several points: at the first tensor, a few in, a shard or more in
    (["upcast", "{src}", "{dst}", "--workers", "2"], (1, 30)),
    (["reshard", "{src}", "{dst}", "--max-shard-size", "150KB", "--workers", "2"], (5,)),
])
def test_sigkilled_run_takes_its_workers_and_resumes(tmp_path, fp8_source, command, points):
    dst = tmp_path / "out"
    args = [a.format(src=fp8_source, dst=dst) for a in command]
    assert _ckpt(args).returncode == 0
    expected = _files(dst)
    for hang_at in points:
        for p in dst.iterdir():
            p.unlink()
        marker = tmp_path / f"hung-{hang_at}"
        run = _start(args, {HANG_AFTER_VAR: f"{hang_at}:{marker}"})
        hung = _wait_for(marker, run)
        workers = _children(run.pid)
        assert hung in workers
        run.kill()
        run.wait()
        deadline = time.monotonic() + WORKER_GRACE_SECONDS
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not [w for w in workers if _alive(w)], f"workers outlived their run ({hang_at})"
        rerun = _ckpt(args)
        assert rerun.returncode == 0, rerun.stderr
        assert _files(dst) == expected


def test_ctrl_c_twice_exits_130_without_traceback(tmp_path, fp8_source):
    marker = tmp_path / "hung"
    run = _start(["upcast", fp8_source, tmp_path / "out", "--workers", "2"],
                 {HANG_AFTER_VAR: f"1:{marker}"})
    _wait_for(marker, run)  # both workers started, one of them stuck mid-job
    workers = _children(run.pid)
    run.send_signal(signal.SIGINT)
    run.send_signal(signal.SIGINT)
    try:
        _, err = run.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        run.kill()
        raise AssertionError("the run hung after Ctrl-C twice") from None
    assert run.returncode == 130, err
    assert "Traceback" not in err
    assert "rerun the same command to resume" in err
    assert not [w for w in workers if _alive(w)]
