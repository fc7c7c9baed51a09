"""A small HTTP/1.1 keep-alive client for the selector's hot call: POST JSON to one bento.

urllib3 (over http.client, which parses every reply's headers with the email package) took
about 180 us of CPU a call on the benchmark machine, more than the selector's own work; this
takes about 10-20 us. It does only what that hop needs: plain `http://`, one request at a time
per connection, replies framed by Content-Length or chunked (or ended by the bento closing),
keep-alive unless the bento says `Connection: close`. Other URLs go through urllib3
(`service.serving.forwarding`).
"""

from __future__ import annotations

import select
import socket
import threading
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlsplit

# Longest status or header line accepted from a bento; a longer one is a broken reply.
MAX_LINE = 65536
MAX_HEADERS = 100
# Largest reply body read from a bento: a prediction is a few hundred bytes, so anything near
# this is a broken or hostile bento, and the worker must not buffer it whole.
MAX_REPLY_BYTES = 16 * 1024 * 1024


class BentoConnectionError(Exception):
    """No usable reply: refused, reset, timed out, or not HTTP."""


class StaleConnection(BentoConnectionError):
    """A kept-alive connection the bento had closed: nothing came back, so a resend is safe.

    BentoPool resends such a request once itself; it raises this only through urllib3's path.
    """


@dataclass(frozen=True)
class Reply:
    status: int
    data: bytes


class _Connection:
    def __init__(self, host: str, port: int, connect_timeout: float, read_timeout: float):
        self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        self.sock.settimeout(read_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader: BinaryIO = self.sock.makefile("rb")

    def exchange(self, request: bytes) -> tuple[Reply, bool]:
        """Send one request, read its reply; whether the connection may be used again."""
        self.sock.sendall(request)
        status_line = self.reader.readline(MAX_LINE + 1)
        if not status_line:
            raise StaleConnection("the bento closed the connection before replying")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise BentoConnectionError(f"not an HTTP reply: {status_line[:80]!r}")
        headers = self._headers()
        keep = headers.get(b"connection", b"").lower() != b"close"
        if parts[0] == b"HTTP/1.0":
            keep = headers.get(b"connection", b"").lower() == b"keep-alive"
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            data = self._chunked()
        elif b"content-length" in headers:
            data = self._exactly(int(headers[b"content-length"]))
        else:
            # Framed by the bento closing: read one byte past the limit to tell it was exceeded.
            data, keep = self.reader.read(MAX_REPLY_BYTES + 1), False
            _check_size(len(data))
        return Reply(int(parts[1]), data), keep

    def _headers(self) -> dict[bytes, bytes]:
        headers: dict[bytes, bytes] = {}
        for _ in range(MAX_HEADERS + 1):
            line = self.reader.readline(MAX_LINE + 1)
            if line in (b"\r\n", b"\n"):
                return headers
            if not line or len(line) > MAX_LINE:
                raise BentoConnectionError("the reply's headers were cut off or too long")
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        raise BentoConnectionError(f"more than {MAX_HEADERS} headers in the reply")

    def _exactly(self, length: int) -> bytes:
        _check_size(length)
        data = self.reader.read(length)
        if len(data) != length:
            raise BentoConnectionError(f"the reply ended after {len(data)} of {length} bytes")
        return data

    def _chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size = int(self.reader.readline(MAX_LINE + 1).split(b";", 1)[0].strip() or b"x", 16)
            if size == 0:
                self._headers()  # trailers, if any, up to the blank line
                return b"".join(chunks)
            total += size
            _check_size(total)
            chunks.append(self._exactly(size))
            self.reader.readline(MAX_LINE + 1)  # the CRLF after each chunk

    def dropped(self) -> bool:
        """Whether the bento closed this idle connection (readable while idle: EOF or junk)."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _check_size(length: int) -> None:
    if length > MAX_REPLY_BYTES:
        raise BentoConnectionError(f"the reply is larger than {MAX_REPLY_BYTES:,} bytes")


class BentoPool:
    """Idle keep-alive connections to one bento, shared by threads (each takes one to use)."""

    def __init__(
        self, base_url: str, size: int, connect_timeout: float, read_timeout: float
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"not a plain http:// URL: {base_url}")
        self.host, self.port = url.hostname, url.port or 80
        self.path = url.path.rstrip("/")
        self.size, self.timeouts = size, (connect_timeout, read_timeout)
        authority = self.host if url.port is None else f"{self.host}:{url.port}"
        self._host_header = f"Host: {authority}\r\n".encode()
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        """POST `body` and return the reply; BentoConnectionError when none came."""
        request = self._request(path, body, headers)
        connection, reused = self._take()
        try:
            return self._exchange(connection, request)
        except StaleConnection as exc:
            if not reused:
                message = "the bento closed a new connection without replying"
                raise BentoConnectionError(message) from exc
        # The bento closed a kept-alive connection as it was reused (e.g. its keep-alive timer
        # ran out): nothing came back, so one resend on a fresh connection is safe.
        try:
            return self._exchange(self._connect(), request)
        except StaleConnection as exc:
            raise BentoConnectionError(f"the bento closed the connection: {exc}") from exc

    def _exchange(self, connection: _Connection, request: bytes) -> Reply:
        try:
            reply, keep = connection.exchange(request)
        except StaleConnection:
            connection.close()
            raise
        except (OSError, ValueError, BentoConnectionError) as exc:
            connection.close()
            if isinstance(exc, BentoConnectionError):
                raise
            if isinstance(exc, ConnectionResetError | BrokenPipeError):
                raise StaleConnection(f"{type(exc).__name__}: {exc}") from exc
            raise BentoConnectionError(f"{type(exc).__name__}: {exc}") from exc
        if keep:
            self._give_back(connection)
        else:
            connection.close()
        return reply

    def _request(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head = f"POST {self.path}{path} HTTP/1.1\r\n{lines}Content-Length: {len(body)}\r\n"
        return head.encode("latin-1") + self._host_header + b"\r\n" + body

    def _take(self) -> tuple[_Connection, bool]:
        """An idle connection the bento has not closed, else a new one; whether it was idle."""
        while True:
            with self._lock:
                idle = self._idle.pop() if self._idle else None
            if idle is None:
                return self._connect(), False
            if not idle.dropped():
                return idle, True
            idle.close()

    def _connect(self) -> _Connection:
        try:
            return _Connection(self.host, self.port, *self.timeouts)
        except OSError as exc:
            raise BentoConnectionError(f"{type(exc).__name__}: {exc}") from exc

    def _give_back(self, connection: _Connection) -> None:
        with self._lock:
            if len(self._idle) < self.size:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
