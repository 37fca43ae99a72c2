"""The gevent worker's client socket: receives end by the request's deadline, and a missed one is remembered."""

import socket
import time

import pytest

from gateway.server import ClientSocket


def test_a_receive_past_the_deadline_fails_and_marks_the_connection_late() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        sock = ClientSocket(ours)
        theirs.sendall(b"GET / HTTP/1.1\r\n")
        sock.read_by = time.monotonic() + 30
        assert sock.recv(100) == b"GET / HTTP/1.1\r\n" and not sock.late
        sock.read_by = time.monotonic() - 1
        with pytest.raises(TimeoutError):
            sock.recv(100)
        assert sock.late


def test_without_a_deadline_a_receive_waits_as_the_socket_does() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        sock = ClientSocket(ours)
        theirs.sendall(b"x")
        buffer = bytearray(4)
        assert sock.recv_into(buffer, 4) == 1 and buffer[:1] == b"x" and not sock.late
        assert sock.fileno() == ours.fileno()  # everything else is the socket's own
