"""The job scripts on a real Redis at its memory bound (noeviction, as the platform runs it)."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from workers.config import Settings
from workers.job import JobStatus, Outcome
from workers.store import Store
from workers.store.records import Started

pytestmark = pytest.mark.integration
OK = Outcome(JobStatus.SUCCEEDED, output='{"y": 1}', service_time=0.01)


@pytest.fixture
def fill(client: "redis.Redis") -> Iterator[Callable[[], None]]:
    """Puts Redis past its memory bound when called (restored afterwards: the server is the session's)."""
    before = client.config_get("maxmemory")["maxmemory"]
    policy = client.config_get("maxmemory-policy")["maxmemory-policy"]

    def bound() -> None:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)  # every byte in use is past it

    try:
        yield bound
    finally:
        client.config_set("maxmemory", before)
        client.config_set("maxmemory-policy", policy)


def running_job(store: Store, token: str) -> Started:
    """A job RUNNING on a READY replica under ``token``."""
    leader = store.leadership(30).hold()
    assert leader
    assert store.replicas.add(leader, "r1", "m", "fake")
    assert store.replicas.launched(leader, "r1", "http://127.0.0.1/r1", "r1")
    assert store.replicas.ready(leader, "r1", concurrency=1) is not None
    job = store.jobs.submit(store.jobs.new("m", {"x": 1}))
    assert not isinstance(job, str)
    started = store.jobs.start(job.id, token, lease=30, worker="w", fail_on_start_failure=True)
    assert isinstance(started, Started)
    return started


def test_review3_a_full_store_still_renews_the_leases_of_running_jobs(store: Store,
                                                                     fill: Callable[[], None]) -> None:
    """With Redis at its bound a running job's lease must still be renewed: else the reaper takes the job from
    its healthy worker and the replica's answer is thrown away (the job runs again, or fails worker_lost)."""
    started = running_job(store, "t")
    fill()
    assert store.jobs.renew([(started.job.id, "t")], lease=30) == 1
    assert store.jobs.finish(started.job.id, "t", OK) == "OK"


def test_review3_a_full_store_still_refuses_a_new_job(store: Store, fill: Callable[[], None]) -> None:
    """Only the renewals run past the bound: a submit there is refused (the gateway answers 507)."""
    fill()
    with pytest.raises(redis.OutOfMemoryError):
        store.jobs.submit(store.jobs.new("m", {"x": 1}))


def test_review3_a_full_store_still_answers_a_keys_reads_under_a_rate_limit(tmp_path: Path, redis_url: str,
                                                                           client: "redis.Redis",
                                                                           fill: Callable[[], None]) -> None:
    """At the memory bound only new jobs are refused (507): a client still reads its jobs and the models, also
    when SM_RATE_LIMIT counts its requests (a counter is a write)."""
    from gateway.app import create_app
    from gateway.auth import digest

    models = tmp_path / "models.toml"
    models.write_text('[models.m]\ncommand = ["serve"]\n')
    gateway = create_app(Settings(redis_url=redis_url, models_file=models, api_keys=digest("k"),
                                  rate_limit=100)).test_client()
    key = {"Authorization": "Bearer k"}
    submitted = gateway.post("/v1/models/m/jobs", json={"x": 1}, headers=key)
    assert submitted.status_code == 202
    fill()
    assert gateway.post("/v1/models/m/jobs", json={"x": 1}, headers=key).status_code == 507
    read = gateway.get(f"/v1/jobs/{submitted.json['id']}", headers=key)
    assert read.status_code == 200, read.json
    assert gateway.get("/v1/models", headers=key).status_code == 200
    assert gateway.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
