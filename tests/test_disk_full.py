"""A full disk gives a clear one-line error, leaves no temporary or partial files, and
never touches the source (issue: reliability).

The output goes onto a 1 MiB tmpfs when this machine lets us mount one (root in CI), and
otherwise under RLIMIT_FSIZE, which makes writes past the limit fail with EFBIG.
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from ckpt_tools.commands.tiny import make_tiny

SMALL = 1 << 20


def _try_mount(path: Path) -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL}", "tmpfs", str(path)],
                       capture_output=True)
    return r.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """(directory, preexec_fn): a directory whose filesystem holds about 1 MiB."""
    mnt = tmp_path / "small"
    mounted = _try_mount(mnt)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (SMALL, SMALL))

    yield mnt, (None if mounted else limit)
    if mounted:
        subprocess.run(["umount", str(mnt)], check=False)


def run_ckpt(args, preexec_fn=None):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    # Ignore SIGXFSZ so an over-limit write fails with EFBIG instead of killing the process.
    code = ("import signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            "from ckpt_tools.cli import main; main()")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, env=env, preexec_fn=preexec_fn, timeout=300)


def tree_digest(path: Path) -> dict[str, tuple[str, int]]:
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(path))] = (hashlib.sha256(p.read_bytes()).hexdigest(),
                                             p.stat().st_mtime_ns)
    return out


def assert_clean_failure(result, dst: Path):
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    err = result.stderr.strip().splitlines()[-1]  # notes (make-tiny's size) may come first
    assert "Traceback" not in result.stderr and err.startswith("Error:"), result.stderr
    assert result.stderr.count("Error:") == 1, result.stderr
    assert any(k in err for k in ("No space left", "File too large")), err
    leftovers = [p.name for p in dst.rglob("*") if p.name.endswith(".partial")]
    assert not leftovers, leftovers


def test_make_tiny_onto_a_full_disk(small_disk):
    mnt, preexec = small_disk
    dst = mnt / "out"
    # vocab 4096 x hidden 96: two 786 KB embeddings, more than the 1 MiB disk holds
    r = run_ckpt(["make-tiny", dst, "--preset", "v3", "--shards", "2",
                  "--set", "vocab_size=4096"], preexec)
    assert_clean_failure(r, dst)
    assert not (dst / "model.safetensors.index.json").exists()


@pytest.mark.parametrize("command", ["upcast", "reshard", "quantize"])
def test_converters_onto_a_full_disk(small_disk, tmp_path, command):
    from ckpt_tools.cli import _available
    if not _available(command):
        pytest.skip(f"{command} not available")
    mnt, preexec = small_disk
    src = tmp_path / "src"
    make_tiny(src, "v3", fp8=command != "quantize", shards=2, overrides={"vocab_size": 4096})
    before = tree_digest(src)
    dst = mnt / "out"
    args = {"upcast": ["upcast", src, dst], "quantize": ["quantize", src, dst],
            "reshard": ["reshard", src, dst, "--max-shard-size", "100MB"]}[command]
    r = run_ckpt([*args, "--workers", "1"], preexec)
    assert_clean_failure(r, dst)
    assert tree_digest(src) == before
