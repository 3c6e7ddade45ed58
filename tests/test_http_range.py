"""The lean ranged GET of hf:// reads (`remote.http_range`): when it is used, what it keeps
of huggingface_hub's client (redirects without the token on another host, TLS, timeouts,
errors through the client), and the bytes it returns, against the fake Hub on 127.0.0.1."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from fake_hub import FakeHub, point_client_at

from ckpt_tools.commands.tiny import make_tiny
from ckpt_tools.errors import HubError
from ckpt_tools.inventory.checkpoint import Checkpoint
from ckpt_tools.remote import http_range
from ckpt_tools.remote import stores as remote

REPO = "org/tiny-lean"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("lean-source")
    make_tiny(root / "ck", "v3", fp8=True, shards=2, seed=0)
    return root / "ck"


@pytest.fixture
def hub(source, tmp_path, monkeypatch):
    with FakeHub(tmp_path / "hub-store") as fake:
        fake.add_commit(REPO, source)
        point_client_at(fake, monkeypatch, tmp_path / "hf-home")
        remote.forget_remote()
        yield fake
        remote.forget_remote()


def _first_weight(ck: Checkpoint) -> str:
    return next(n for n in sorted(ck.index.weight_map) if n.endswith("proj.weight"))


def test_reads_go_through_the_lean_path_and_match_the_bytes_on_disk(hub, source, monkeypatch):
    calls = []
    real = http_range.get_range
    monkeypatch.setattr(http_range, "get_range",
                        lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    ck = Checkpoint(f"hf://{REPO}")
    name = _first_weight(ck)
    assert np.array_equal(ck.read(name), Checkpoint(source).read(name))
    assert calls and all("/resolve/" in url for url in calls)


def test_a_proxy_or_a_client_factory_of_the_caller_keeps_the_client(hub, monkeypatch):
    url = f"{hub.url}/{REPO}/resolve/main/config.json"
    assert http_range.usable(url)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    assert not http_range.usable(url)  # the client honours the proxy: it makes the request
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert http_range.usable(url)
    import huggingface_hub
    from huggingface_hub.utils import _http

    monkeypatch.setattr(_http, "_GLOBAL_CLIENT_FACTORY", lambda: _http.default_client_factory())
    assert not http_range.usable(url)
    assert not http_range.usable("ftp://example/x") and huggingface_hub


class _Redirect(BaseHTTPRequestHandler):
    """Answers every GET with 302 to the same path on `target` (another host name)."""

    protocol_version = "HTTP/1.1"
    target = ""
    seen_auth: list = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.seen_auth.append(self.headers.get("Authorization"))
        self.send_response(302)
        self.send_header("Location", self.target + self.path)
        self.send_header("X-Repo-Commit", self.headers.get("X-Commit", ""))
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_redirect_to_another_host_is_followed_without_the_token(hub, monkeypatch):
    other = hub.url.replace("127.0.0.1", "localhost")  # same server, another host name
    _Redirect.target, _Redirect.seen_auth = other, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{REPO}/resolve/main/config.json"
        seen = []
        body = http_range.get_range(url, {"Authorization": f"Bearer {hub.token}",
                                          "Range": "bytes=0-9"}, (5.0, 5.0),
                                    lambda status, first: seen.append(status))
        assert len(body) == 10 and seen == [206]
        assert _Redirect.seen_auth == [f"Bearer {hub.token}"]  # the first host had it
        last = hub.gets()[-1]
        assert last.path.endswith("config.json") and not last.authorized  # the other did not
    finally:
        server.shutdown()
        server.server_close()


def test_error_answers_are_the_clients_and_a_cut_transfer_is_tried_again(hub, source):
    ck = Checkpoint(f"hf://{REPO}")
    name = _first_weight(ck)
    shard = ck.index.weight_map[name]
    hub.fail(shard, 404)  # UseClient: the client's error, mapped to one line
    with pytest.raises(HubError, match=f"{shard}: file not found"):
        Checkpoint(f"hf://{REPO}").read(name)
    hub._fail.clear()
    hub.cut(shard, 50, times=1)  # the body ends before its Content-Length: retried
    assert np.array_equal(Checkpoint(f"hf://{REPO}").read(name), Checkpoint(source).read(name))


def test_a_forked_child_opens_its_own_connection(hub, monkeypatch):
    ck = Checkpoint(f"hf://{REPO}")
    ck.read(_first_weight(ck))
    pool = http_range._local.pool
    assert pool  # the connection is kept for the next request of this thread
    monkeypatch.setattr(http_range.os, "getpid", lambda: -1)  # as in a forked child
    conn, kept = http_range._connection("http", "127.0.0.1", 1, (1.0, 1.0))
    assert not kept and http_range._local.pool == {} and http_range._local.pool is not pool
    conn.close()


class _Bytes(BaseHTTPRequestHandler):
    """Serves 4096 known bytes, honouring one `Range: bytes=a-b`."""

    protocol_version = "HTTP/1.1"
    body = bytes(range(256)) * 16

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        first, _, last = self.headers["Range"].removeprefix("bytes=").partition("-")
        part = self.body[int(first):int(last) + 1]
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {first}-{last}/{len(self.body)}")
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        self.wfile.write(part)


def test_tls_is_verified_against_the_bundle_the_environment_names(tmp_path, monkeypatch):
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Bytes)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/file"
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        body = http_range.get_range(url, {"Range": "bytes=10-19"}, (5.0, 5.0), lambda *a: None)
        assert body == _Bytes.body[10:20]
        monkeypatch.delenv("SSL_CERT_FILE")  # certifi's bundle does not know this server
        http_range._local.pool = {}
        import httpx2

        with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            http_range.get_range(url, {"Range": "bytes=0-9"}, (5.0, 5.0), lambda *a: None)
        # a trust store is loaded once per process, whatever the connections
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        http_range._local.pool = {}
        first = http_range._tls_context()
        assert http_range.get_range(url, {"Range": "bytes=0-9"}, (5.0, 5.0),
                                    lambda *a: None) == _Bytes.body[:10]
        assert http_range._tls_context() is first
        monkeypatch.delenv("SSL_CERT_FILE")
        assert http_range._tls_context() is not first
    finally:
        server.shutdown()
        server.server_close()
