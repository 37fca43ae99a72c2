"""Readiness: polling a starting replica until it is ready, fails, exits, or runs out of time."""

import time
from collections.abc import Callable
from typing import Protocol

import urllib3

from workers.config import ModelConfig
from workers.polling import wait_until
from workers.protocols import Readiness, ReplicaProtocol, protocol_for

READY_POLL = 0.02  # seconds between probes (polling faster slows a starting replica down)
PROGRESS = 2.0  # seconds between reports of a starting replica's progress


class Probe(Protocol):
    """Waits for a replica to become ready."""

    def wait(self, model: ModelConfig, endpoint: str, alive: Callable[[], bool], timeout: float,
             progress: Callable[[], None] = lambda: None) -> str:
        """"" once the replica is ready; else why it never will be. ``progress`` is called every few seconds."""
        ...


class ReadinessProbe:
    """Polls the model's protocol's readiness path over HTTP."""

    def __init__(self, http: urllib3.PoolManager, poll: float = READY_POLL,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.http = http
        self.poll = poll
        self.sleep = sleep

    def wait(self, model: ModelConfig, endpoint: str, alive: Callable[[], bool], timeout: float,
             progress: Callable[[], None] = lambda: None) -> str:
        """"" once the replica answers ready; else it exited, its setup failed, or ``timeout`` passed.
        ``progress`` is called every ``PROGRESS`` seconds meanwhile."""
        protocol = protocol_for(model)
        verdict = ""
        last_progress = time.monotonic()

        def settled() -> bool:
            nonlocal verdict, last_progress
            if time.monotonic() - last_progress >= PROGRESS:
                progress()
                last_progress = time.monotonic()
            if not alive():
                verdict = "exited before it was ready"
                return True
            readiness, verdict = self.check(protocol, endpoint)
            return readiness is not Readiness.STARTING

        if not wait_until(settled, timeout, self.poll, self.sleep):
            return f"not ready within the start timeout of {model.start_timeout:g} s"
        return verdict

    def check(self, protocol: ReplicaProtocol, endpoint: str) -> tuple[Readiness, str]:
        """One probe."""
        try:
            response = self.http.request("GET", endpoint + protocol.ready_path, timeout=1.0)
        except urllib3.exceptions.HTTPError:
            return Readiness.STARTING, ""
        return protocol.readiness(response.status, response.data[:65536])
