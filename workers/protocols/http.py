"""Any HTTP server: the job's body is POSTed to ``predict_path``; ``health_path`` answering one of
``ready_statuses`` means ready. A 2xx JSON answer is the output; anything else fails the job with the answer."""

from collections.abc import Mapping

from workers.job import JobStatus, Outcome
from workers.protocols.base import (
    Readiness,
    Request,
    bad_response,
    failed,
    parse_json,
    post_json,
    replica_error,
    succeeded,
)


class HttpProtocol:
    """``http``."""

    def __init__(self, predict_path: str, health_path: str, ready_statuses: list[int]) -> None:
        self.predict_path = predict_path
        self.ready_path = health_path
        self.ready_statuses = frozenset(ready_statuses)

    def environment(self) -> dict[str, str]:
        """Nothing besides HOST and PORT."""
        return {}

    def request(self, job_id: str, payload: str) -> Request:
        """The body, as it came."""
        return post_json(self.predict_path, payload)

    def readiness(self, status: int, body: bytes) -> tuple[Readiness, str]:
        """Ready on a status the model declared."""
        return (Readiness.READY if status in self.ready_statuses else Readiness.STARTING), ""

    def outcome(self, status: int, headers: Mapping[str, str], body: bytes, timeout: float) -> Outcome:
        """2xx JSON succeeds."""
        try:
            found, text = parse_json(body)
        except ValueError:
            if 200 <= status < 300:
                return bad_response(f"answered {status} with a body that is not JSON: {body[:300]!r}")
            return failed("model_error", f"answered {status}: {body[:2000].decode(errors='replace')}")
        if 200 <= status < 300:
            return succeeded(found)
        return Outcome(JobStatus.FAILED, error=replica_error(found, status, text))

    def parts(self, status: int, headers: Mapping[str, str]) -> None:
        """Answers come whole."""
        return None
