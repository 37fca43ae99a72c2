"""Readiness: polling a starting replica until it is ready, fails, exits, or runs out of time.

Every probe is bounded as a whole (connect, status line, headers and body by one deadline, never past the start
timeout) and by size, so a replica that trickles its answer cannot hold the wait: it stays not ready, and its start
fails at the start timeout.
"""

import math
import time
from collections.abc import Callable
from typing import Protocol

import urllib3

from workers.config import ModelConfig
from workers.protocols import Readiness, ReplicaProtocol, protocol_for, transport
from workers.scaling.backends import RUNNING, Phase, Status

READY_POLL = 0.02  # seconds between probes (polling faster slows a starting replica down)
PROGRESS = 2.0  # seconds between reports of a starting replica's progress
PROBE_TIMEOUT = 2.0  # seconds one probe may take, whole answer included (its first 64 KiB read)
STATUS_EVERY = 0.5  # seconds at least between asking the backend where a replica that does not answer is


class Probe(Protocol):
    """Waits for a replica to become ready."""

    def wait(self, model: ModelConfig, endpoint: str, status: Callable[[], Status], timeout: float,
             progress: Callable[[], None] = lambda: None, answered: Callable[[], None] = lambda: None) -> str:
        """"" once the replica is ready; else why it never will be. ``progress`` is called every few seconds,
        ``answered`` at the replica's first answer (ready or not)."""
        ...


class ReadinessProbe:
    """Polls the model's protocol's readiness path over HTTP."""

    def __init__(self, http: urllib3.PoolManager | None = None, poll: float = READY_POLL,
                 sleep: Callable[[float], None] = time.sleep, probe_timeout: float = PROBE_TIMEOUT) -> None:
        self.http = http or transport.http_pool(pool_size=2)
        self.poll = poll
        self.sleep = sleep
        self.probe_timeout = probe_timeout

    def wait(self, model: ModelConfig, endpoint: str, status: Callable[[], Status], timeout: float,
             progress: Callable[[], None] = lambda: None, answered: Callable[[], None] = lambda: None) -> str:
        """"" once the replica answers ready; else it exited, its setup failed, or ``timeout`` passed.
        ``progress`` is called every ``PROGRESS`` seconds meanwhile, ``answered`` at its first answer (ready or
        not). The backend is asked where the replica is only when it did not answer, at most every
        ``STATUS_EVERY`` seconds."""
        protocol = protocol_for(model)
        deadline = time.monotonic() + timeout
        reported, asked, last, heard = time.monotonic(), -math.inf, RUNNING, False
        while (now := time.monotonic()) < deadline:
            if now - reported >= PROGRESS:
                progress()
                reported = now
            found = self.check(protocol, endpoint, min(now + self.probe_timeout, deadline))
            if found is None:  # no answer: is it still there?
                if time.monotonic() - asked >= STATUS_EVERY:
                    asked, last = time.monotonic(), status()
                    if not last.live:
                        return "exited before it was ready" + (f" ({last.reason})" if last.reason else "")
            else:
                if not heard:
                    heard = True
                    answered()
                if found[0] is not Readiness.STARTING:
                    return found[1]
            self.sleep(self.poll)
        pending = f"; still pending: {last.reason}" if last.phase is Phase.PENDING and last.reason else ""
        return f"not ready within the start timeout of {model.scaling.start_timeout:g} s{pending}"

    def check(self, protocol: ReplicaProtocol, endpoint: str, deadline: float) -> tuple[Readiness, str] | None:
        """One probe, answered whole by ``deadline``: the protocol's verdict; None if no answer came by then."""
        return transport.probe(self.http, protocol, endpoint, deadline)
