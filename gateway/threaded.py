"""The gateway's threaded gunicorn worker (``serverless-model gateway --worker threads``: ``--worker-class
gateway.threaded.GatewayWorker``).

gunicorn's threaded worker hands a connection to a thread as soon as a byte arrives, and the thread then blocks
until the request's line and headers are complete: 32 clients sending headers slowly take every thread. Here the
main loop reads each request's line and headers itself, without blocking and without a thread, and a thread gets
the connection only once they are all there; a client that takes over ``SM_HEADER_TIMEOUT`` seconds is answered
408, one whose headers pass ``MAX_HEAD`` bytes 431. gunicorn's own error answers (414, 431, a bad
Content-Length's 400 ...) are the API's JSON error body, not HTML.

The thread that reads a request's body has until the same deadline (counted from the request's first byte), so a
client that trickles its body holds a thread only that long (it is answered 408, and the connection closes); an
answer has ``ANSWER_TIMEOUT`` seconds to be taken. A stopping worker answers 503 to heads still incomplete after
gunicorn's keep-alive linger (2 s): nothing was accepted from them.
"""

import contextlib
import errno
import selectors
import socket
import time
from concurrent.futures import Future
from functools import partial
from typing import Any

from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

from gateway.server import MAX_HEAD, ClientSocket, JsonErrors, complete, error_answer
from workers.config import Settings


def receive(sock: ClientSocket) -> bytes | None:
    """What a non-blocking socket has for us: b"" once closed (or broken), None if nothing yet."""
    try:
        return sock.recv(MAX_HEAD)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


class GatewayWorker(JsonErrors, ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker whose main loop, not a thread, reads each request's line and headers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = Settings().header_timeout
        self.reading: dict[Any, tuple[float, bytearray]] = {}  # connection → (deadline, what came so far)
        self.stop_by: float | None = None  # once stopping: when heads still incomplete are refused

    def accept(self, listener: socket.socket) -> None:
        """A new connection: read its request's head in the main loop."""
        try:
            plain, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        client = ClientSocket(plain)
        client.setblocking(False)
        conn = TConn(self.cfg, client, address, listener.getsockname())
        self.arrived(conn, bytearray(), receive(client), registered=False)

    def on_client_socket_readable(self, conn: Any, client: ClientSocket) -> None:
        """A kept-alive connection sends its next request: read its head in the main loop too, at once."""
        self.keepalived_conns.remove(conn)
        self.arrived(conn, bytearray(), receive(client), registered=True)

    def on_head_bytes(self, conn: Any, sock: ClientSocket) -> None:
        """More of a request head, on a connection being read."""
        if conn not in self.reading:  # closed earlier in this round of events (its descriptor may be reused)
            return
        self.arrived(conn, self.reading[conn][1], receive(sock), registered=True)

    def arrived(self, conn: Any, head: bytearray, data: bytes | None, registered: bool) -> None:
        """``data`` came after ``head`` (None: nothing yet): once the head is complete the connection goes to a
        thread (usually at once: a head mostly comes in one read), else the main loop waits for more."""
        if data is not None:
            head += data
        if data == b"":
            self.stop_reading(conn, registered)
            self.close(conn)
        elif complete(head):
            conn.read_by = self.reading[conn][0] if conn in self.reading else time.monotonic() + self.header_timeout
            self.stop_reading(conn, registered)
            conn.head, conn.data_ready = bytes(head), True
            self.enqueue_req(conn)
        elif len(head) > MAX_HEAD:
            self.refuse(conn, 431, "Request Header Fields Too Large", f"request line and headers over {MAX_HEAD} "
                                                                      f"bytes", registered)
        elif conn not in self.reading:
            self.read_head(conn, head, registered)

    def read_head(self, conn: Any, ahead: bytes | bytearray, registered: bool = False) -> None:
        """Collect the connection's request head (``ahead``: bytes of it already read) without a thread."""
        conn.sock.setblocking(False)
        self.reading[conn] = (time.monotonic() + self.header_timeout, bytearray(ahead))
        if registered:  # still on the poller from its keep-alive: only what a readable socket calls changes
            self.poller.modify(conn.sock, selectors.EVENT_READ, partial(self.on_head_bytes, conn))
        else:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_head_bytes, conn))

    def murder_pending(self) -> None:
        """Close what gunicorn closes, and answer 408 to the clients whose head is late (oldest first); once
        stopping, 503 to every head still incomplete after the linger. At ``worker_connections`` (where gunicorn
        stops accepting) the oldest heads still incomplete make room, a tenth of them at once: slow clients cannot
        keep new ones out."""
        super().murder_pending()
        now = time.monotonic()
        if not self.alive and self.stop_by is None:
            self.stop_by = now + STOP_KEEPALIVE_LINGER
        crowded = self.nr_conns - self.worker_connections + 1
        if crowded > 0:
            crowded += len(self.reading) // 10
        for conn, (deadline, _) in list(self.reading.items()):
            if self.stop_by is not None and self.stop_by <= now:
                self.refuse(conn, 503, "Service Unavailable", "the gateway is stopping; send the request again")
            elif crowded > 0:
                crowded -= 1
                self.refuse(conn, 503, "Service Unavailable", "too many clients are slow to send their request; "
                                                              "send it again")
            elif deadline <= now:
                self.refuse(conn, 408, "Request Timeout", f"the request line and headers took over "
                                                          f"{self.header_timeout:g} s")
            else:
                break

    def refuse(self, conn: Any, status: int, reason: str, message: str, registered: bool = True) -> None:
        """Answer a connection whose head is being read with an error, and close it."""
        self.stop_reading(conn, registered)
        with contextlib.suppress(OSError):
            conn.sock.send(error_answer(status, reason, reason.lower().replace(" ", "_"), message))
        self.close(conn)

    def stop_reading(self, conn: Any, registered: bool) -> None:
        """The connection's head is no longer read by the main loop (``registered``: it is on the poller)."""
        self.reading.pop(conn, None)
        if registered:
            self.poller.unregister(conn.sock)

    def close(self, conn: Any) -> None:
        """Close a connection no thread holds."""
        self.nr_conns -= 1
        conn.close()

    def handle(self, conn: Any) -> Any:
        """In a thread: give the parser the head the main loop read, then serve the request as gunicorn does, its
        body read by the request's deadline (a connection that missed it closes after the answer)."""
        head, conn.head = getattr(conn, "head", b""), b""
        read_by, conn.read_by = getattr(conn, "read_by", None), None
        if head:
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(head)
        sock = conn.sock
        if not isinstance(sock, ClientSocket):
            return super().handle(conn)
        sock.read_by, sock.late = read_by or time.monotonic() + self.header_timeout, False
        try:
            kept = super().handle(conn)
        finally:
            sock.read_by = None
        return False if sock.late else kept

    def finish_request(self, conn: Any, fs: Future[Any]) -> None:
        """After a kept-alive answer, part of the next request's head may already be read: read the rest in the
        main loop too, not in a thread (a stopping worker as well: it refuses the head if it stays incomplete)."""
        kept = not fs.cancelled() and fs.exception() is None and fs.result() is True and conn.parser is not None
        ahead = conn.parser.unreader.buf.getvalue() if kept else b""
        if ahead and not complete(ahead):
            conn.parser.unreader.take_buffered()
            self.read_head(conn, ahead)
            return
        super().finish_request(conn, fs)
