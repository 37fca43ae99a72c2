"""The gateway's worker on raw sockets: pipelined and split heads, kept-alive connections, and slow bodies."""

import contextlib
import socket
from collections.abc import Callable, Iterator

import pytest
import requests

from gateway.auth import digest
from tests.integration.platform import Platform

pytestmark = pytest.mark.integration
KEY = "key-of-alice"
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def answers(sock: socket.socket, count: int) -> list[int]:
    """The statuses of the next ``count`` answers on a kept-alive connection."""
    found: list[int] = []
    buffer = b""
    while len(found) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                return found
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length"))
        while len(buffer) < length:
            buffer += sock.recv(65536)
        buffer = buffer[length:]
        found.append(int(lines[0].split(" ")[1]))
    return found


def test_review3_pipelined_split_and_kept_alive_heads_are_all_answered(
        make_platform: Callable[..., Platform]) -> None:
    platform = make_platform().start("gateway")
    with socket.create_connection(("127.0.0.1", platform.port), timeout=10) as sock:
        sock.sendall(HEALTHZ * 3)  # three pipelined in one send
        assert answers(sock, 3) == [200, 200, 200]
        for byte in HEALTHZ:  # one byte per send
            sock.sendall(bytes([byte]))
        assert answers(sock, 1) == [200]
        sock.sendall(HEALTHZ + HEALTHZ[:10])  # a whole head and the start of the next
        assert answers(sock, 1) == [200]
        sock.sendall(HEALTHZ[10:])
        assert answers(sock, 1) == [200]
        body = b'{"x": 1}'
        post = (b"POST /v1/models/nope/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        sock.sendall(post + HEALTHZ)  # a body, then the next head behind it
        assert answers(sock, 2) == [404, 200]


@contextlib.contextmanager
def slow_bodies(port: int, count: int, path: bytes) -> Iterator[list[socket.socket]]:
    """``count`` connections that each sent a whole head announcing a body, and one byte of it."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{")
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def test_review3_slow_bodies_without_a_key_leave_healthz_answered(make_platform: Callable[..., Platform]) -> None:
    """With API keys, a slow body sent without a key is refused before it is read (its drain is bounded)."""
    platform = make_platform().start("gateway", env={"SM_API_KEYS": digest(KEY)})
    with slow_bodies(platform.port, 40, b"/v1/models/iris/jobs"):
        assert requests.get(f"{platform.url}/healthz", timeout=15).status_code == 200


def test_review3_a_thousand_slow_heads_leave_healthz_answered(make_platform: Callable[..., Platform]) -> None:
    """1,100 connections that each sent part of a head (one gateway worker): a new client is still answered
    within the header timeout, not only once the slow ones are refused."""
    platform = make_platform().start("gateway", env={"SM_HEADER_TIMEOUT": "30"})
    sockets = []
    try:
        for _ in range(1100):
            sock = socket.create_connection(("127.0.0.1", platform.port), timeout=10)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            sockets.append(sock)
        assert requests.get(f"{platform.url}/healthz", timeout=10).status_code == 200
    finally:
        for sock in sockets:
            sock.close()
