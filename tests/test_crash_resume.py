"""Converters killed with SIGKILL at random points and rerun produce output byte-identical
to an uninterrupted run; after every kill no file under a final name is partial
(issue: reliability). Kill points come from ckpt_tools.execution.fault_injection."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ckpt_tools.cli import _available
from ckpt_tools.execution.fault_injection import ENV_VAR
from ckpt_tools.io.safetensors_io import read_header
from ckpt_tools.commands.tiny import make_tiny

SEEDS = [11, 23, 37]

CASES = {
    "upcast": (True, ["upcast", "{src}", "{dst}", "--workers", "1"]),
    "upcast-2-workers": (True, ["upcast", "{src}", "{dst}", "--workers", "2"]),
    "quantize": (False, ["quantize", "{src}", "{dst}", "--workers", "1"]),
    "reshard-size": (True, ["reshard", "{src}", "{dst}", "--max-shard-size", "150KB",
                            "--workers", "1"]),
    # tiny FP8 widths are not multiples of 128 x N, so the mp split runs on BF16
    "reshard-mp": (False, ["reshard", "{src}", "{dst}", "--to", "deepseek-mp",
                           "--model-parallel", "2", "--workers", "1"]),
    # DeepSeek-V4 (FP8 + MXFP4 experts)
    "upcast-v4-hf": ("v4", ["upcast", "{src}", "{dst}", "--layout", "hf", "--workers", "1"]),
    "quantize-v4-repack": ("v4", ["quantize", "{src}", "{dst}", "--expert-dtype", "fp8",
                                  "--workers", "1"]),
    "reshard-v4-mp": ("v4", ["reshard", "{src}", "{dst}", "--to", "deepseek-mp",
                             "--model-parallel", "2", "--workers", "1"]),
}


def run(args, env_extra=None):
    env = dict(os.environ)
    env.pop(ENV_VAR, None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "ckpt_tools", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def files_of(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())
            if p.is_file() and not p.name.startswith(".")}


def assert_no_partial_under_final_name(dst: Path):
    for p in dst.iterdir():
        if p.suffix == ".safetensors":
            h = read_header(p)  # a torn file fails here (truncated / size mismatch)
            assert h.file_size == p.stat().st_size


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash-src")
    fp8 = root / "fp8"
    bf16 = root / "bf16"
    make_tiny(fp8, "v3", fp8=True, shards=3, seed=5)
    make_tiny(bf16, "v3", fp8=False, shards=3, seed=5)
    v4 = make_tiny(root / "v4", "v4-flash", fp8=True, shards=3, seed=5).path
    return {True: fp8, False: bf16, "v4": v4}


@pytest.mark.parametrize("case", list(CASES))
def test_killed_and_rerun_is_byte_identical(tmp_path, sources, case):
    command = CASES[case][1][0]
    if not _available(command):
        pytest.skip(f"{command} not available")
    fp8, template = CASES[case]
    src = sources[fp8]

    def args(dst):
        return [a.format(src=src, dst=dst) for a in template]

    # Every run writes to the same path: reports may name their destination.
    dst = tmp_path / "out"
    r = run(args(dst))
    assert r.returncode == 0, r.stderr
    expected = files_of(dst)
    points = sum(len(read_header(dst / n).entries) + 1
                 for n in expected if n.endswith(".safetensors"))

    for seed in SEEDS:
        shutil.rmtree(dst)
        kill_at = random.Random(seed).randint(1, points)
        r = run(args(dst), {ENV_VAR: str(kill_at)})
        killed = r.returncode in (-signal.SIGKILL, 1)  # 1: a worker was killed and the pool broke
        assert killed or r.returncode == 0, (kill_at, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr
        if killed:
            assert_no_partial_under_final_name(dst)
            r = run(args(dst))
            assert r.returncode == 0, (kill_at, r.stderr)
        assert files_of(dst) == expected, f"kill at {kill_at} of {points}"
