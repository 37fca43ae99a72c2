"""A replica's record carries the concurrency it was started with, and its slots are counted from it."""

import fakeredis
import pytest

from workers.store import Store
from workers.store.records import Started

pytestmark = pytest.mark.unit


def test_a_replicas_slots_are_the_concurrency_it_was_started_with_whatever_a_worker_says() -> None:
    store = Store.of(fakeredis.FakeRedis(decode_responses=True), retention=60)
    token = store.leadership(30).hold() or ""
    assert store.replicas.add(token, "r1", "m", "process")
    assert store.replicas.launched(token, "r1", "http://10.0.0.2:9000", "1")
    assert store.replicas.ready(token, "r1", concurrency=2) is not None
    assert store.replicas.of("m")[0].concurrency == 2
    jobs = [store.jobs.submit(store.jobs.new("m", {"i": i}), 0) for i in range(3)]
    started = [store.jobs.start(job.id, f"t{job.id}", 30, "w", False) for job in jobs if job is not None]
    assert [isinstance(s, Started) for s in started] == [True, True, False]  # a worker told 5 gets 2 slots
    assert started[2] == "PARKED"
