"""KServe, MLServer, Triton and any server of the Open Inference Protocol ("V2").

A job's body is a V2 inference request (``{"inputs": [...]}``), sent to ``POST /v2/models/<served name>/infer``
with the job's id as the request's ``id`` if it has none. Readiness is ``GET /v2/models/<served name>/ready``.
The job's output is the whole V2 response; an error answer (``{"error": …}`` or FastAPI's ``{"detail": …}``)
fails the job: ``bad_input`` for a 4xx, ``model_error`` for anything else.
"""

import json
from collections.abc import Mapping

from workers.job import Outcome
from workers.protocols.base import Readiness, Request, failed, json_object, parse_answer, post_json, succeeded


class KServeProtocol:
    """``kserve``."""

    def __init__(self, served_name: str) -> None:
        self.path = f"/v2/models/{served_name}"
        self.ready_path = f"{self.path}/ready"

    def environment(self) -> dict[str, str]:
        """Nothing: pass the port with ``args = ["--http_port", "{port}"]`` or read PORT."""
        return {}

    def request(self, job_id: str, payload: str) -> Request:
        """The V2 request, with the job id as its ``id`` unless it has one."""
        path = f"{self.path}/infer"
        if not payload.startswith("{"):  # not an object: the server says what is wrong with it
            return post_json(path, payload)
        if '"id"' in payload:  # it may have an id (the recorded text escapes no ASCII letter): read it to know
            found = json.loads(payload)
            return post_json(path, json.dumps({"id": job_id, **found}))
        identified = json_object({"id": json.dumps(job_id)})
        return post_json(path, identified if payload == "{}" else f"{identified[:-1]},{payload[1:]}")

    def readiness(self, status: int, body: bytes) -> tuple[Readiness, str]:
        """200 is ready."""
        return (Readiness.READY if status == 200 else Readiness.STARTING), ""

    def outcome(self, status: int, headers: Mapping[str, str], body: bytes, timeout: float) -> Outcome:
        """200 succeeds with the V2 response; else the server's error."""
        answer = parse_answer(status, body)
        if isinstance(answer, Outcome):
            return answer
        found, text = answer
        if status == 200:
            return succeeded(found)
        reason = found.get("error", found.get("detail", text)) if isinstance(found, dict) else text
        message = reason if isinstance(reason, str) else json.dumps(reason)
        return failed("bad_input" if 400 <= status < 500 else "model_error", message)

    def parts(self, status: int, headers: Mapping[str, str]) -> None:
        """Answers come whole."""
        return None
