"""Object stores through fsspec, against moto's S3 server on 127.0.0.1 (started here and
stopped after): an s3:// source read by range, and an s3:// destination that keeps the local
output guarantees (whole objects only, resume after a kill, index last)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

pytest.importorskip("s3fs")  # the optional `s3` extra
moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

from test_remote import loopback_only  # noqa: E402,F401  (autouse fixture)

from ckpt_tools.inventory.checkpoint import Checkpoint  # noqa: E402
from ckpt_tools.commands.convert import upcast  # noqa: E402
from ckpt_tools.errors import FormatError, OutputError  # noqa: E402
from ckpt_tools.execution.fault_injection import ENV_VAR  # noqa: E402
from ckpt_tools.io.output import JOURNAL_FILE  # noqa: E402
from ckpt_tools.remote import stores as remote  # noqa: E402
from ckpt_tools.io.safetensors_io import parse_header_bytes  # noqa: E402
from ckpt_tools.commands.tiny import make_tiny  # noqa: E402
from ckpt_tools.commands.validate import validate  # noqa: E402

BUCKET = "ckpt"


@pytest.fixture(scope="module")
def server():
    srv = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    yield "http://%s:%d" % srv.get_host_and_port()
    srv.stop()


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3-src")
    make_tiny(root / "fp8", "v3", fp8=True, shards=3, seed=7)
    upcast(root / "fp8", root / "want", workers=1)  # what every S3 upcast must equal
    return root


@pytest.fixture
def s3(server, local, monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": server}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv(ENV_VAR, raising=False)
    client = boto3.client("s3")
    bucket = f"{BUCKET}-{uuid.uuid4().hex[:12]}"  # a fresh bucket per test
    client.create_bucket(Bucket=bucket)
    for p in (local / "fp8").iterdir():
        client.upload_file(str(p), bucket, f"src/{p.name}")
    client.bucket = bucket
    return client


def objects(client, prefix: str) -> dict[str, bytes]:
    listed = client.list_objects_v2(Bucket=client.bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"][len(prefix):]: client.get_object(Bucket=client.bucket, Key=o["Key"])
            ["Body"].read() for o in listed}


def files_of(path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.iterdir() if not p.name.startswith(".")}


def test_s3_source_validates_like_local(s3, local):
    report = validate(f"s3://{s3.bucket}/src")
    want = validate(local / "fp8")
    assert report.errors == 0 and (report.tensors, report.tensor_bytes) == (
        want.tensors, want.tensor_bytes)
    name = "model.layers.0.mlp.down_proj.weight"
    assert (Checkpoint(f"s3://{s3.bucket}/src").read(name).tobytes()
            == Checkpoint(local / "fp8").read(name).tobytes())


def test_s3_object_replaced_after_listing_is_refused(s3, local):
    ck = Checkpoint(f"s3://{s3.bucket}/src")
    shard = ck.shard_names[0]
    s3.put_object(Bucket=s3.bucket, Key=f"src/{shard}",
                  Body=(local / "fp8" / shard).read_bytes()[:-1] + b"\x01")
    with pytest.raises(FormatError, match="changed since it was listed"):
        ck.header(shard)


def test_s3_object_replaced_between_reads_is_refused(s3, local, monkeypatch):
    from ckpt_tools.remote import byte_source

    monkeypatch.setattr(byte_source, "READAHEAD_BYTES", 0)
    ck = Checkpoint(f"s3://{s3.bucket}/src")
    shard = ck.shard_names[0]
    first, second = list(ck.header(shard).entries)[:2]
    ck.read(first)  # the object is open, its ETag pinned
    s3.put_object(Bucket=s3.bucket, Key=f"src/{shard}",
                  Body=(local / "fp8" / shard).read_bytes()[:-1] + b"\x01")
    with pytest.raises(FormatError, match="changed while being read"):
        ck.read(second)


def test_upcast_s3_to_s3_equals_local(s3, local):
    # two worker processes: each reads the source by range through its own S3 client
    report = upcast(f"s3://{s3.bucket}/src", f"s3://{s3.bucket}/out", workers=2)
    assert objects(s3, "out/") == files_of(local / "want")
    assert report.destination == f"s3://{s3.bucket}/out"
    with pytest.raises(OutputError, match="not empty"):
        upcast(f"s3://{s3.bucket}/src", f"s3://{s3.bucket}/out", dtype="f32", workers=1)


def test_reshard_s3_to_s3_equals_local(s3, local, tmp_path):
    from ckpt_tools.commands.reshard import reshard_by_size

    report = reshard_by_size(f"s3://{s3.bucket}/src", f"s3://{s3.bucket}/resharded", 150_000,
                             workers=1)
    reshard_by_size(local / "fp8", tmp_path / "want", 150_000, workers=1)
    got = objects(s3, "resharded/")
    want = files_of(tmp_path / "want")
    assert got == want and len(report.files) > 3  # more, smaller shards
    assert report.coverage.complete and report.destination == f"s3://{s3.bucket}/resharded"
    # the coverage proof beside DST, as for a local one: the object DST.reshard-report.json
    proof = json.loads(objects(s3, "resharded.")["reshard-report.json"])
    assert proof["coverage"]["complete"] and proof["destination"] == report.destination


def test_v4_writers_to_s3_equal_local(s3, tmp_path):
    """DeepSeek-V4's upcast (whole files staged, not parts) and rank files go to an object
    store as V2/V3's do."""
    from ckpt_tools.commands.reshard import to_deepseek_mp

    src = make_tiny(tmp_path / "v4", "v4-flash", fp8=True, shards=3).path
    upcast(src, f"s3://{s3.bucket}/v4-bf16", workers=2)
    upcast(src, tmp_path / "v4-bf16", workers=1)
    assert objects(s3, "v4-bf16/") == files_of(tmp_path / "v4-bf16")
    to_deepseek_mp(src, f"s3://{s3.bucket}/v4-mp", 2, workers=1)
    to_deepseek_mp(src, tmp_path / "v4-mp", 2, workers=1)
    assert objects(s3, "v4-mp/") == files_of(tmp_path / "v4-mp")


