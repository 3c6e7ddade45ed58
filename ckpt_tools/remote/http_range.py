"""A ranged GET of a Hub file read straight into one buffer: the hot path of hf:// reads.

huggingface_hub's HTTP client (httpx2) reads a body in 64 KB pieces through HTTP parsing
written in Python: about 0.6 GB per CPU second here, so on a fast link the client, not the
network nor the conversion, was what reading hf:// cost (and the one process that streams
and hashes every file, `remote.verified`, could not keep up with a 1 GB/s link). The
standard library's `http.client` reads a body with `recv_into` into the caller's buffer:
about 3.6 GB per CPU second on the same loopback (bench/http_reads.py).

So the Hub store (`stores._HubTree`) sends a ranged GET through `get_range` whenever nothing
the client would add applies (`usable`): no proxy for the URL (the environment's, as
`urllib.request` reads it), and huggingface_hub's own client (a pipeline that installed a
client factory, for a proxy, a CA bundle or a transport, keeps its client). Everything else
stays the client's: an answer of 400 and above raises `UseClient`, and the request is made
again through the client, so every error keeps its one mapping (`io.hub._hub_errors`).

Kept of the client's behaviour: redirects followed (at most `MAX_REDIRECTS`), dropping the
Authorization header when a redirect leaves the host, as httpx does; TLS verified against
SSL_CERT_FILE / SSL_CERT_DIR when set, else certifi's bundle, as httpx does; the connect and
read timeouts (the read timeout bounds each wait for bytes); network failures raised as the
client's own exception classes (`httpx2.ConnectError`, `ReadTimeout`, ...), so retries and
messages are the client's. One connection per thread and host is kept alive between
requests, and never used by a forked child (each process opens its own).
"""

from __future__ import annotations

import functools
import http.client
import os
import ssl
import threading
import urllib.request
from collections.abc import Callable, Mapping
from urllib.parse import urljoin, urlsplit

MAX_REDIRECTS = 10
_REDIRECTS = (301, 302, 303, 307, 308)


class UseClient(Exception):
    """This request is for huggingface_hub's client to make (an error answer)."""


def usable(url: str) -> bool:
    """Whether `get_range` may fetch `url`: plain HTTP(S), no proxy for it, and
    huggingface_hub's default client (no factory installed by the caller)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    proxies = urllib.request.getproxies()
    if (proxies.get(parts.scheme) or proxies.get("all")) and not urllib.request.proxy_bypass(
            parts.hostname):
        return False
    try:
        from huggingface_hub.utils import _http
    except ImportError:
        return False
    factory = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None)
    return factory is not None and factory is getattr(_http, "default_client_factory", None)


# -- connections: one per (thread, scheme, host, port), in the process that opened it ------
_local = threading.local()


def _tls_context() -> ssl.SSLContext:
    return _tls_context_for(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _tls_context_for(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """One context per trust store and process: loading a bundle costs about 0.05 s, and a
    context serves any number of connections (and threads)."""
    if not (cafile or capath):
        try:
            import certifi  # httpx's default bundle

            cafile = certifi.where()
        except ImportError:
            pass
    return ssl.create_default_context(cafile=cafile, capath=capath)


def _connection(scheme: str, host: str, port: int | None,
                timeouts: tuple[float, float]) -> tuple[http.client.HTTPConnection, bool]:
    """A kept-alive connection of this thread, or a new one; and whether it was kept."""
    if getattr(_local, "pid", None) != os.getpid():  # a forked child never shares a socket
        _local.pool, _local.pid = {}, os.getpid()
    pool = _local.pool
    key = (scheme, host, port)
    conn = pool.pop(key, None)
    if conn is not None:
        return conn, True
    connect, _read = timeouts
    if scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=connect,
                                           context=_tls_context()), False
    return http.client.HTTPConnection(host, port, timeout=connect), False


def _keep(conn: http.client.HTTPConnection, scheme: str, host: str, port: int | None) -> None:
    _local.pool[(scheme, host, port)] = conn


def _transport_error(e: BaseException, connected: bool) -> Exception:
    """The client's exception class for a network failure (its retries and messages)."""
    import httpx2

    if isinstance(e, TimeoutError):
        kind = httpx2.ReadTimeout if connected else httpx2.ConnectTimeout
    elif isinstance(e, http.client.HTTPException) and not isinstance(e, ConnectionError):
        kind = httpx2.RemoteProtocolError
    else:
        kind = httpx2.ReadError if connected else httpx2.ConnectError
    return kind(f"{type(e).__name__}: {e}")


