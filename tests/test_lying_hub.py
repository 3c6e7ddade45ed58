"""A Hub that serves bytes differing from its listed LFS SHA-256 (same length, header intact):
every writer reading hf:// refuses naming the file and both digests, writes nothing derived
from that file, and once the Hub serves the right bytes the rerun equals the run from disk."""

from __future__ import annotations

import hashlib

import pytest
from test_remote import loopback_only  # noqa: F401  (autouse fixture)
from test_remote_convert import _cli, files_of, hub, sources  # noqa: F401  (fixtures)

from ckpt_tools.commands.convert import quantize, upcast
from ckpt_tools.errors import CkptError
from ckpt_tools.io.output import SOURCE_COPY_DIR
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
