"""The job scripts on a real Redis at its memory bound (noeviction, as the platform runs it)."""

from collections.abc import Callable, Iterator

import pytest
import redis

from workers.store import Store
from workers.store.records import JobStatus, Outcome, Started

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
    leader = store.lease(30).hold()
    assert leader
    assert store.replicas.add(leader, "r1", "m", "fake")
    assert store.replicas.launched(leader, "r1", "http://127.0.0.1/r1", "r1")
    assert store.replicas.ready(leader, "r1", concurrency=1) is not None
    job = store.jobs.submit(store.jobs.new("m", {"x": 1}))
    assert not isinstance(job, str)
    started = store.jobs.start(job.id, token, lease=30, worker="w", concurrency=1, fail_on_start_failure=True)
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