def _send(url: str, headers: Mapping[str, str], timeouts: tuple[float, float]):
    """(connection, response) of one GET of `url`; a kept connection that the server closed
    meanwhile is replaced once."""
    parts = urlsplit(url)
    scheme, host, port = parts.scheme, parts.hostname, parts.port
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    for attempt in (0, 1):
        conn, kept = _connection(scheme, host, port, timeouts)
        connected = kept
        try:
            if conn.sock is None:
                conn.connect()
                conn.sock.settimeout(timeouts[1])  # from now on: each wait for bytes
            connected = True
            conn.request("GET", target, headers=dict(headers))
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            if kept and attempt == 0 and isinstance(
                    e, (ConnectionError, http.client.RemoteDisconnected, BrokenPipeError)):
                continue  # the server dropped an idle kept connection: a fresh one
            raise _transport_error(e, connected) from None
    raise AssertionError("unreachable")


def _read_body(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> bytes:
    """The body, read into one bytes object (http.client reads a Content-Length body with
    `recv_into` straight into it). An answer that ends before its Content-Length is a
    transfer cut in transit (IncompleteRead: the client's RemoteProtocolError, tried again);
    one whose headers announce fewer bytes than asked is returned as it is (the caller names
    the truncated range)."""
    try:
        return resp.read()
    except (OSError, http.client.HTTPException) as e:
        conn.close()
        raise _transport_error(e, connected=True) from None


def get_range(url: str, headers: Mapping[str, str], timeouts: tuple[float, float],
              accept: Callable[[int, http.client.HTTPMessage], None]) -> bytes:
    """The body of GET `url` with `headers` (a Range among them), after redirects.

    `accept(status, first_headers)` sees the final status and the headers of the first
    answer (the Hub's, before any CDN redirect) before the body is read, and raises to
    refuse it (a whole file sent for a range). Raises `UseClient` for an answer of 400 and
    above, and the client's transport errors for network failures."""
    headers, first = dict(headers), None
    origin = urlsplit(url).netloc
    for _hop in range(MAX_REDIRECTS + 1):
        conn, resp = _send(url, headers, timeouts)
        if first is None:
            first = resp.headers
        if resp.status in _REDIRECTS or resp.status >= 400:
            location = resp.getheader("Location")
            _drain(conn, resp, url)
            if resp.status >= 400 or not location:
                raise UseClient(f"HTTP {resp.status}")
            url = urljoin(url, location)
            if urlsplit(url).netloc != origin:  # the token stays with the host it was for
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            continue
        try:
            accept(resp.status, first)
        except BaseException:
            conn.close()  # its body is not read: not a connection to keep
            raise
        body = _read_body(conn, resp)
        _release(conn, resp, url)
        return body
    raise UseClient(f"more than {MAX_REDIRECTS} redirects")


def _drain(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, url: str) -> None:
    try:
        resp.read()
    except (OSError, http.client.HTTPException):
        conn.close()
        return
    _release(conn, resp, url)


def _release(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse,
             url: str) -> None:
    """Keep the connection for the next request if the answer was read whole."""
    if resp.will_close or not resp.isclosed() or conn.sock is None:
        conn.close()
        return
    parts = urlsplit(url)
    _keep(conn, parts.scheme, parts.hostname, parts.port)
