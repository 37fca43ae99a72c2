"""End to end on real parts: gunicorn gateway, a real celery worker, the autoscaler, process replicas."""

import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import requests

from model.model import Model
from tests.integration.platform import Platform
from workers.store import keys

pytestmark = pytest.mark.integration


def flower_rows(count: int) -> list[list[float]]:
    """``count`` distinct, plausible iris measurements."""
    return [[4.5 + (i % 30) * 0.1, 2.5 + (i % 7) * 0.15, 1.0 + (i % 13) * 0.45, 0.1 + (i % 11) * 0.22]
            for i in range(count)]


def expected_predictions(rows: list[list[float]]) -> list[str]:
    """What the example model predicts, computed here without the platform."""
    model = Model()
    model.setup()
    return [model.predict({"features": [row]})["predictions"][0] for row in rows]


def submit(platform: Platform, body: Any, wait: float = 0) -> requests.Response:
    """POST a job."""
    return requests.post(f"{platform.url}/v1/models/iris/jobs", json=body, params={"wait": wait}, timeout=wait + 30)


def replicas(platform: Platform) -> list[dict[str, Any]]:
    """The example model's replicas as the API shows them."""
    body: dict[str, Any] = requests.get(f"{platform.url}/v1/models/iris", timeout=5).json()
    return list(body["replicas"])


def job_status(platform: Platform, job_id: str) -> dict[str, Any]:
    """A job as the API shows it."""
    body: dict[str, Any] = requests.get(f"{platform.url}/v1/jobs/{job_id}", timeout=5).json()
    return body


def test_fifty_concurrent_jobs_scale_from_zero_and_back(make_platform: Callable[..., Platform]) -> None:
    platform = make_platform(idle_timeout=3).start("gateway", "worker", "autoscaler")
    assert replicas(platform) == []
    rows = flower_rows(50)

    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(lambda row: submit(platform, {"features": [row]}, wait=90), rows))

    jobs = [r.json() for r in responses]
    assert [r.status_code for r in responses] == [200] * 50, jobs[:3]
    assert [j["status"] for j in jobs] == ["SUCCEEDED"] * 50
    assert [j["output"]["predictions"][0] for j in jobs] == expected_predictions(rows)
    assert all(j["replica"] and j["attempts"] == 1 and j["timings"]["total"] > 0 for j in jobs)
    print(f"replicas used: {len({j['replica'] for j in jobs})}")

    model = requests.get(f"{platform.url}/v1/models/iris", timeout=5).json()
    averages = model["averages"]
    assert averages["cold_start"]["samples"] >= 1 and averages["cold_start"]["seconds"] > 0
    assert averages["service_time"]["samples"] == 50 and 0 < averages["service_time"]["seconds"] < 1
    platform.wait_until(lambda: replicas(platform) == [], 30, "replicas were not stopped after the idle timeout")


def test_queued_job_survives_restart_of_gateway_and_worker(make_platform: Callable[..., Platform]) -> None:
    platform = make_platform().start("gateway", "autoscaler")  # no worker: the job stays queued
    body = {"features": [[6.7, 3.0, 5.2, 2.3]]}
    accepted = submit(platform, body).json()
    assert accepted["status"] == "QUEUED"
    time.sleep(0.5)
    platform.stop("gateway")
    platform.start("gateway", "worker")

    platform.wait_until(lambda: job_status(platform, accepted["id"])["status"] == "SUCCEEDED", 60,
                        "the queued job did not complete after the restart")
    job = job_status(platform, accepted["id"])
    assert job["created_at"] == accepted["created_at"]
    assert job["output"]["predictions"] == ["virginica"]
    assert job["attempts"] == 1


def test_cancel_queued_job_is_never_run(make_platform: Callable[..., Platform], client: "redis.Redis") -> None:
    platform = make_platform().start("gateway")
    job = submit(platform, {"features": [[5.1, 3.5, 1.4, 0.2]]}).json()

    cancelled = requests.delete(f"{platform.url}/v1/jobs/{job['id']}", timeout=5)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "CANCELLED"
    assert cancelled.json()["cancelled_while"] == "QUEUED"
    again = requests.delete(f"{platform.url}/v1/jobs/{job['id']}", timeout=5)
    assert again.status_code == 409

    platform.start("worker", "autoscaler")
    platform.wait_until(lambda: client.llen(keys.celery_queue("iris")) == 0, 20, "the worker did not take the task")
    time.sleep(1)
    assert job_status(platform, job["id"])["status"] == "CANCELLED"
    assert job_status(platform, job["id"])["attempts"] == 0


def test_bad_model_input_fails_the_job_with_the_models_message(make_platform: Callable[..., Platform]) -> None:
    platform = make_platform().start("gateway", "worker", "autoscaler")
    response = submit(platform, {"features": [[1, 2, 3]]}, wait=60)
    assert response.status_code == 200
    job = response.json()
    assert job["status"] == "FAILED"
    assert job["error"]["code"] == "bad_input"
    assert "4 numbers" in job["error"]["message"]


def test_killed_autoscaler_adopts_process_replicas_on_restart(make_platform: Callable[..., Platform],
                                                              client: "redis.Redis") -> None:
    platform = make_platform(idle_timeout=30).start("gateway", "worker", "autoscaler")
    assert submit(platform, {"features": [[5.1, 3.5, 1.4, 0.2]]}, wait=60).json()["status"] == "SUCCEEDED"
    [replica] = replicas(platform)
    platform.stop("autoscaler", sig=signal.SIGKILL)
    platform.start("autoscaler")

    platform.wait_until(lambda: any(e["kind"] == "adopted" for e in all_events(platform)), 20, "not adopted")
    assert [r["id"] for r in replicas(platform)] == [replica["id"]]
    job = submit(platform, {"features": [[5.1, 3.5, 1.4, 0.2]]}, wait=60).json()
    assert job["status"] == "SUCCEEDED" and job["replica"] == replica["id"]
    platform.stop("autoscaler")  # leaving stops no replica: it goes on serving
    job = submit(platform, {"features": [[5.1, 3.5, 1.4, 0.2]]}, wait=60).json()
    assert job["status"] == "SUCCEEDED" and job["replica"] == replica["id"]


def all_events(platform: Platform) -> list[dict[str, Any]]:
    """Every event, newest first."""
    return list(requests.get(f"{platform.url}/v1/events", timeout=5).json()["events"])
