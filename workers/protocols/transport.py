"""The wire to replicas: a keep-alive pool in which one deadline bounds a whole request, from the connect to the
last byte of the answer; answers read up to a size; and the one readiness probe that workers and the autoscaler
share.

A socket timeout bounds each read, not the answer: a replica that trickles its status line, its headers or its
body a byte at a time would hold the caller for ever. Here every receive and send of a pooled connection gets
only the time left before the deadline of the request in progress on its thread (``deadline``), so no request
outlives it, whatever the replica does.
"""

import contextlib
import contextvars
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from http.client import RemoteDisconnected
from typing import TYPE_CHECKING, Any

import urllib3
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool

from workers.protocols.base import Readiness, ReplicaProtocol

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

PROBE_LIMIT = 65536  # bytes of a readiness answer read at most
CALL_FAILURES = (urllib3.exceptions.HTTPError, OSError)  # what a call to a replica raises when the wire fails
UNANSWERED = (RemoteDisconnected, BrokenPipeError)  # a connection closed before any answer (not reset)
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("replica_request_deadline", default=None)


class LineReader:
    """Whole lines out of the chunks of a body, as they come; a line longer than ``limit`` bytes is ValueError."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.rest = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines ``chunk`` completes, without their newline (and a carriage return before it)."""
        *lines, self.rest = (self.rest + chunk).split(b"\n")
        if len(self.rest) > self.limit or any(len(line) > self.limit for line in lines):
            raise ValueError(f"a line of the stream is over {self.limit} bytes")
        return [line.removesuffix(b"\r") for line in lines]

    def end(self) -> list[bytes]:
        """The last line, if the body did not end with a newline."""
        rest, self.rest = self.rest, b""
        return [rest.removesuffix(b"\r")] if rest else []


class PastDeadline(TimeoutError):
    """The request's deadline passed before its answer was complete."""


class DeadlineSocket(socket.socket):
    """A socket whose every receive and send ends by the deadline of the request in progress on its thread."""

    def time_left(self) -> None:
        """Give the next operation only the time left; PastDeadline if none is."""
        deadline = _deadline.get()
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PastDeadline("no complete answer within the request timeout")
            self.settimeout(left)

    def recv_into(self, buffer: "WriteableBuffer", nbytes: int = 0, flags: int = 0) -> int:
        """``socket.recv_into`` within the deadline."""
        self.time_left()
        return super().recv_into(buffer, nbytes, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """``socket.recv`` within the deadline."""
        self.time_left()
        return super().recv(bufsize, flags)

    def sendall(self, data: "ReadableBuffer", flags: int = 0) -> None:
        """``socket.sendall`` within the deadline (its timeout bounds the whole send)."""
        self.time_left()
        super().sendall(data, flags)


class DeadlineConnection(HTTPConnection):
    """urllib3's connection on a ``DeadlineSocket``."""

    def _new_conn(self) -> socket.socket:
        plain = super()._new_conn()
        timeout = plain.gettimeout()
        bounded = DeadlineSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        bounded.settimeout(timeout)
        return bounded


class DeadlinePool(HTTPConnectionPool):
    """A connection pool of one replica, on ``DeadlineConnection``s."""

    ConnectionCls = DeadlineConnection


def http_pool(pool_size: int = 64, replicas: int = 1024) -> urllib3.PoolManager:
    """Keep-alive connections to replicas: ``pool_size`` per replica (enough for every thread), for up to
    ``replicas`` replicas; no retries (a retry is the caller's)."""
    manager = urllib3.PoolManager(num_pools=replicas, maxsize=pool_size, retries=False)
    manager.pool_classes_by_scheme = {"http": DeadlinePool}
    return manager


@contextlib.contextmanager
def deadline(at: float) -> Iterator[None]:
    """Requests made on this thread inside the block end by ``at`` (``time.monotonic()``), answer included."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


def read_lines(response: urllib3.BaseHTTPResponse, limit: int, on_line: Callable[[bytes], None]) -> bytes:
    """A streamed body handed line by line to ``on_line`` as it comes (a line at most ``limit`` bytes, else
    ValueError); whatever ``on_line`` raises stops the reading and closes the connection. Answers ``b""``."""
    reader = LineReader(limit)
    try:
        while chunk := response.read1(65536):
            for line in reader.feed(chunk):
                on_line(line)
        for line in reader.end():
            on_line(line)
    except BaseException:
        response.close()  # the rest is unread: this connection cannot serve another request
        raise
    finally:
        response.release_conn()
    return b""


def read_body(response: urllib3.BaseHTTPResponse, limit: int) -> bytes | None:
    """The whole body, or None if it is over ``limit`` bytes (the rest is left unread and the connection closed)."""
    chunks, size = [], 0
    try:
        while chunk := response.read1(65536):
            size += len(chunk)
            if size > limit:
                response.close()  # the rest is unread: this connection cannot serve another request
                return None
            chunks.append(chunk)
    finally:
        response.release_conn()
    return b"".join(chunks)


def ask(http: urllib3.PoolManager, method: str, url: str, until: float, limit: int,
        lines: Callable[[int, Mapping[str, str]], Callable[[bytes], None] | None] | None = None,
        **options: Any) -> tuple[urllib3.BaseHTTPResponse, bytes | None]:
    """One request whose whole answer (at most ``limit`` bytes: else the body is None) comes by ``until``;
    raises one of ``CALL_FAILURES`` when the wire fails or the deadline passes. A pooled connection that the
    replica closed just as the request went out (the race of every keep-alive timeout) is replaced once. With
    ``lines``, asked with the answer's status and headers, a streamed answer is handed to the line reader it gives,
    line by line as it comes (``read_lines``); when it gives None the body is read whole."""
    with deadline(until):
        try:
            response = http.request(method, url, timeout=max(0.01, until - time.monotonic()),
                                    preload_content=False, **options)
        except urllib3.exceptions.ProtocolError as exc:
            if not any(isinstance(cause, UNANSWERED) for cause in exc.args):
                raise
            response = http.request(method, url, timeout=max(0.01, until - time.monotonic()),
                                    preload_content=False, **options)
        on_line = lines(response.status, response.headers) if lines is not None else None
        if on_line is not None:
            return response, read_lines(response, limit, on_line)
        return response, read_body(response, limit)


def probe(http: urllib3.PoolManager, protocol: ReplicaProtocol, endpoint: str,
          until: float) -> tuple[Readiness, str] | None:
    """One readiness probe, its whole answer by ``until`` and within ``PROBE_LIMIT`` bytes (the rest is not
    read): what it says, with the reason when FAILED; None when no answer came by then."""
    try:
        with deadline(until):
            response = http.request("GET", endpoint + protocol.ready_path,
                                    timeout=max(0.01, until - time.monotonic()), preload_content=False)
            try:
                body = response.read(PROBE_LIMIT)
                if response.length_remaining != 0:  # not read to its known end: the connection cannot be reused
                    response.close()
            finally:
                response.release_conn()
    except CALL_FAILURES:
        return None
    return protocol.readiness(response.status, body)
