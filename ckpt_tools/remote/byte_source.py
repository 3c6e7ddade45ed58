"""Where a file's bytes come from: a local file (pread) or a remote object (ranged reads).

A `ByteSource` answers `read_at(offset, length)` with exactly that many bytes or raises a
one-line `CkptError`. The safetensors header reader and tensor reads go through it when a
file is remote (`ckpt_tools.remote.stores`); local files keep their mmap / pread / copy_file_range
paths and use `LocalSource` only where a caller wants the common interface.

`RangeSource` is the remote half. Every fetch is one ranged request (the `fetch` callable,
given by the store: Hub, S3, ...), checked for length (a short answer is a truncated range,
never silently short data) and for the object's identity (`ETag` / commit, compared with
what the listing said: the repository must not change between two reads). Small reads go
through one read-ahead block of at most `readahead` bytes (the only buffer: memory stays
bounded), so walking a header or a tensor's rows costs one request per block, not per read;
reads of a block or more are fetched as they are. Transfers are counted (`TRANSFERS`).
Every store's requests wait at most `remote_timeouts()` (connect, and each wait for bytes).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import ArgumentError, FormatError

READAHEAD_BYTES = 256 << 10  # a few rows of a wide matrix; an embedding row is 14 KB
CONNECT_TIMEOUT_ENV, READ_TIMEOUT_ENV = "CKPT_CONNECT_TIMEOUT", "CKPT_READ_TIMEOUT"
DEFAULT_CONNECT_SECONDS, DEFAULT_READ_SECONDS = 10.0, 60.0


def remote_timeouts() -> tuple[float, float]:
    """(connect, read) seconds for every remote request: CKPT_CONNECT_TIMEOUT and
    CKPT_READ_TIMEOUT, read now. The read timeout bounds each wait for more bytes, so a
    server that stalls mid-answer fails the read instead of hanging it."""
    found = []
    for name, default in ((CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_SECONDS),
                          (READ_TIMEOUT_ENV, DEFAULT_READ_SECONDS)):
        text = os.environ.get(name, "").strip()
        try:
            value = float(text) if text else default
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ArgumentError(f"{name}={text!r}: expected a number of seconds above 0")
        found.append(value)
    return found[0], found[1]


class ByteSource(Protocol):
    label: str  # what messages name: a path or a URL
    size: int

    def read_at(self, offset: int, length: int) -> bytes: ...

    def read_exact(self, offset: int, length: int) -> bytes:
        """`read_at` without read-ahead: for reads known to be whole (a header)."""

    def close(self) -> None: ...


@dataclass
class TransferStats:
    """Requests and bytes fetched by every `RangeSource` of this process."""

    requests: int = 0
    bytes: int = 0

    def add(self, nbytes: int) -> None:
        with _STATS_LOCK:
            self.requests += 1
            self.bytes += nbytes


_STATS_LOCK = threading.Lock()
TRANSFERS = TransferStats()


class LocalSource:
    """A local file read with pread."""

    def __init__(self, path: str | Path):
        self.label = str(path)
        self._fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size

    def read_at(self, offset: int, length: int) -> bytes:
        parts, pos, end = [], offset, offset + length
        while pos < end:
            chunk = os.pread(self._fd, end - pos, pos)
            if not chunk:
                raise FormatError(f"{self.label}: file ended at byte {pos}, expected {end}")
            parts.append(chunk)
            pos += len(chunk)
        return b"".join(parts)

    read_exact = read_at

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# fetch(start, stop) -> (bytes, identity): identity is the ETag / commit the answer carried
Fetch = Callable[[int, int], tuple[bytes, str | None]]


class RangeSource:
    """A remote object read by byte ranges through a bounded read-ahead block."""

    def __init__(self, label: str, size: int, fetch: Fetch, identity: str | None,
                 readahead: int | None = None, on_close: Callable[[], None] | None = None):
        self.label, self.size, self.identity = label, size, identity
        self._fetch, self._on_close = fetch, on_close
        self._readahead = READAHEAD_BYTES if readahead is None else readahead
        self._block_start, self._block = 0, b""
        self._lock = threading.Lock()  # one source may serve several reader threads

    def _get(self, start: int, stop: int) -> bytes:
        data, identity = self._fetch(start, stop)
        TRANSFERS.add(len(data))
        if self.identity and identity and identity != self.identity:
            raise FormatError(f"{self.label}: changed while being read (ETag {identity[:16]}, "
                              f"expected {self.identity[:16]}); the source was modified, rerun "
                              f"to read one consistent version")
        if len(data) != stop - start:
            raise FormatError(f"{self.label}: truncated range: asked bytes [{start}, {stop}) "
                              f"({stop - start:,} bytes), got {len(data):,}")
        return data

    def _check_bounds(self, offset: int, stop: int) -> None:
        if offset < 0 or stop > self.size:
            raise FormatError(f"{self.label}: bytes [{offset}, {stop}) are outside the "
                              f"{self.size:,}-byte file (truncated?)")

    def read_exact(self, offset: int, length: int) -> bytes:
        self._check_bounds(offset, offset + length)
        return self._get(offset, offset + length) if length else b""

    def read_at(self, offset: int, length: int) -> bytes:
        stop = offset + length
        self._check_bounds(offset, stop)
        if length == 0:
            return b""
        if length >= self._readahead:
            return self._get(offset, stop)
        with self._lock:
            b0 = self._block_start
            if not (b0 <= offset and stop <= b0 + len(self._block)):
                self._block_start = offset
                self._block = self._get(offset, min(self.size, offset + self._readahead))
                b0 = offset
            return self._block[offset - b0:stop - b0]

    def close(self) -> None:
        self._block = b""
        if self._on_close is not None:
            self._on_close()
            self._on_close = None
