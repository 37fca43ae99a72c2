"""API keys and the per-key rate limit, against the production server."""

from collections.abc import Callable

import pytest
import redis
import requests

from gateway.auth import digest
from tests.integration.platform import Platform
from workers.store import keys

pytestmark = pytest.mark.integration
KEY_A, KEY_B = "key-a-0123456789", "key-b-9876543210"


@pytest.fixture
def secured(make_platform: Callable[..., Platform]) -> Platform:
    """A gateway that accepts keys A and B (configured by digest), 5 requests per second each."""
    platform = make_platform()
    platform.env.update(SM_API_KEYS=f"{digest(KEY_A)},{digest(KEY_B)}", SM_RATE_LIMIT="5")
    return platform.start("gateway")


def call(platform: Platform, method: str, path: str, key: str | None, **kwargs: object) -> requests.Response:
    """A request with a bearer key (or none)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.request(method, platform.url + path, headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]


def test_missing_or_wrong_key_is_401_and_enqueues_nothing(secured: Platform, client: "redis.Redis") -> None:
    for key in (None, "not-a-key"):
        response = call(secured, "POST", "/v1/models/iris/jobs", key, json={"features": [[1, 2, 3, 4]]})
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert call(secured, "GET", "/v1/models", None).status_code == 401
    assert call(secured, "GET", "/healthz", None).status_code == 200  # probes need no key
    assert client.llen(keys.celery_queue("iris")) == 0 and not list(client.scan_iter(keys.job("*")))


def test_a_job_is_readable_only_with_the_key_that_submitted_it(secured: Platform) -> None:
    job = call(secured, "POST", "/v1/models/iris/jobs", KEY_A, json={"features": [[1, 2, 3, 4]]}).json()
    assert call(secured, "GET", f"/v1/jobs/{job['id']}", KEY_A).json()["id"] == job["id"]
    other = call(secured, "GET", f"/v1/jobs/{job['id']}", KEY_B)
    assert other.status_code == 404 and other.json()["error"]["code"] == "unknown_job"
    assert call(secured, "DELETE", f"/v1/jobs/{job['id']}", KEY_B).status_code == 404
    assert call(secured, "GET", f"/v1/jobs/{job['id']}", KEY_A).json()["status"] == "QUEUED"


def test_over_the_rate_limit_is_429_with_retry_after(secured: Platform) -> None:
    answers = [call(secured, "GET", "/v1/models", KEY_A) for _ in range(12)]
    limited = [a for a in answers if a.status_code == 429]
    print(f"12 requests at once: {len(answers) - len(limited)} served, {len(limited)} limited")
    assert limited and all(a.headers["Retry-After"] == "1" for a in limited)
    assert limited[0].json()["error"]["code"] == "rate_limited"
    assert call(secured, "GET", "/v1/models", KEY_B).status_code == 200  # the limit is per key
