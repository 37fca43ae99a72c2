"""The RunPod door, driven by the ``runpod`` SDK unchanged (only its documented base URL set), on the production
server with a worker, an autoscaler and a real replica; API keys as the SDK sends them."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import requests
import runpod

from gateway.auth import digest
from tests.integration.platform import Platform, eventually
from tests.integration.test_holes import sleepy
from workers.store import keys

pytestmark = pytest.mark.integration
KEY = "runpod-key-0123456789"


@pytest.fixture
def endpoint(make_platform: Callable[..., Platform]) -> Iterator[tuple[Platform, runpod.Endpoint]]:
    """A platform with API keys and the sleepy model, and the SDK's endpoint of that model."""
    platform = make_platform(models=sleepy(concurrency=2, max_replicas=1))
    platform.env.update(SM_API_KEYS=digest(KEY))
    platform.start("gateway", "worker", "autoscaler")
    base, key = runpod.endpoint_url_base, runpod.api_key
    runpod.endpoint_url_base, runpod.api_key = f"{platform.url}/runpod/v2", KEY
    try:
        yield platform, runpod.Endpoint("sleepy")
    finally:
        runpod.endpoint_url_base, runpod.api_key = base, key


def raw(platform: Platform, method: str, path: str, **kwargs: Any) -> requests.Response:
    """A request to the sleepy endpoint with the key as a bearer token."""
    return requests.request(method, f"{platform.url}/runpod/v2/sleepy/{path}",
                            headers={"Authorization": f"Bearer {KEY}"}, timeout=60, **kwargs)


def test_run_sync_run_status_output_and_health(endpoint: tuple[Platform, runpod.Endpoint]) -> None:
    platform, sleepy_endpoint = endpoint
    assert sleepy_endpoint.run_sync({"text": "first"}, timeout=120)["echo"] == {"text": "first"}  # from zero
    job = sleepy_endpoint.run({"input": {"text": "second"}})
    assert job.output(timeout=60)["echo"] == {"text": "second"}
    assert job.status() == "COMPLETED"
    state = raw(platform, "GET", f"status/{job.job_id}").json()
    assert state["status"] == "COMPLETED" and state["id"] == job.job_id
    assert isinstance(state["delayTime"], int) and isinstance(state["executionTime"], int)
    health = sleepy_endpoint.health()
    assert health["workers"]["ready"] == 1 and health["jobs"]["inQueue"] == 0, health  # idle_timeout is 30 s


def test_cancel_through_the_sdk(endpoint: tuple[Platform, runpod.Endpoint], client: "redis.Redis") -> None:
    platform, sleepy_endpoint = endpoint
    job = sleepy_endpoint.run({"sleep": 5})
    assert job.cancel()["status"] == "CANCELLED"
    assert job.status() == "CANCELLED"
    stored = client.hget(keys.job(job.job_id), "status")
    assert stored == "CANCELLED"
    again = raw(platform, "POST", f"cancel/{job.job_id}")
    assert again.status_code == 409 and isinstance(again.json()["error"], str)


def test_keys_as_runpod_sends_them_and_wrong_ones(endpoint: tuple[Platform, runpod.Endpoint]) -> None:
    platform, _ = endpoint
    assert raw(platform, "POST", "run", json={"input": {"a": 1}}).json()["status"] == "IN_QUEUE"
    bare = requests.post(f"{platform.url}/runpod/v2/sleepy/run", headers={"Authorization": KEY},
                         json={"input": {"a": 1}}, timeout=10)
    assert bare.status_code == 200 and bare.json()["status"] == "IN_QUEUE"
    with pytest.raises(RuntimeError, match="401"):
        runpod.Endpoint("sleepy", api_key="not-the-key").run_sync({"a": 1})
    refused = requests.post(f"{platform.url}/runpod/v2/sleepy/run", json={"input": {"a": 1}}, timeout=10)
    assert refused.status_code == 401 and isinstance(refused.json()["error"], str)


@pytest.mark.parametrize(("path", "body", "status"), [
    ("run", {"inpt": {"a": 1}}, 422),
    ("run", {"input": [1, 2]}, 422),
    ("runsync", {"input": {"a": 1}, "webhook": "http://127.0.0.1:9/hook"}, 400),
    ("run", {"input": {"a": 1}, "policy": {"ttl": 0}}, 422),
    ("runsync?wait=-1", {"input": {"a": 1}}, 422),
])
def test_bad_input_is_a_runpod_error_that_records_nothing(endpoint: tuple[Platform, runpod.Endpoint],
                                                          client: "redis.Redis", path: str, body: Any,
                                                          status: int) -> None:
    platform, _ = endpoint
    answer = raw(platform, "POST", path, json=body)
    assert answer.status_code == status and isinstance(answer.json()["error"], str), answer.text
    assert client.llen(keys.celery_queue("sleepy")) == 0 and not list(client.scan_iter(keys.job("*")))
    unknown = requests.get(f"{platform.url}/runpod/v2/nope/health", headers={"Authorization": f"Bearer {KEY}"},
                           timeout=10)
    assert unknown.status_code == 404 and isinstance(unknown.json()["error"], str)
    eventually(platform.healthy, 5, "the gateway stopped answering")


def test_purge_queue_through_the_sdk_and_retry(endpoint: tuple[Platform, runpod.Endpoint]) -> None:
    platform, sleepy_endpoint = endpoint
    jobs = [sleepy_endpoint.run({"sleep": 3, "n": n}) for n in range(6)]
    removed = sleepy_endpoint.purge_queue()
    assert removed["status"] == "completed"
    statuses = [job.status() for job in jobs]
    assert removed["removed"] == statuses.count("CANCELLED") >= 1, (removed, statuses)  # at most 2 had started
    cancelled = jobs[statuses.index("CANCELLED")]
    retried = raw(platform, "POST", f"retry/{cancelled.job_id}")
    assert retried.status_code == 200 and retried.json()["status"] == "IN_QUEUE", retried.text
    eventually(lambda: raw(platform, "GET", f"status/{cancelled.job_id}").json()["status"] == "COMPLETED", 60,
               "the retried job did not complete")
    output = raw(platform, "GET", f"status/{cancelled.job_id}").json()["output"]
    assert output["echo"] == {"sleep": 3, "n": statuses.index("CANCELLED")}
    again = raw(platform, "POST", f"retry/{cancelled.job_id}")
    assert again.status_code == 409 and isinstance(again.json()["error"], str)
