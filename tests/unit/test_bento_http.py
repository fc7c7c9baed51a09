"""The bento hop's HTTP client against tiny local servers speaking raw HTTP/1.1 (unit scope)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from service.serving.bento_http import MAX_REPLY_BYTES, BentoConnectionError, BentoPool

Script = Callable[[socket.socket, bytes], bool]  # answers one request; False closes the socket


def reply(status: str, body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture
def server() -> Iterator[Callable[[Script], tuple[str, list[bytes], list[int]]]]:
    """Start a server answering with `script`; yields its URL, the requests and connections."""
    listeners: list[socket.socket] = []

    def start(script: Script) -> tuple[str, list[bytes], list[int]]:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)
        seen: list[bytes] = []
        connections = [0]

        def serve() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                connections[0] += 1
                with conn:
                    while (request := read_request(conn)) and script(conn, request):
                        seen.append(request)

        threading.Thread(target=serve, daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}", seen, connections

    yield start
    for listener in listeners:
        listener.close()


def pool(url: str, timeout: float = 2.0) -> BentoPool:
    return BentoPool(url, size=4, connect_timeout=1.0, read_timeout=timeout)


def test_a_content_length_reply_and_the_connection_is_kept_for_the_next(server) -> None:
    def script(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(reply("200 OK", b'{"a": 1}', "Content-Length: 8"))
        return True

    url, seen, connections = server(script)
    bento = pool(url + "/base/")
    first = bento.post("/predict", b'{"inputs": 1}', {"X-Request-ID": "r1"})
    second = bento.post("/predict", b"{}", {"X-Request-ID": "r2"})
    assert (first.status, first.data) == (200, b'{"a": 1}') and second.status == 200
    assert connections == [1]
    assert seen[0].startswith(b"POST /base/predict HTTP/1.1\r\n")
    assert b"X-Request-ID: r1\r\n" in seen[0] and b"Content-Length: 13\r\n" in seen[0]
    assert seen[0].endswith(b'\r\n\r\n{"inputs": 1}')


def test_a_chunked_reply_is_joined(server) -> None:
    def script(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(
            reply("200 OK", b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n", "Transfer-Encoding: chunked")
        )
        return True

    url, _, _ = server(script)
    assert pool(url).post("/predict", b"{}", {}).data == b"abcde"


def test_connection_close_or_no_length_is_not_reused(server) -> None:
    def script(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(reply("500 Internal Server Error", b"boom", "Connection: close"))
        return False

    url, _, connections = server(script)
    bento = pool(url)
    assert bento.post("/predict", b"{}", {}).status == 500
    assert bento.post("/predict", b"{}", {}).data == b"boom"
    assert connections == [2]


def test_an_idle_connection_the_bento_closed_is_not_reused(server) -> None:
    requests = [0]

    def script(conn: socket.socket, request: bytes) -> bool:
        requests[0] += 1
        conn.sendall(reply("200 OK", b"ok", "Content-Length: 2"))
        return False  # closes without saying so (as a keep-alive timer running out does)

    url, _, connections = server(script)
    bento = pool(url)
    assert bento.post("/predict", b"{}", {}).data == b"ok"
    idle, deadline = bento._idle[0], time.monotonic() + 5
    while not idle.dropped() and time.monotonic() < deadline:  # the server's close arrives
        threading.Event().wait(0.01)
    assert bento.post("/predict", b"{}", {}).data == b"ok"
    assert connections == [2] and requests == [2]  # nothing sent into the closed connection


def test_a_connection_closed_as_it_is_reused_is_resent_once_on_a_fresh_one(server) -> None:
    requests = [0]

    def script(conn: socket.socket, request: bytes) -> bool:
        requests[0] += 1
        if requests[0] == 2:
            return False  # read the second request, then close without a reply
        conn.sendall(reply("200 OK", b"ok", "Content-Length: 2"))
        return True

    url, _, connections = server(script)
    bento = pool(url)
    assert bento.post("/predict", b"{}", {}).data == b"ok"
    assert bento.post("/predict", b"{}", {}).data == b"ok"
    assert requests == [3] and connections == [2]


def test_a_new_connection_closed_without_a_reply_is_a_failure(server) -> None:
    url, _, _ = server(lambda conn, request: False)
    with pytest.raises(BentoConnectionError, match="closed a new connection"):
        pool(url).post("/predict", b"{}", {})


def test_a_silent_bento_times_out_and_a_refused_one_fails(server) -> None:
    url, _, _ = server(lambda conn, request: threading.Event().wait(1.0) and False)
    with pytest.raises(BentoConnectionError, match="timed out"):
        pool(url, timeout=0.2).post("/predict", b"{}", {})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(BentoConnectionError, match="Connection refused"):
        pool(closed).post("/predict", b"{}", {})


def test_a_reply_that_is_not_http_or_is_cut_short_fails(server) -> None:
    def script(conn: socket.socket, request: bytes) -> bool:
        conn.sendall(
            b"SSH-2.0-OpenSSH\r\n\r\n"
            if b"ssh" in request
            else reply("200 OK", b"ab", "Content-Length: 9")
        )
        return False

    url, _, _ = server(script)
    with pytest.raises(BentoConnectionError, match="not an HTTP reply"):
        pool(url).post("/ssh", b"{}", {})
    with pytest.raises(BentoConnectionError, match="2 of 9 bytes"):
        pool(url).post("/predict", b"{}", {})


def test_a_reply_larger_than_the_limit_is_refused_before_it_is_read(server) -> None:
    def script(conn: socket.socket, request: bytes) -> bool:
        length = MAX_REPLY_BYTES + 1
        conn.sendall(reply("200 OK", b"{}", f"Content-Length: {length}"))
        return False

    url, _, _ = server(script)
    with pytest.raises(BentoConnectionError, match="larger than"):
        pool(url).post("/predict", b"{}", {})


def test_only_plain_http_urls_are_pooled() -> None:
    with pytest.raises(ValueError, match="plain http"):
        BentoPool("https://bento:3000", 4, 1.0, 1.0)
