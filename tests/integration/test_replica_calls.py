"""Calls to a replica that misbehaves on the wire, over real sockets: one deadline bounds the whole exchange."""

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.integration.wire import Request, WireServer, response, trickle
from workers.protocols import transport

pytestmark = pytest.mark.integration
ANSWER = response(200, b'"abcdef"')


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    """Set at the end of the test: a trickling server stops sending."""
    event = threading.Event()
    yield event
    event.set()


def test_an_answer_in_time_is_read_whole() -> None:
    server = WireServer(lambda connection, _: trickle(connection, ANSWER, 0.001))
    answer, body = transport.ask(transport.http_pool(), "POST", server.url, time.monotonic() + 10, 100, body=b"{}")
    assert (answer.status, body) == (200, b'"abcdef"')
    assert server.requests[0].body == b"{}"
    _, body = transport.ask(transport.http_pool(), "POST", server.url, time.monotonic() + 10, 4, body=b"{}")
    assert body is None  # over the limit
    server.close()


@pytest.mark.parametrize("where", ["status line", "headers", "body"])
def test_an_answer_that_trickles_past_the_deadline_is_cut_there(where: str, stop: threading.Event) -> None:
    head, _, _ = ANSWER.partition(b"\r\n\r\n")
    at = {"status line": 0, "headers": len(head) // 2, "body": len(head) + 5}[where]

    def answer(connection: socket.socket, _: Request) -> None:
        connection.sendall(ANSWER[:at])
        trickle(connection, ANSWER[at:], 0.2, stop)  # each byte within any per-read timeout, the whole far past

    server = WireServer(answer)
    began = time.monotonic()
    with pytest.raises(transport.CALL_FAILURES):
        transport.ask(transport.http_pool(), "POST", server.url, began + 1.0, 100, body=b"{}")
    assert time.monotonic() - began < 4  # the deadline, not the end of the answer (~8 s away)
    server.close()


def test_a_replica_that_resets_mid_answer_is_a_failed_call() -> None:
    def answer(connection: socket.socket, _: Request) -> None:
        connection.sendall(ANSWER[:40])
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        connection.close()  # linger 0: a reset

    server = WireServer(answer)
    with pytest.raises(transport.CALL_FAILURES):
        transport.ask(transport.http_pool(), "POST", server.url, time.monotonic() + 5, 100, body=b"{}")
    server.close()
