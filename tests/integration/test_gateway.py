"""The gateway's answers to bad requests, against the production server (gunicorn) on a real Redis.

Every case asserts that nothing was recorded or enqueued.
"""

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import requests

from tests.integration.platform import Platform
from workers.store import keys

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway(make_platform: Callable[..., Platform]) -> Platform:
    """Only the gateway: no worker takes anything, so whatever is enqueued stays visible."""
    return make_platform().start("gateway")


def nothing_enqueued(client: "redis.Redis") -> bool:
    """No job record, no queued id, no Celery message."""
    return not list(client.scan_iter(keys.job("*"))) and client.zcard(keys.sent("iris")) == 0 \
        and client.llen(keys.celery_queue("iris")) == 0


def chunks(data: bytes, size: int = 8192) -> Iterator[bytes]:
    """A body sent chunked, without Content-Length."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


JOBS = "/v1/models/iris/jobs"
JSON = {"Content-Type": "application/json"}
OVERSIZED = b'{"features": "' + b"x" * 70_000 + b'"}'
CASES: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    # (name, method, path, request kwargs, status, error code)
    ("unknown model", "POST", "/v1/models/nope/jobs", {"json": {"features": [[1, 2, 3, 4]]}}, 404, "unknown_model"),
    ("malformed JSON", "POST", JOBS, {"data": b'{"features": [', "headers": JSON},
     400, "malformed_json"),
    ("invalid UTF-8", "POST", JOBS, {"data": b'{"a": "\xff\xfe"}', "headers": JSON},
     400, "malformed_json"),
    ("deeply nested", "POST", JOBS, {"data": b"[" * 100_000 + b"]" * 100_000,
                                      "headers": JSON}, 413, "request_entity_too_large"),
    ("nested within limit", "POST", JOBS, {"data": b'{"a":' + b"[" * 20_000 + b"]" * 20_000 + b"}",
                                            "headers": JSON}, 400, "malformed_json"),
    ("not an object", "POST", JOBS, {"json": [1, 2, 3]}, 422, "invalid_input"),
    ("NaN", "POST", JOBS, {"data": b'{"a": NaN}', "headers": JSON}, 400, "malformed_json"),
    ("Infinity", "POST", JOBS, {"data": b'{"a": -Infinity}', "headers": JSON}, 400, "malformed_json"),
    ("a number past a float", "POST", JOBS, {"data": b'{"a": 1e999}', "headers": JSON}, 400, "malformed_json"),
    ("wrong content type", "POST", JOBS, {"data": b"features=1", "headers": {"Content-Type": "text/plain"}},
     415, "unsupported_media_type"),
    ("body over the limit", "POST", JOBS, {"data": OVERSIZED, "headers": JSON},
     413, "request_entity_too_large"),
    ("chunked body over the limit", "POST", JOBS,
     {"data": chunks(OVERSIZED), "headers": JSON}, 413, "request_entity_too_large"),
    ("negative wait", "POST", JOBS + "?wait=-1", {"json": {"features": [[1, 2, 3, 4]]}}, 422, "invalid_input"),
    ("unknown job", "GET", "/v1/jobs/" + "0" * 32, {}, 404, "unknown_job"),
    ("job id that is not hex", "GET", "/v1/jobs/not-a-job", {}, 404, "unknown_job"),
    ("hole13: job id with dashes", "GET", "/v1/jobs/123e4567-e89b-12d3-a456-426614174000", {}, 404, "unknown_job"),
    ("very long job id", "GET", "/v1/jobs/" + "a" * 5000, {}, 404, "unknown_job"),
    ("cancel a job id with dashes", "DELETE", "/v1/jobs/123e4567-e89b-12d3-a456-426614174000", {}, 404,
     "unknown_job"),
    ("cancel unknown job", "DELETE", "/v1/jobs/" + "0" * 32, {}, 404, "unknown_job"),
    ("unknown model details", "GET", "/v1/models/nope", {}, 404, "unknown_model"),
    ("no such route", "GET", "/v3/everything", {}, 404, "not_found"),
]


@pytest.mark.parametrize(("name", "method", "path", "kwargs", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_request_gets_json_error_and_enqueues_nothing(
    gateway: Platform, client: "redis.Redis", name: str, method: str, path: str, kwargs: dict[str, Any],
    status: int, code: str,
) -> None:
    response = requests.request(method, gateway.url + path, timeout=10, **kwargs)
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    assert nothing_enqueued(client)


def test_accepted_job_is_recorded_and_enqueued(gateway: Platform, client: "redis.Redis") -> None:
    response = requests.post(gateway.url + JOBS, json={"features": [[5.1, 3.5, 1.4, 0.2]]}, timeout=10)
    assert response.status_code == 202
    job = response.json()
    assert job["status"] == "QUEUED" and job["links"]["self"] == f"/v1/jobs/{job['id']}"
    assert client.llen(keys.celery_queue("iris")) == 1
    assert client.zrange(keys.sent("iris"), 0, -1) == [job["id"]]
    assert requests.get(gateway.url + job["links"]["self"], timeout=5).json()["status"] == "QUEUED"
    model = requests.get(f"{gateway.url}/v1/models/iris", timeout=5).json()
    assert model["queue_depth"] == 1 and model["running"] == 0
    assert model["example_input"] == {"features": [[5.1, 3.5, 1.4, 0.2]]}


def test_wait_returns_202_when_the_job_is_not_done(gateway: Platform) -> None:
    response = requests.post(gateway.url + JOBS + "?wait=0.3", json={"features": [[1, 2, 3, 4]]}, timeout=10)
    assert response.status_code == 202
    assert response.json()["status"] == "QUEUED"


def test_health_readiness_and_openapi(gateway: Platform) -> None:
    assert requests.get(f"{gateway.url}/healthz", timeout=5).json() == {"status": "ok"}
    assert requests.get(f"{gateway.url}/readyz", timeout=5).json() == {"status": "ok"}
    document = requests.get(f"{gateway.url}/openapi.json", timeout=5).json()
    assert {"/v1/models/{model}/jobs", "/v1/jobs/{job_id}", "/v1/models"} <= set(document["paths"])
    assert "JobView" in document["components"]["schemas"]


def test_full_queue_is_429_with_retry_after_and_enqueues_nothing(make_platform: Callable[..., Platform],
                                                                 client: "redis.Redis") -> None:
    platform = make_platform(models='\n[models.capped]\ncommand = ["python", "-m", "model.server"]\nmax_queued = 2\n')
    platform.start("gateway")
    url = f"{platform.url}/v1/models/capped/jobs"
    accepted = [requests.post(url, json={"i": i}, timeout=10).status_code for i in range(2)]
    refused = requests.post(url, json={"i": 2}, timeout=10)
    assert accepted == [202, 202]
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "queue_full"
    assert int(refused.headers["Retry-After"]) > 0
    assert client.zcard(keys.sent("capped")) == 2 and client.llen(keys.celery_queue("capped")) == 2
