"""Remote reads under faults (issue 27, 3, 5, 6): a server that stalls mid-answer fails the
read with one line naming the file and byte range (connect and read timeouts, set by
CKPT_CONNECT_TIMEOUT / CKPT_READ_TIMEOUT); `download` retries an HTTP 500 as ranged reads
do; an object store without credentials says what is missing. Every server is on 127.0.0.1."""

from __future__ import annotations

import json

import pytest
from fake_hub import FakeHub, point_client_at
from test_remote import loopback_only  # noqa: F401  (autouse fixture)

from ckpt_tools.inventory.checkpoint import Checkpoint
from ckpt_tools.cli import cli
from ckpt_tools.commands.download import download
from ckpt_tools.errors import ArgumentError, HubError
from ckpt_tools.remote import byte_source
from ckpt_tools.remote.byte_source import remote_timeouts
from ckpt_tools.commands.tiny import make_tiny

REPO = "org/tiny"
SHARD = "model-00001-of-00002.safetensors"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("faults") / "v3", "v3", fp8=True, shards=2,
                     seed=4).path


@pytest.fixture
def hub(source, tmp_path, monkeypatch):
    with FakeHub(tmp_path / "hub-store") as fake:
        fake.add_commit(REPO, source)
        point_client_at(fake, monkeypatch, tmp_path / "hf-home")
        monkeypatch.setenv("CKPT_READ_TIMEOUT", "0.2")
        yield fake


def test_timeouts_are_configurable_and_checked(monkeypatch):
    monkeypatch.setenv("CKPT_CONNECT_TIMEOUT", "3")
    monkeypatch.setenv("CKPT_READ_TIMEOUT", "7.5")
    assert remote_timeouts() == (3.0, 7.5)
    for bad in ("0", "-1", "nan", "inf", "soon"):
        monkeypatch.setenv("CKPT_READ_TIMEOUT", bad)
        with pytest.raises(ArgumentError, match="CKPT_READ_TIMEOUT"):
            remote_timeouts()


def test_stalled_range_fails_naming_file_and_bytes(hub, monkeypatch):
    monkeypatch.setattr(byte_source, "READAHEAD_BYTES", 0)
    ck = Checkpoint(f"hf://{REPO}")  # headers read before the server stalls
    name = next(n for n, s in ck.index.weight_map.items() if s == SHARD)
    hub.stall(SHARD, 4)  # a 206 with 4 bytes, then nothing
    with pytest.raises(HubError, match=rf"{SHARD}: bytes \[\d+, \d+\): the server stopped "
                                       r"answering .*CKPT_READ_TIMEOUT"):
        ck.read(name)


def test_stalled_server_ends_validate_and_upcast_with_one_line(hub, run_cli, tmp_path):
    hub.stall(SHARD, 4)
    for args in (["validate", f"hf://{REPO}"],
                 ["upcast", f"hf://{REPO}", str(tmp_path / "out"), "--workers", "1"]):
        r = run_cli(*args)
        assert r.exit_code == 1, r.output
        assert SHARD in r.output and "stopped answering" in r.output
        assert "Traceback" not in r.output and "internal error" not in r.output


def test_download_retries_a_server_error_like_ranged_reads(hub, source, tmp_path):
    hub.fail(SHARD, 500, times=1)
    report = download(REPO, local_dir=tmp_path / "out")
    assert report.ok
    assert (tmp_path / "out" / SHARD).read_bytes() == (source / SHARD).read_bytes()
    assert [r.status for r in hub.gets(SHARD) if r.method == "GET"][:2] == [500, 200]


def test_object_store_without_credentials_is_one_line(monkeypatch, tmp_path, capsys):
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    srv = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    try:
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_NO_SIGN_REQUEST"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://%s:%d" % srv.get_host_and_port())
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        result = cli.main(["info", "s3://b/x", "--json"], standalone_mode=False)
    finally:
        srv.stop()
    assert result == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["error"]["code"] == "credentials"
    assert err.count("\n") == 1 and "s3://b/x: no credentials" in err
    assert "AWS_ACCESS_KEY_ID" in err and "internal error" not in err
