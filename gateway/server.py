"""What the gateway's two gunicorn workers share: reading a request's head, and gunicorn's own error answers
(414, 431, a bad Content-Length's 400 ...) as the API's JSON error body, not HTML.

The workers: ``gateway.green.GreenWorker`` (gevent, the default: a waiting request holds a greenlet, not an OS
thread) and ``gateway.threaded.GatewayWorker`` (gunicorn's threads, ``serverless-model gateway --worker threads``).
"""

import json
import time
from typing import Any

from gunicorn import util

ANSWER_TIMEOUT = 60.0  # seconds a client has to take an answer
MAX_HEAD = 64 * 1024  # bytes of request line and headers read at most (gunicorn's own limits are tighter per line)
HEAD_ENDS = (b"\r\n\r\n", b"\n\n")  # the blank line after the headers


def complete(head: bytes | bytearray) -> bool:
    """Whether ``head`` holds a request's line and all its headers."""
    return any(end in head for end in HEAD_ENDS)


def error_answer(status: int, reason: str, code: str, message: str) -> bytes:
    """A whole HTTP response carrying the API's error body; the connection closes after it."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body


class Captured:
    """Stands in for a client socket to catch the answer gunicorn writes for its own errors."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        """Non-blocking, as gunicorn's writer expects."""
        return 0.0

    def sendall(self, data: bytes) -> None:
        """Keep what gunicorn would send."""
        self.data += data


def as_json(answer: bytes, exc: BaseException) -> bytes:
    """gunicorn's HTML error answer as the API's JSON error: the same status, a code from its reason."""
    _, status, reason = answer.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
    if status == "500":
        return error_answer(500, reason, "internal", "internal error; see the gateway's log")
    code = reason.lower().replace(" ", "_").replace("-", "_")
    return error_answer(int(status), reason, code, f"{reason}: {exc}"[:500])


class JsonErrors:
    """A gunicorn worker's answers to requests it could not parse or serve, as the API's JSON error."""

    log: Any

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """gunicorn's answer to a request it could not parse or serve, as the API's JSON error."""
        captured = Captured()
        super().handle_error(req, captured, addr, exc)  # type: ignore[misc]
        if not captured.data:
            return
        try:
            util.write_nonblock(client, as_json(captured.data, exc))
        except (OSError, ValueError):
            self.log.debug("Failed to send error message.")


class ClientSocket:
    """A client's socket whose receives, while a request is read, end by its deadline (``read_by``); an answer's
    send gets ``ANSWER_TIMEOUT``. Every other call goes to the socket itself."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.read_by: float | None = None  # when the request being read must have arrived whole
        self.late = False  # a receive missed the deadline: the connection closes after the answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)

    def time_left(self) -> None:
        """Give the next receive only the time left before the deadline (if one is set)."""
        if self.read_by is not None:
            left = self.read_by - time.monotonic()
            if left <= 0:
                self.late = True
                raise TimeoutError("the request did not arrive whole in time")
            self.sock.settimeout(left)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """``socket.recv`` by the deadline."""
        self.time_left()
        try:
            data: bytes = self.sock.recv(bufsize, flags)
            return data
        except TimeoutError:
            self.late = True
            raise

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """``socket.recv_into`` by the deadline."""
        self.time_left()
        try:
            count: int = self.sock.recv_into(buffer, nbytes, flags)
            return count
        except TimeoutError:
            self.late = True
            raise

    def sendall(self, data: Any, flags: int = 0) -> None:
        """``socket.sendall`` within ``ANSWER_TIMEOUT``."""
        self.sock.settimeout(ANSWER_TIMEOUT)
        self.sock.sendall(data, flags)
