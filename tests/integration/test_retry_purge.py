"""Retry and purge: ``POST /v1/jobs/<id>/retry`` and ``DELETE /v1/models/<m>/queue``, on the store over a real
Redis and through the real platform (gunicorn gateway, celery worker, autoscaler, replicas)."""

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import requests

from gateway.auth import digest
from tests.integration.platform import Platform
from workers.execution.celery_app import REVOKED
from workers.job import JobStatus, Outcome
from workers.store import Store, keys
from workers.store.records import Started

pytestmark = pytest.mark.integration
OK = Outcome(JobStatus.SUCCEEDED, output='{"y": 1}', service_time=0.01)
KEY_A, KEY_B = "key-a-0123456789", "key-b-9876543210"
SLEEPY = """
[models.sleepy]
command = ["python", "-m", "model.server"]
env = { MODEL_CLASS = "testmodels:Sleepy" }
concurrency = 1
max_replicas = 1
idle_timeout = 30
"""


def ready_replica(store: Store, replica_id: str = "r1") -> None:
    """A READY replica of model m with one slot."""
    token = store.leadership(30).hold() or ""
    assert store.replicas.add(token, replica_id, "m", "fake")
    assert store.replicas.launched(token, replica_id, f"http://127.0.0.1/{replica_id}", replica_id)
    assert store.replicas.ready(token, replica_id, concurrency=1) is not None


def submit(store: Store, owner: str = "") -> str:
    """A submitted job of model m."""
    job = store.jobs.submit(store.jobs.new("m", {"x": 1}, owner))
    assert not isinstance(job, str)
    return job.id


def start(store: Store, job_id: str, token: str) -> object:
    """A task starts the job."""
    return store.jobs.start(job_id, token, 5, "w", True)


def test_a_dead_job_resubmitted_waits_again_under_its_id_and_runs(store: Store, client: "redis.Redis") -> None:
    ready_replica(store)
    job_id = submit(store)
    assert isinstance(start(store, job_id, "t1"), Started)
    client.zadd(keys.LEASES, {job_id: 0})
    assert [r.outcome for r in store.jobs.reap({"m": 1})] == ["DEAD"]
    assert job_id in store.jobs.dead_letters() and client.ttl(keys.job(job_id)) > 0
    messages = client.llen(keys.celery_queue("m"))
    assert store.jobs.resubmit(job_id) == "OK"
    again = store.jobs.get(job_id)
    assert again is not None and again.status is JobStatus.QUEUED and again.error is None
    assert again.attempts == 1 and again.finished_at is None and again.started_at is None
    assert job_id not in store.jobs.dead_letters() and client.ttl(keys.job(job_id)) == -1  # kept until it ends
    assert client.llen(keys.celery_queue("m")) == messages + 1 and client.zscore(keys.sent("m"), job_id)
    with ThreadPoolExecutor(1) as pool:
        waiter = pool.submit(store.jobs.wait, job_id, 30)  # wakes at the new end, not at the old one
        started = start(store, job_id, "t2")
        assert isinstance(started, Started) and started.job.attempts == 2
        assert store.jobs.finish(job_id, "t2", OK) == "OK"
        assert waiter.result().status is JobStatus.SUCCEEDED
    done = store.jobs.get(job_id)
    assert done is not None and done.status is JobStatus.SUCCEEDED and done.output == {"y": 1}
    assert store.jobs.resubmit(job_id) == "SUCCEEDED" and store.jobs.resubmit("nope") == "MISSING"


def test_a_resubmit_is_capped_as_a_submit_is(store: Store) -> None:
    cancelled = submit(store, "a")
    assert store.jobs.cancel(cancelled) == "OK"
    submit(store, "a")
    assert store.jobs.resubmit(cancelled, max_queued=1) == "FULL"
    assert store.jobs.resubmit(cancelled, max_per_owner=1) == "KEY_FULL"
    assert store.jobs.get(cancelled).status is JobStatus.CANCELLED  # type: ignore[union-attr]
    assert store.jobs.resubmit(cancelled, max_queued=2, max_per_owner=2) == "OK"


def test_a_job_whose_celery_task_was_revoked_is_not_run_again(store: Store) -> None:
    job_id = submit(store)
    assert store.jobs.cancel(job_id, REVOKED) == "OK"
    assert store.jobs.resubmit(job_id) == "REVOKED"  # the workers would drop its message again
    assert store.jobs.get(job_id).status is JobStatus.CANCELLED  # type: ignore[union-attr]
    other = submit(store)
    assert store.jobs.cancel(other) == "OK" and store.jobs.resubmit(other) == "OK"


