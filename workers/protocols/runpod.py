"""A RunPod serverless worker, run by the runpod SDK in its realtime mode.

The SDK serves ``POST /<endpoint id>/realtime`` on ``RUNPOD_REALTIME_PORT`` when that and ``RUNPOD_ENDPOINT_ID``
are set (the platform sets both: the endpoint id is ``serverless-model``). A job is sent as
``{"id": <job id>, "input": body}``; ``{"output": …}`` is what the handler returned, and a truthy ``{"error": …}``
(a JSON string with ``error_type`` and ``error_message``, or an error the handler returned itself) fails the job with
the handler's message, even beside an ``output``. ``GET /`` answers once the server is up, which it is only after
the handler's module loaded.
"""

import json
from collections.abc import Mapping
from typing import Any

from workers.job import Outcome
from workers.protocols.base import (
    Readiness,
    Request,
    failed,
    json_object,
    parse_answer,
    parse_json,
    post_json,
    succeeded,
)

ENDPOINT_ID = "serverless-model"


class RunPodProtocol:
    """``runpod``."""

    ready_path = "/"

    def environment(self) -> dict[str, str]:
        """The SDK's realtime mode on our port."""
        return {"RUNPOD_REALTIME_PORT": "{port}", "RUNPOD_ENDPOINT_ID": ENDPOINT_ID}

    def request(self, job_id: str, payload: str) -> Request:
        """The job as a RunPod job."""
        return post_json(f"/{ENDPOINT_ID}/realtime", json_object({"id": json.dumps(job_id), "input": payload}))

    def readiness(self, status: int, body: bytes) -> tuple[Readiness, str]:
        """The SDK's server answers: ready."""
        return (Readiness.READY if status == 200 else Readiness.STARTING), ""

    def outcome(self, status: int, headers: Mapping[str, str], body: bytes, timeout: float) -> Outcome:
        """``output`` succeeds; ``error`` fails with the handler's message."""
        answer = parse_answer(status, body)
        if isinstance(answer, Outcome):
            return answer
        found, text = answer
        if status == 200 and isinstance(found, dict) and not found.get("error"):
            return succeeded(found.get("output"))  # {} is a handler that returned None
        error = found.get("error") or found.get("detail") or text if isinstance(found, dict) else text
        return failed("bad_input" if status == 422 else "model_error", handler_message(error))

    def parts(self, status: int, headers: Mapping[str, str]) -> None:
        """Answers come whole."""
        return None


def handler_message(error: Any) -> str:
    """The handler's own message out of the SDK's error (a JSON string with error_type, error_message)."""
    try:
        details = parse_json(error.encode())[0] if isinstance(error, str) else error
    except ValueError:
        return str(error)[:2000]
    if isinstance(details, dict) and "error_message" in details:
        kind = str(details.get("error_type", "")).removeprefix("<class '").removesuffix("'>")
        return f"{kind}: {details['error_message']}" if kind else str(details["error_message"])
    return error if isinstance(error, str) else json.dumps(error)
