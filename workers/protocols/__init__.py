"""How the platform talks to a replica: one small adapter per protocol behind ``ReplicaProtocol``.

An adapter says how to send a job's input, how to read readiness, and what an answer makes of the job. Nothing
a replica sends is trusted: status, body and timing headers are validated before they enter a job record or a
moving average, and an answer that breaks the protocol fails its job with ``bad_response``.
"""

from workers.protocols.base import Readiness, ReplicaProtocol, Request
from workers.protocols.native import NativeProtocol

PROTOCOLS: dict[str, ReplicaProtocol] = {"native": NativeProtocol()}

__all__ = ["PROTOCOLS", "NativeProtocol", "Readiness", "ReplicaProtocol", "Request"]
