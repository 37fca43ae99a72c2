"""How the platform talks to a replica: one small adapter per protocol behind ``ReplicaProtocol``.

An adapter says what a replica is told at start, how to send a job, how to read readiness, and what an answer
makes of the job. Nothing a replica sends is trusted: status, body and timing are validated before they enter a
job record or a moving average, and an answer that breaks the protocol fails its job with ``bad_response``.
"""

from workers.config import ModelConfig
from workers.protocols.base import Readiness, ReplicaProtocol, Request
from workers.protocols.cog import CogProtocol
from workers.protocols.http import HttpProtocol
from workers.protocols.kserve import KServeProtocol
from workers.protocols.native import NativeProtocol
from workers.protocols.runpod import RunPodProtocol


def protocol_for(model: ModelConfig) -> ReplicaProtocol:
    """The adapter of the model's ``protocol``."""
    if model.calls.protocol == "cog":
        return CogProtocol(model.calls.stream)
    if model.calls.protocol == "kserve":
        return KServeProtocol(model.served)
    if model.calls.protocol == "runpod":
        return RunPodProtocol()
    if model.calls.protocol == "http":
        return HttpProtocol(model.calls.predict_path, model.calls.health_path, model.calls.ready_statuses)
    return NativeProtocol()


__all__ = ["NativeProtocol", "Readiness", "ReplicaProtocol", "Request", "protocol_for"]
