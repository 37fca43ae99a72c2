"""The second review's holes in how the autoscaler treats a replica that failed under a job (the unit tier)."""

import fakeredis
import pytest

from tests.unit.test_autoscaler import MODEL, Clock, FakeBackend, scaler, submit
from workers.scaling.autoscaler import FAILED_GRACE
from workers.store import Store
from workers.store.records import ReplicaState, Started

pytestmark = pytest.mark.unit


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> Store:
    return Store.of(fakeredis.FakeRedis(decode_responses=True), retention=60, clock=clock)


def test_review2_hole04_a_failed_replica_is_stopped_only_once_its_other_jobs_let_go(store: Store,
                                                                                    clock: Clock) -> None:
    backend = FakeBackend()
    two_slots = MODEL.scaling.model_copy(update={"concurrency": 2, "max_replicas": 1})
    autoscaler = scaler(store, backend, m=MODEL.model_copy(update={"scaling": two_slots}))
    token = store.leadership(3).hold() or ""
    first, neighbour = submit(store, 2)
    autoscaler.lead(token, full=True)
    [replica] = store.replicas.of("m")
    started = store.jobs.start(first, "a", 30, "w", True), store.jobs.start(neighbour, "b", 30, "w", True)
    assert all(isinstance(s, Started) and s.slot.replica_id == replica.id for s in started)
    assert store.jobs.retry(first, "a", replica.id, "no answer to a readiness probe", True, 3, 30, "w") == "PARKED"
    assert store.replicas.of("m")[0].state is ReplicaState.FAILED

    autoscaler.lead(token, full=True)
    assert backend.stops == []  # the neighbour's call may still end well
    clock.advance(30 + FAILED_GRACE + 0.1)  # the model's request timeout (30 s) and the grace have passed
    autoscaler.lead(token, full=True)
    assert backend.stops == [replica.handle]


def test_review2_a_failed_replica_holding_no_other_job_is_stopped_at_once(store: Store) -> None:
    backend = FakeBackend()
    autoscaler = scaler(store, backend)
    token = store.leadership(3).hold() or ""
    [job_id] = submit(store, 1)
    autoscaler.lead(token, full=True)
    [replica] = store.replicas.of("m")
    assert isinstance(store.jobs.start(job_id, "a", 30, "w", True), Started)
    store.jobs.retry(job_id, "a", replica.id, "no answer to a readiness probe", True, 3, 30, "w")
    autoscaler.lead(token, full=True)
    assert replica.handle in backend.stops


def test_review2_hole04_a_call_that_failed_on_a_live_replica_leaves_it_in_routing(store: Store) -> None:
    autoscaler = scaler(store, FakeBackend())
    token = store.leadership(3).hold() or ""
    [job_id] = submit(store, 1)
    autoscaler.lead(token, full=True)
    [replica] = store.replicas.of("m")
    assert isinstance(store.jobs.start(job_id, "a", 30, "w", True), Started)
    assert store.jobs.retry(job_id, "a", replica.id, "connection reset", False, 3, 30, "w") == "PARKED"
    assert store.replicas.of("m")[0].state is ReplicaState.READY