@pytest.mark.parametrize("kill_after", [5, 90, 150])
def test_upcast_to_s3_killed_midway_reruns_to_identical_objects(kill_after, s3, local):
    args = [sys.executable, "-m", "ckpt_tools", "upcast", local / "fp8",
            f"s3://{s3.bucket}/out", "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    killed = subprocess.run(list(map(str, args)), env={**env, ENV_VAR: str(kill_after)},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    after_kill = objects(s3, "out/")
    journal = json.loads(after_kill.pop(JOURNAL_FILE))
    assert "model.safetensors.index.json" not in after_kill  # the index comes last
    for name, data in after_kill.items():  # under a final name only whole, journaled files
        assert data == files_of(local / "want")[name]
        assert name in journal["done"]
        n = int.from_bytes(data[:8], "little")
        assert parse_header_bytes(name, data[8:8 + n], len(data)).file_size == len(data)
    rerun = subprocess.run(list(map(str, args)), env=env, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert objects(s3, "out/") == files_of(local / "want")  # byte-identical, journal gone
    remote.forget_remote()


def test_overwrite_on_s3_keeps_and_lists_what_the_tool_did_not_write(s3, local):
    """Issue 27, 12 on an object store: --overwrite replaces the checkpoint's objects and keeps
    the user's, listed in the report (as a local destination does)."""
    user = {"README.md": b"mine", "notes.txt": b"mine", "my_eval_results.csv": b"a,b"}
    old = {"model-00009-of-00009.safetensors": b"old", "config.json": b"{}",
           "model.safetensors.index.json": b"{}"}
    for name, data in {**user, **old}.items():
        s3.put_object(Bucket=s3.bucket, Key=f"out/{name}", Body=data)
    report = upcast(f"s3://{s3.bucket}/src", f"s3://{s3.bucket}/out", workers=1,
                    overwrite=True)
    assert report.kept == sorted(user)
    assert objects(s3, "out/") == {**files_of(local / "want"), **user}


def test_cli_json_lists_kept_files_for_an_s3_destination(s3, local):
    s3.put_object(Bucket=s3.bucket, Key="out/README.md", Body=b"mine")
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    r = subprocess.run([sys.executable, "-m", "ckpt_tools", "upcast", f"s3://{s3.bucket}/src",
                        f"s3://{s3.bucket}/out", "--overwrite", "--workers", "1", "--json"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kept"] == ["README.md"]
