"""Replica faults on a real Docker engine: a replica killed or frozen mid-request.

Each test prints submitted / succeeded / failed-with-reason / lost / committed twice.
"""

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import requests

from tests.integration.faults import tally
from tests.integration.platform import TEST_IMAGE, Platform
from workers.job import JobStatus
from workers.store import Store, keys

pytestmark = [pytest.mark.faults, pytest.mark.docker, pytest.mark.integration]
WARM_PAIR = f"""
[models.sleepy]
image = "{TEST_IMAGE}"
concurrency = 1
min_replicas = 2
max_replicas = 2
idle_timeout = 30
request_timeout = 3
max_attempts = 3
env = {{ MODEL_CLASS = "testmodels:Sleepy" }}
"""


def ready_replicas(platform: Platform) -> set[str]:
    """Ids of the READY replicas."""
    replicas = requests.get(f"{platform.url}/v1/models/sleepy", timeout=5).json()["replicas"]
    return {r["id"] for r in replicas if r["state"] == "READY"}


def container_of(client: Any, replica_id: str) -> Any:
    """The container running a replica."""
    [container] = client.containers.list(all=True, filters={"label": f"serverless-model.replica={replica_id}"})
    return container


def test_replica_killed_mid_request(make_platform: Callable[..., Platform], docker_client: Any,
                                   client: "redis.Redis") -> None:
    platform = make_platform(backend="docker", models=WARM_PAIR).start("gateway", "worker", "autoscaler")
    platform.wait_until(lambda: len(ready_replicas(platform)) == 2, 60, "the warm replicas did not start")
    answers: list[dict[str, Any]] = []
    submit = threading.Thread(target=lambda: answers.append(requests.post(
        f"{platform.url}/v1/models/sleepy/jobs?wait=60", json={"sleep": 1.5}, timeout=70).json()))
    submit.start()
    store = Store.of(client, 60).jobs
    platform.wait_until(lambda: any((j := store.get(i)) and j.status is JobStatus.RUNNING
                                    for i in client.smembers(keys.running("sleepy"))), 20, "the job did not start")
    [job_id] = client.smembers(keys.running("sleepy"))
    running = store.get(job_id)
    assert running is not None and running.replica
    victim = running.replica
    container_of(docker_client, victim).kill()
    faulted_at = time.monotonic()
    submit.join(70)

    result = tally(client, [job_id])
    job = answers[0]
    print(result.line("replica killed") + f" finished {time.monotonic() - faulted_at:.1f} s after the kill")
    assert result.lost == [] and result.committed_twice == []
    assert job["status"] == "SUCCEEDED" and job["attempts"] == 2
    assert job["replica"] != victim and job["output"]["echo"] == {"sleep": 1.5}
    platform.wait_until(lambda: len(ready_replicas(platform)) == 2 and victim not in ready_replicas(platform), 60,
                        "the failed replica was not replaced")
    platform.wait_until(lambda: not docker_client.containers.list(
        all=True, filters={"label": f"serverless-model.replica={victim}"}, ignore_removed=True),
        20, "the failed container was left")


def test_frozen_replica_times_out_and_is_replaced(make_platform: Callable[..., Platform], docker_client: Any,
                                                  client: "redis.Redis") -> None:
    platform = make_platform(backend="docker", models=WARM_PAIR).start("gateway", "worker", "autoscaler")
    platform.wait_until(lambda: len(ready_replicas(platform)) == 2, 60, "the warm replicas did not start")
    victim = sorted(ready_replicas(platform))[0]
    container = container_of(docker_client, victim)
    container.pause()  # frozen: it takes connections and answers nothing
    platform.wait_until(lambda: container.reload() or container.status == "paused", 10, "the pause did not take")
    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:  # one slot per replica, both held at once: one job lands on the frozen one
        jobs = list(pool.map(lambda i: requests.post(f"{platform.url}/v1/models/sleepy/jobs?wait=60",
                                                     json={"i": i, "sleep": 1}, timeout=70).json(), range(2)))

    result = tally(client, [job["id"] for job in jobs])
    print(result.line("replica frozen") + f" both done in {time.monotonic() - started:.1f} s (request timeout 3 s)")
    assert result.lost == [] and result.committed_twice == []
    assert [job["status"] for job in jobs] == ["SUCCEEDED"] * 2
    moved = [job for job in jobs if job["attempts"] == 2]
    assert len(moved) == 1 and moved[0]["replica"] != victim  # it timed out on the frozen replica, then ran again
    failures = requests.get(f"{platform.url}/v1/events", params={"model": "sleepy"}, timeout=5).json()["events"]
    assert any(e["replica"] == victim and "Timeout" in e["reason"] for e in failures), failures
    platform.wait_until(lambda: len(ready_replicas(platform)) == 2 and victim not in ready_replicas(platform), 60,
                        "the frozen replica was not replaced")
