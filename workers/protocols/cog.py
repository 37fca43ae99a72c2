"""Cog (Replicate's container format; its server is ``python -m cog.server.http``, coglet inside).

A job's body is the prediction's ``input``: ``POST /predictions`` with ``{"input": body}``. Readiness is
``GET /health-check``: READY or BUSY is ready, SETUP_FAILED or DEFUNCT will never be (the reason is Cog's setup
log). An answer ``{"status": "succeeded", "output": …}`` is the job's output, with ``metrics.predict_time`` as
its service time; ``{"status": "failed", "error": …}`` fails the job with Cog's message. A 409 (all of Cog's
prediction slots busy, as after a caller that went away) is asked again.
"""

from collections.abc import Mapping
from typing import Any

from workers.job import JobStatus, Outcome
from workers.protocols.base import (
    Readiness,
    ReplicaBusy,
    Request,
    bad_response,
    failed,
    parse_answer,
    parse_json,
    post_json,
    replica_error,
    service_seconds,
    succeeded,
)


class CogProtocol:
    """``cog``."""

    ready_path = "/health-check"

    def environment(self) -> dict[str, str]:
        """Cog's server reads PORT, which every replica gets."""
        return {}

    def request(self, job_id: str, payload: Any) -> Request:
        """``POST /predictions`` with the body as the prediction's input."""
        return post_json("/predictions", {"input": payload})

    def readiness(self, status: int, body: bytes) -> tuple[Readiness, str]:
        """From the health check's ``status``."""
        try:
            found, _ = parse_json(body)
        except ValueError:
            return Readiness.STARTING, ""
        state = found.get("status") if isinstance(found, dict) else None
        if state in ("READY", "BUSY"):
            return Readiness.READY, ""
        if state in ("SETUP_FAILED", "DEFUNCT"):
            setup = found.get("setup") if isinstance(found.get("setup"), dict) else {}
            return Readiness.FAILED, f"cog says {state}: {str(setup.get('logs', ''))[-2000:]}"
        return Readiness.STARTING, ""

    def outcome(self, status: int, headers: Mapping[str, str], body: bytes, timeout: float) -> Outcome:
        """From the prediction's ``status``."""
        answer = parse_answer(status, body)
        if isinstance(answer, Outcome):
            return answer
        found, text = answer
        if status == 409:  # "At capacity - all prediction slots busy"
            raise ReplicaBusy(str(found.get("error") if isinstance(found, dict) else text)[:200])
        if not isinstance(found, dict) or "status" not in found:
            return Outcome(JobStatus.FAILED, error=replica_error(found, status, text))
        if found["status"] == "succeeded":
            metrics = found.get("metrics")
            predict_time = metrics.get("predict_time") if isinstance(metrics, dict) else None
            try:
                seconds = service_seconds(None if predict_time is None else str(predict_time), timeout)
            except ValueError as exc:
                return bad_response(f"metrics.predict_time: {exc}")
            return succeeded(found.get("output"), seconds)
        return failed("model_error", str(found.get("error") or f"cog's prediction {found['status']}"))
