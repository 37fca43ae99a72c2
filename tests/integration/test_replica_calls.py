"""Calls to a replica that misbehaves on the wire, over real sockets."""

import socket
import threading
import time

import pytest
import urllib3

from workers.execution.runner import read_body

pytestmark = pytest.mark.integration


def trickling_server(delay: float, finished: threading.Event | None = None) -> int:
    """A server that answers 200 with an 8-byte body, one byte every ``delay`` seconds; its port."""
    server = socket.create_server(("127.0.0.1", 0))
    finished = finished or threading.Event()

    def serve() -> None:
        connection, _ = server.accept()
        connection.recv(65536)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n")
        for byte in b'"abcdef"':
            time.sleep(delay)
            try:
                connection.sendall(bytes([byte]))
            except OSError:
                break
        finished.set()
        connection.close()
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return int(server.getsockname()[1])


def test_an_answer_that_trickles_past_the_request_timeout_is_a_timeout() -> None:
    finished = threading.Event()
    port = trickling_server(0.4, finished)  # each byte within the 1 s read timeout, the whole far past it
    began = time.monotonic()
    response = urllib3.PoolManager(retries=False).request("POST", f"http://127.0.0.1:{port}/", body=b"{}",
                                                           timeout=1.0, preload_content=False)
    with pytest.raises(urllib3.exceptions.TimeoutError):
        read_body(response, began + 1.0, limit=100)
    assert not finished.is_set()  # given up before the replica got to the end


def test_an_answer_in_time_is_read_whole() -> None:
    port = trickling_server(delay=0.01)
    response = urllib3.PoolManager(retries=False).request("POST", f"http://127.0.0.1:{port}/", body=b"{}",
                                                           timeout=1.0, preload_content=False)
    assert read_body(response, time.monotonic() + 5, limit=100) == b'"abcdef"'
    response = urllib3.PoolManager(retries=False).request("POST", f"http://127.0.0.1:{trickling_server(0)}/",
                                                           body=b"{}", timeout=1.0, preload_content=False)
    assert read_body(response, time.monotonic() + 5, limit=4) is None  # over the limit
