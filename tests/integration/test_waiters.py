"""Waiting holds no OS thread: the gateway's gevent worker keeps hundreds of ``?wait`` requests open at once on a
few threads, answers each with its own output, and keeps the per-key cap of waiting requests."""

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import psutil
import pytest
import requests

from gateway.auth import digest
from tests.integration.platform import Platform

pytestmark = pytest.mark.integration
CLIENTS = 200
THREADS = 40  # far above what the gevent worker runs (its main thread and gevent's resolver pool), far below 200
SLOW = """
[models.slow]
command = ["python", "-m", "model.server"]
concurrency = 16
max_replicas = 1
idle_timeout = 30
max_queued = 1000
env = { MODEL_CLASS = "testmodels:Sleepy", SERVICE_TIME = "0.01" }
"""


def queued(platform: Platform, headers: dict[str, str] | None = None) -> int:
    """Jobs of the slow model waiting now (none runs: no worker yet)."""
    answer = requests.get(f"{platform.url}/v1/models/slow", headers=headers, timeout=10)
    return int(answer.json()["queue_depth"])


def gateway_worker(platform: Platform) -> psutil.Process:
    """The gunicorn worker process serving the gateway's requests (the arbiter's one child)."""
    children = psutil.Process(platform.processes["gateway"].pid).children()
    assert len(children) == 1, children
    return children[0]


def submit(platform: Platform, i: int, key: str = "") -> requests.Response:
    """A job of the slow model, waited for."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(f"{platform.url}/v1/models/slow/jobs?wait=120", json={"i": i}, headers=headers, timeout=150)


def own_outputs(answers: list[Future[requests.Response]]) -> list[tuple[int, Any]]:
    """Each answer's status and the input its output echoes."""
    found = []
    for answer in answers:
        response = answer.result(timeout=150)
        found.append((response.status_code, response.json().get("output", {}).get("echo")))
    return found


def test_two_hundred_waiting_clients_hold_no_thread_each_and_each_gets_its_own_output(
        make_platform: Callable[..., Platform]) -> None:
    platform = make_platform(models=SLOW).start("gateway", env={"SM_MAX_WAITERS": "1000"})
    with ThreadPoolExecutor(CLIENTS) as clients:
        answers = [clients.submit(submit, platform, i) for i in range(CLIENTS)]
        platform.wait_until(lambda: queued(platform) == CLIENTS, 60, "the 200 jobs were not all recorded")
        assert not any(answer.done() for answer in answers)  # nothing can run yet: every one waits
        threads = gateway_worker(platform).num_threads()
        assert threads < THREADS, f"the gateway runs {threads} threads while {CLIENTS} requests wait"
        platform.start("worker", "autoscaler")
        assert own_outputs(answers) == [(200, {"i": i}) for i in range(CLIENTS)]


def test_past_its_cap_a_key_is_answered_202_at_once_and_another_key_still_waits(
        make_platform: Callable[..., Platform]) -> None:
    alice, bob = "key-of-alice", "key-of-bob"
    keys = {"SM_API_KEYS": f"{digest(alice)},{digest(bob)}", "SM_MAX_WAITERS_PER_KEY": "5"}
    platform = make_platform(models=SLOW).start("gateway", env=keys)
    headers = {"Authorization": f"Bearer {alice}"}
    with ThreadPoolExecutor(8) as clients:
        waiting = [clients.submit(submit, platform, i, alice) for i in range(5)]
        platform.wait_until(lambda: queued(platform, headers) == 5, 60, "alice's five jobs were not recorded")
        past_cap = [submit(platform, i, alice) for i in range(5, 8)]
        assert [answer.status_code for answer in past_cap] == [202, 202, 202]
        assert [answer.json()["status"] for answer in past_cap] == ["QUEUED"] * 3
        other = clients.submit(submit, platform, 8, bob)
        platform.wait_until(lambda: queued(platform, headers) == 9, 60, "bob's job was not recorded")
        platform.start("worker", "autoscaler")
        assert own_outputs([*waiting, other]) == [(200, {"i": i}) for i in (0, 1, 2, 3, 4, 8)]