def test_purge_cancels_sent_and_parked_jobs_in_batches_and_leaves_running_ones(store: Store) -> None:
    ready_replica(store)
    running = submit(store)
    assert isinstance(start(store, running, "t"), Started)
    mine = [submit(store, "a") for _ in range(5)]
    theirs = [submit(store, "b") for _ in range(3)]
    for job_id in (mine[0], mine[1], theirs[0]):
        assert start(store, job_id, "p") == "PARKED"  # the one slot is busy
    assert store.jobs.purge("m", "a", batch=2) == 5  # the owner's alone, two looked at per call
    assert {store.jobs.get(j).status for j in mine} == {JobStatus.CANCELLED}  # type: ignore[union-attr]
    assert {store.jobs.get(j).status for j in theirs} == {JobStatus.QUEUED}  # type: ignore[union-attr]
    assert store.jobs.purge("m", batch=1) == 3 and store.jobs.purge("m") == 0
    gone = store.jobs.get(theirs[0])
    assert gone is not None and gone.cancelled_while is JobStatus.QUEUED and gone.error is not None
    assert gone.error.code == "purged"
    assert store.jobs.get(running).status is JobStatus.RUNNING  # type: ignore[union-attr]
    assert store.replicas.snapshot("m", {}).waiting == 0


def purge_step(store: Store, purge: str, first: bool, owner: str = "") -> int:
    """One call of the purge script, one job looked at: how many it cancelled."""
    return int(store.jobs.scripts("purge", "m", owner, int(bool(owner)), 1, purge, int(first))[0])


def test_a_purge_takes_the_jobs_that_waited_when_it_began_however_they_move_meanwhile(store: Store) -> None:
    ready_replica(store)
    running = submit(store)
    assert isinstance(start(store, running, "t"), Started)
    parked = [submit(store) for _ in range(3)]
    for job_id in parked:
        assert start(store, job_id, "p") == "PARKED"
    other = submit(store, "b")
    cancelled = purge_step(store, "p1", True)
    assert store.jobs.finish(running, "t", OK) == "OK"  # a parked job is sent again, at the back of the sent
    store.jobs.cancel(other)  # another job leaves the sets
    late = submit(store)  # submitted after the purge began: not the purge's
    while True:
        found = store.jobs.scripts("purge", "m", "", 0, 1, "p1", 0)
        cancelled += int(found[0])
        if int(found[1]):
            break
    assert cancelled == 3
    assert {store.jobs.get(j).status for j in parked} == {JobStatus.CANCELLED}  # type: ignore[union-attr]
    assert store.jobs.get(late).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert not store.jobs.scripts.client.exists(keys.PURGE + "p1")


def test_an_owners_purge_misses_none_of_its_jobs_when_anothers_leave_meanwhile(store: Store) -> None:
    theirs = submit(store, "b")
    mine = [submit(store, "a") for _ in range(3)]
    cancelled = purge_step(store, "p2", True, "a")  # looks at the other owner's job first
    store.jobs.cancel(theirs)
    while True:
        found = store.jobs.scripts("purge", "m", "a", 1, 1, "p2", 0)
        cancelled += int(found[0])
        if int(found[1]):
            break
    assert cancelled == 3 and {store.jobs.get(j).status for j in mine} == {JobStatus.CANCELLED}  # type: ignore


