"""A replica that misbehaves on the wire: a raw socket server whose answers a test writes byte by byte."""

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    """A request the server read whole: its request line, headers and body."""

    line: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    @property
    def path(self) -> str:
        """The request's path."""
        return self.line.split(" ")[1]


Answer = Callable[[socket.socket, Request], None]  # writes the answer (or not) to the connection


def read_request(connection: socket.socket) -> Request | None:
    """Read one whole request, body included (a body left unread makes the kernel reset the connection when it is
    closed); None if the client closed the connection first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = connection.recv(65536)
        if not chunk:
            return None
        body += chunk
    return Request(line, headers, body)


class WireServer:
    """Serves each request on a thread of its own with ``answer``; keeps the requests it read."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[Request] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.closed = threading.Event()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        """Take connections until closed."""
        while not self.closed.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(connection,), daemon=True).start()

    def serve(self, connection: socket.socket) -> None:
        """Answer the requests of one connection (keep-alive) until either side closes it."""
        with connection, contextlib.suppress(OSError):  # the client gave up, or the answer closed the connection
            while (request := read_request(connection)) is not None:
                self.requests.append(request)
                self.answer(connection, request)

    def close(self) -> None:
        """Stop taking connections."""
        self.closed.set()
        with contextlib.suppress(OSError):
            self.server.close()


def response(status: int, body: bytes = b"{}", headers: str = "") -> bytes:
    """A whole HTTP/1.1 answer."""
    return (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{headers}"
            f"\r\n").encode() + body


def trickle(connection: socket.socket, data: bytes, delay: float, stop: threading.Event | None = None) -> None:
    """Send ``data`` a byte every ``delay`` seconds (until ``stop`` is set)."""
    for byte in data:
        if stop is not None and stop.is_set():
            return
        time.sleep(delay)
        connection.sendall(bytes([byte]))
