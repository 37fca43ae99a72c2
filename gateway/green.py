"""The gateway's gevent worker, the default (``--worker-class gateway.green.GreenWorker``): each connection is a
greenlet, so a request waiting for its job (``?wait``, ``runsync``, V2 ``infer``: a blocking Redis read) holds no OS
thread, only a socket to its client and a connection to Redis. ``--worker-connections`` bounds the connections.

gunicorn's gevent worker monkey-patches its process (``gevent.monkey.patch_all``) after the fork and before it
loads the app, so redis, requests and Flask are imported patched. This module imports none of them (the arbiter
imports it to find the class), and the other processes of the platform (workers, autoscaler) are never patched.

Each request's line, headers and body must arrive within ``SM_HEADER_TIMEOUT`` seconds (counted from when the
worker starts reading it): a connection late with its first head is answered 408, one late with its body too (from
the app, and the connection closes); a kept-alive connection that sends nothing more is closed. gunicorn's own
error answers (414, 431, a bad Content-Length's 400 ...) are the API's JSON error body. A stopping worker answers
503 to first heads still incomplete after a linger of 2 s: nothing was accepted from them.
"""

import contextlib
import time
from typing import Any

import gevent
from gunicorn import http
from gunicorn.http.errors import NoMoreData
from gunicorn.workers.ggevent import GeventWorker

from gateway.server import ClientSocket, JsonErrors, error_answer

STOP_LINGER = 2.0  # seconds a stopping worker still gives heads under way before it answers them 503


class Stopping(Exception):
    """Raised in a connection's greenlet whose head is still being read when the worker stops."""


class GreenWorker(JsonErrors, GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker with the gateway's deadlines on each request's head and body."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading: dict[ClientSocket, Any] = {}  # connection whose head is being read → its greenlet
        self.timeout: float | None = None  # SM_HEADER_TIMEOUT, read once the process is patched

    @property
    def header_timeout(self) -> float:
        """``SM_HEADER_TIMEOUT``, from the settings (imported only in the patched worker)."""
        if self.timeout is None:
            from workers.config import Settings

            self.timeout = Settings().header_timeout
        return self.timeout

    def run(self) -> None:
        """Serve until stopped; heads still incomplete after the linger are answered 503."""
        gevent.spawn(self.refuse_heads_once_stopping)
        super().run()

    def refuse_heads_once_stopping(self) -> None:
        """Once stopping, and after the linger, stop every read of a head still under way."""
        while self.alive:
            gevent.sleep(0.25)
        gevent.sleep(STOP_LINGER)
        for greenlet in list(self.reading.values()):
            greenlet.kill(Stopping, block=False)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        """Serve one connection's requests, each read by its deadline."""
        client.setblocking(1)
        sock, req = ClientSocket(client), None
        try:
            parser = http.get_parser(self.cfg, sock, addr)
            name, first = listener.getsockname(), True
            while (req := self.next_request(parser, sock, first)) is not None:
                first = False
                self.handle_request(name, req, sock, addr)
                if sock.late:
                    break
        except (StopIteration, NoMoreData, Stopping):  # Stopping: it came just after the head was read
            pass
        except OSError:
            self.log.debug("connection lost", exc_info=True)
        except Exception as exc:
            self.handle_error(req, sock, addr, exc)
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def next_request(self, parser: Any, sock: ClientSocket, first: bool) -> Any:
        """The connection's next request, read within the header timeout; None once there is none (408 if the
        connection's first head came late, 503 if the worker stopped while reading it)."""
        sock.read_by, sock.late = time.monotonic() + self.header_timeout, False
        self.reading[sock] = gevent.getcurrent()
        try:
            return next(parser)
        except TimeoutError:
            if first:
                self.refuse(sock, 408, "Request Timeout", f"the request line and headers took over "
                                                          f"{self.header_timeout:g} s")
            return None
        except Stopping:
            if first:
                self.refuse(sock, 503, "Service Unavailable", "the gateway is stopping; send the request again")
            return None
        finally:
            self.reading.pop(sock, None)

    def refuse(self, sock: ClientSocket, status: int, reason: str, message: str) -> None:
        """Answer a request whose head was not read with an error (the connection closes after it)."""
        with contextlib.suppress(OSError):
            sock.sendall(error_answer(status, reason, reason.lower().replace(" ", "_"), message))