def poll(platform: Platform, job_id: str, done: Callable[[dict[str, Any]], bool], key: str = "") -> dict[str, Any]:
    """The job once ``done`` says so (within 60 s)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    found: dict[str, Any] = {}

    def check() -> bool:
        found.update(requests.get(f"{platform.url}/v1/jobs/{job_id}", headers=headers, timeout=10).json())
        return done(found)

    platform.wait_until(check, 60, f"job {job_id} never got there: {found}")
    return found


def test_a_failed_job_retried_runs_again_and_a_succeeded_one_is_409(make_platform: Callable[..., Platform]) -> None:
    platform = make_platform().start("gateway", "worker", "autoscaler")
    jobs = f"{platform.url}/v1/models/iris/jobs"
    failed = requests.post(jobs, params={"wait": 60}, json={"features": "none"}, timeout=70).json()
    assert failed["status"] == "FAILED" and failed["attempts"] == 1 and failed["error"]
    retried = requests.post(f"{platform.url}/v1/jobs/{failed['id']}/retry", timeout=10)
    assert retried.status_code == 200, retried.text
    assert retried.json()["id"] == failed["id"] and retried.json()["error"] is None
    again = poll(platform, failed["id"], lambda job: job["status"] == "FAILED")
    assert again["attempts"] == 2 and again["error"] == failed["error"]  # the same input fails the same way
    done = requests.post(jobs, params={"wait": 60}, json={"features": [[5.1, 3.5, 1.4, 0.2]]}, timeout=70).json()
    assert done["status"] == "SUCCEEDED"
    refused = requests.post(f"{platform.url}/v1/jobs/{done['id']}/retry", timeout=10)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_retryable"
    unknown = requests.post(f"{platform.url}/v1/jobs/{'0' * 32}/retry", timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_job"
    paths = requests.get(f"{platform.url}/openapi.json", timeout=10).json()["paths"]
    assert "post" in paths["/v1/jobs/{job_id}/retry"] and "delete" in paths["/v1/models/{model}/queue"]


def test_purge_cancels_the_waiting_jobs_and_the_running_one_finishes(make_platform: Callable[..., Platform]) -> None:
    platform = make_platform(models=SLEEPY).start("gateway", "worker", "autoscaler")
    jobs = f"{platform.url}/v1/models/sleepy/jobs"
    first = requests.post(jobs, json={"sleep": 6}, timeout=10).json()
    poll(platform, first["id"], lambda job: job["status"] == "RUNNING")
    waiting = [requests.post(jobs, json={"sleep": 0}, timeout=10).json()["id"] for _ in range(4)]
    purged = requests.delete(f"{platform.url}/v1/models/sleepy/queue", timeout=10)
    assert purged.status_code == 200 and purged.json() == {"cancelled": 4}
    for job_id in waiting:
        job = requests.get(f"{platform.url}/v1/jobs/{job_id}", timeout=10).json()
        assert job["status"] == "CANCELLED" and job["cancelled_while"] == "QUEUED", job
    assert poll(platform, first["id"], lambda job: job["status"] != "RUNNING")["status"] == "SUCCEEDED"
    time.sleep(0.5)  # the cancelled jobs' messages reach the worker and are dropped there
    assert all(requests.get(f"{platform.url}/v1/jobs/{j}", timeout=10).json()["status"] == "CANCELLED"
               for j in waiting)
    unknown = requests.delete(f"{platform.url}/v1/models/nope/queue", timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_model"


def test_with_api_keys_retry_and_purge_touch_only_the_callers_jobs(make_platform: Callable[..., Platform]) -> None:
    platform = make_platform()
    platform.env.update(SM_API_KEYS=f"{digest(KEY_A)},{digest(KEY_B)}")
    platform.start("gateway")  # no worker: every job stays queued

    def call(method: str, path: str, key: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, platform.url + path, headers={"Authorization": f"Bearer {key}"},
                                timeout=10, **kwargs)

    mine = [call("POST", "/v1/models/iris/jobs", KEY_A, json={"features": [[1, 2, 3, 4]]}).json()["id"]
            for _ in range(2)]
    theirs = call("POST", "/v1/models/iris/jobs", KEY_B, json={"features": [[1, 2, 3, 4]]}).json()["id"]
    assert call("DELETE", "/v1/models/iris/queue", KEY_B).json() == {"cancelled": 1}
    assert [call("GET", f"/v1/jobs/{j}", KEY_A).json()["status"] for j in mine] == ["QUEUED", "QUEUED"]
    assert call("GET", f"/v1/jobs/{theirs}", KEY_B).json()["status"] == "CANCELLED"
    assert call("POST", f"/v1/jobs/{theirs}/retry", KEY_A).status_code == 404  # another key's job
    assert call("POST", f"/v1/jobs/{mine[0]}/retry", KEY_A).status_code == 409  # still queued
    retried = call("POST", f"/v1/jobs/{theirs}/retry", KEY_B)
    assert retried.status_code == 200 and retried.json()["status"] == "QUEUED"
    assert call("DELETE", "/v1/models/iris/queue", KEY_A).json() == {"cancelled": 2}
    assert call("GET", f"/v1/jobs/{theirs}", KEY_B).json()["status"] == "QUEUED"
