"""The platform's own replica contract (``model/server.py``): ``POST /`` runs inference, ``GET /ok`` is 200 once
ready (503 while starting; ``{"status": "SETUP_FAILED", "error": …}`` if setup failed), errors are
``{"error": {"code", "message"}}``, and ``X-Inference-Seconds`` is the replica's own time for ``predict``.

A streamed answer (a generator ``predict``) is ``application/x-ndjson``: one line per part, ``{"part": <json>}``, and
on a failure midway a last line ``{"error": {"code", "message"}}``; ``NdjsonParts`` reads it as it comes."""

import json
from collections.abc import Mapping

from workers.job import JobError, JobStatus, Outcome
from workers.protocols.base import (
    NO_OUTPUT,
    Readiness,
    Request,
    bad_response,
    parse_answer,
    parse_json,
    post_json,
    replica_error,
    service_seconds,
)

SERVICE_TIME_HEADER = "X-Inference-Seconds"
NDJSON = "application/x-ndjson"


def streamed(headers: Mapping[str, str]) -> bool:
    """Whether an answer is a stream of parts."""
    return headers.get("Content-Type", "").split(";")[0].strip().lower() == NDJSON


class NdjsonParts:
    """The parts of a native streamed answer."""

    def read(self, line: bytes) -> str | JobError | None:
        """A part's JSON text, or the error the replica ended with (blank lines are skipped)."""
        if not line.strip():
            return None
        found, _ = parse_json(line)
        if isinstance(found, dict) and set(found) == {"part"}:
            return json.dumps(found["part"])
        if isinstance(found, dict) and set(found) == {"error"}:
            return replica_error(found, 500, line.decode("utf-8", "replace"))
        raise ValueError(f"a line of the stream is neither a part nor an error: {line[:200]!r}")

    def outcome(self, timeout: float) -> Outcome:
        """All its parts; the time is the platform's (a replica cannot say it before its first part)."""
        return Outcome(JobStatus.SUCCEEDED, output=NO_OUTPUT)


class NativeProtocol:
    """``native``: the default protocol."""

    ready_path = "/ok"

    def environment(self) -> dict[str, str]:
        """Nothing besides HOST and PORT."""
        return {}

    def request(self, job_id: str, payload: str) -> Request:
        """``POST /`` with the job's input as the body."""
        return post_json("/", payload)

    def readiness(self, status: int, body: bytes) -> tuple[Readiness, str]:
        """200 is READY; a SETUP_FAILED body is FAILED with its error; anything else is still STARTING."""
        if status == 200:
            return Readiness.READY, ""
        try:
            found, _ = parse_json(body)
        except ValueError:
            return Readiness.STARTING, ""
        if isinstance(found, dict) and found.get("status") == "SETUP_FAILED":
            return Readiness.FAILED, f"setup failed: {str(found.get('error'))[:2000]}"
        return Readiness.STARTING, ""

    def outcome(self, status: int, headers: Mapping[str, str], body: bytes, timeout: float) -> Outcome:
        """200 with a JSON body succeeds; a JSON error answer fails with the replica's code and message."""
        answer = parse_answer(status, body)
        if isinstance(answer, Outcome):
            return answer
        found, text = answer
        if status != 200:
            return Outcome(JobStatus.FAILED, error=replica_error(found, status, text))

        try:
            seconds = service_seconds(headers.get(SERVICE_TIME_HEADER), timeout)
        except ValueError as exc:
            return bad_response(f"{SERVICE_TIME_HEADER}: {exc}")
        return Outcome(JobStatus.SUCCEEDED, output=text, service_time=seconds)

    def parts(self, status: int, headers: Mapping[str, str]) -> NdjsonParts | None:
        """A 200 in ``application/x-ndjson`` is a stream of parts."""
        return NdjsonParts() if status == 200 and streamed(headers) else None
