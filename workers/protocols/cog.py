"""Cog (Replicate's container format; its server is ``python -m cog.server.http``, coglet inside).

A job's body is the prediction's ``input``: ``POST /predictions`` with ``{"input": body}``. Readiness is
``GET /health-check``: READY or BUSY is ready, SETUP_FAILED or DEFUNCT will never be (the reason is Cog's setup
log). An answer ``{"status": "succeeded", "output": …}`` is the job's output, with ``metrics.predict_time`` as
its service time; ``{"status": "failed", "error": …}`` fails the job with Cog's message. A 409 (all of Cog's
prediction slots busy, as after a caller that went away) is asked again.

A model with ``stream = true`` (its predictor marked ``@cog.streaming``, and ``x-cog-streaming`` in the schema coglet
reads, ``.cog/openapi_schema.json``) is asked with ``Accept: text/event-stream``: coglet answers Server-Sent
Events, ``start``, one ``output`` per yielded value (``{"chunk", "index"}``), then ``completed`` with the whole
prediction. Each chunk is a part of the job as it comes; a ``completed`` that is not ``succeeded`` fails the job
with Cog's error (the parts before it stay); a chunk out of order, or a stream without ``completed``, is
``bad_response``.
"""

import json
from collections.abc import Mapping
from typing import Any

from workers.job import JobError, JobStatus, Outcome
from workers.protocols.base import (
    JSON,
    MESSAGE_LIMIT,
    NO_OUTPUT,
    Readiness,
    ReplicaBusy,
    Request,
    bad_response,
    json_object,
    parse_answer,
    parse_json,
    post_json,
    replica_error,
    service_seconds,
    succeeded,
)

EVENT_STREAM = "text/event-stream"
EVENT_LIMIT = 64 * 1024 * 1024  # bytes of one event's data held at most (its lines are bounded one by one)


class CogProtocol:
    """``cog``."""

    ready_path = "/health-check"

    def __init__(self, stream: bool = False) -> None:
        self.stream = stream

    def environment(self) -> dict[str, str]:
        """Cog's server reads PORT, which every replica gets."""
        return {}

    def request(self, job_id: str, payload: str) -> Request:
        """``POST /predictions`` with the body as the prediction's input (asking for events when streamed)."""
        plain = post_json("/predictions", json_object({"input": payload}))
        if not self.stream:
            return plain
        return Request(plain.method, plain.path, plain.body, {**JSON, "Accept": EVENT_STREAM})

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
            try:
                seconds = predict_time(found, timeout)
            except ValueError as exc:
                return bad_response(f"metrics.predict_time: {exc}")
            return succeeded(found.get("output"), seconds)
        return Outcome(JobStatus.FAILED, error=cog_error(found))

    def parts(self, status: int, headers: Mapping[str, str]) -> "CogEvents | None":
        """A 200 in ``text/event-stream`` is a stream of outputs."""
        kind = headers.get("Content-Type", "").split(";")[0].strip().lower()
        return CogEvents() if status == 200 and kind == EVENT_STREAM else None


def predict_time(prediction: dict[str, Any], timeout: float) -> float | None:
    """A prediction's ``metrics.predict_time`` as seconds (ValueError unless within ``timeout``)."""
    metrics = prediction.get("metrics")
    seconds = metrics.get("predict_time") if isinstance(metrics, dict) else None
    return service_seconds(None if seconds is None else str(seconds), timeout)


def cog_error(prediction: dict[str, Any]) -> JobError:
    """The error of a prediction that did not succeed: Cog's message."""
    message = str(prediction.get("error") or f"cog's prediction {prediction.get('status')}")
    return JobError("model_error", message[:MESSAGE_LIMIT])


class CogEvents:
    """The Server-Sent Events of one streamed prediction."""

    def __init__(self) -> None:
        self.event = ""
        self.data: list[bytes] = []
        self.size = 0  # bytes of data held for the event under way
        self.chunks = 0  # chunks taken: the index the next one must have
        self.completed: dict[str, Any] | None = None

    def read(self, line: bytes) -> str | JobError | None:
        """The event a blank line completes: a chunk's JSON text, Cog's error, or None."""
        if line:
            field, _, value = line.partition(b":")
            if field == b"event":
                self.event = value.removeprefix(b" ").decode("utf-8", "replace")
            elif field == b"data":
                self.data.append(value.removeprefix(b" "))
                self.size += len(value)
                if self.size > EVENT_LIMIT:
                    raise ValueError(f"an event of cog's stream is over {EVENT_LIMIT} bytes")
            return None  # a comment, an id or a retry: nothing of the prediction
        event, data = self.event, b"\n".join(self.data)
        self.event, self.data, self.size = "", [], 0
        if not data:
            return None
        found, _ = parse_json(data)
        if not isinstance(found, dict):
            raise ValueError(f"an event's data is not an object: {data[:200]!r}")
        if event == "output":
            if found.get("index") != self.chunks or "chunk" not in found:
                raise ValueError(f"expected chunk {self.chunks}, got {data[:200]!r}")
            self.chunks += 1
            return json.dumps(found["chunk"])
        if event == "completed":
            self.completed = found
            if found.get("status") != "succeeded":
                return cog_error(found)
        return None

    def outcome(self, timeout: float) -> Outcome:
        """All its chunks, with Cog's predict time, once ``completed`` came."""
        if self.completed is None:
            return bad_response("cog's event stream ended without its completed event")
        output = self.completed.get("output")
        if isinstance(output, list) and len(output) != self.chunks:
            return bad_response(f"cog's prediction has {len(output)} outputs, its stream gave {self.chunks}")
        try:
            seconds = predict_time(self.completed, timeout)
        except ValueError as exc:
            return bad_response(f"metrics.predict_time: {exc}")
        return Outcome(JobStatus.SUCCEEDED, output=NO_OUTPUT, service_time=seconds)
