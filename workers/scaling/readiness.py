"""Readiness: polling a starting replica until it is ready, fails, exits, or runs out of time.

Every probe is bounded as a whole (connect, status line, headers and body by one deadline, never past the start
timeout) and by size, so a replica that trickles its answer cannot hold the wait: it stays not ready, and its start
fails at the start timeout.
"""

import http.client
import math
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

from workers.config import ModelConfig
from workers.protocols import Readiness, ReplicaProtocol, protocol_for

READY_POLL = 0.02  # seconds between probes (polling faster slows a starting replica down)
PROGRESS = 2.0  # seconds between reports of a starting replica's progress
PROBE_TIMEOUT = 2.0  # seconds one probe may take, whole answer included
PROBE_BYTES = 65536  # body of a readiness answer read at most
ALIVE_EVERY = 0.5  # seconds at least between asking the backend whether a replica that does not answer still runs


class Probe(Protocol):
    """Waits for a replica to become ready."""

    def wait(self, model: ModelConfig, endpoint: str, alive: Callable[[], bool], timeout: float,
             progress: Callable[[], None] = lambda: None) -> str:
        """"" once the replica is ready; else why it never will be. ``progress`` is called every few seconds."""
        ...


class DeadlineSocket(socket.socket):
    """A socket whose every send and receive ends by one deadline (``time.monotonic``), however the peer
    trickles."""

    deadline = 0.0

    def remaining(self) -> None:
        """Let the next call wait only until the deadline."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the answer took longer than the probe's deadline")
        self.settimeout(left)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """``socket.recv_into`` by the deadline."""
        self.remaining()
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        """``socket.sendall`` by the deadline."""
        self.remaining()
        super().sendall(data, flags)


class DeadlineConnection(http.client.HTTPConnection):
    """An HTTP connection whose connect and every read end by one deadline."""

    def __init__(self, host: str, port: int | None, deadline: float) -> None:
        super().__init__(host, port, timeout=max(0.001, deadline - time.monotonic()))
        self.deadline = deadline

    def connect(self) -> None:
        """Connect, then bound every later wait by the deadline."""
        super().connect()
        bounded = DeadlineSocket(fileno=self.sock.detach())
        bounded.deadline = self.deadline
        self.sock = bounded


def probe(endpoint: str, path: str, deadline: float) -> tuple[int, bytes]:
    """``GET`` the path: the status and the body's first ``PROBE_BYTES``, all by ``deadline``."""
    url = urlsplit(endpoint)
    connection = DeadlineConnection(url.hostname or "127.0.0.1", url.port, deadline)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        return response.status, response.read(PROBE_BYTES)
    finally:
        connection.close()


class ReadinessProbe:
    """Polls the model's protocol's readiness path over HTTP."""

    def __init__(self, poll: float = READY_POLL, sleep: Callable[[float], None] = time.sleep,
                 probe_timeout: float = PROBE_TIMEOUT) -> None:
        self.poll = poll
        self.sleep = sleep
        self.probe_timeout = probe_timeout

    def wait(self, model: ModelConfig, endpoint: str, alive: Callable[[], bool], timeout: float,
             progress: Callable[[], None] = lambda: None) -> str:
        """"" once the replica answers ready; else it exited, its setup failed, or ``timeout`` passed.
        ``progress`` is called every ``PROGRESS`` seconds meanwhile. The backend is asked whether the replica
        still runs only when it did not answer, at most every ``ALIVE_EVERY`` seconds."""
        protocol = protocol_for(model)
        deadline = time.monotonic() + timeout
        reported, asked = time.monotonic(), -math.inf
        while (now := time.monotonic()) < deadline:
            if now - reported >= PROGRESS:
                progress()
                reported = now
            found = self.check(protocol, endpoint, min(now + self.probe_timeout, deadline))
            if found is None:  # no answer: is it still there?
                if time.monotonic() - asked >= ALIVE_EVERY:
                    asked = time.monotonic()
                    if not alive():
                        return "exited before it was ready"
            elif found[0] is not Readiness.STARTING:
                return found[1]
            self.sleep(self.poll)
        return f"not ready within the start timeout of {model.start_timeout:g} s"

    def check(self, protocol: ReplicaProtocol, endpoint: str, deadline: float) -> tuple[Readiness, str] | None:
        """One probe, answered whole by ``deadline``: the protocol's verdict; None if no answer came by then."""
        try:
            status, body = probe(endpoint, protocol.ready_path, deadline)
        except (OSError, http.client.HTTPException):
            return None
        return protocol.readiness(status, body)
