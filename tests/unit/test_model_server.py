"""The pure tier: job store and registry scripts (fakeredis), the minimal policy, config, the replica server."""

import time
from typing import Any

import fakeredis
import pytest

from model.server import create_app
from workers.config import ModelConfig, parse_models
from workers.jobs import Job, JobStatus, JobStore
from workers.registry import MovingAverage, Replica, ReplicaRegistry, ReplicaState


@pytest.fixture
def fake() -> fakeredis.FakeRedis:
    """An in-process Redis with Lua."""
    return fakeredis.FakeRedis(decode_responses=True)


def on_a_slot(fake: fakeredis.FakeRedis, job: Job, replica_id: str = "r1") -> None:
    """Give the job a slot on a READY replica: a job runs only on a slot it holds."""
    registry = ReplicaRegistry(fake)
    if registry.get(replica_id) is None:
        replica(registry, replica_id)
    assert registry.acquire("iris", concurrency=100, job_id=job.id) is not None


def test_job_lifecycle_moves_the_id_between_queued_and_running(fake: fakeredis.FakeRedis) -> None:
    store = JobStore(fake, retention=60)
    job = store.create(JobStore.new("iris", {"features": [[1, 2, 3, 4]]}))
    assert (store.queue_depth("iris"), store.in_flight("iris")) == (1, 0)
    assert not store.transition(job, JobStatus.RUNNING)  # no slot held: it cannot run
    on_a_slot(fake, job)
    assert store.transition(job, JobStatus.RUNNING)
    assert (store.queue_depth("iris"), store.in_flight("iris")) == (0, 1)
    assert store.transition(job, JobStatus.SUCCEEDED, output='{"y": 1}', finished_at=repr(time.time()))
    done = store.get(job.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED and done.output == {"y": 1}
    assert done.attempts == 1 and done.replica == "r1"
    assert (store.queue_depth("iris"), store.in_flight("iris")) == (0, 0)
    assert 0 < fake.ttl(f"sm:job:{job.id}") <= 60


@pytest.mark.parametrize(("path", "refused"), [
    ([JobStatus.CANCELLED], JobStatus.SUCCEEDED),  # a cancelled job's late result is discarded
    ([JobStatus.RUNNING, JobStatus.SUCCEEDED], JobStatus.FAILED),  # finished is final
    ([], JobStatus.SUCCEEDED),  # a queued job cannot succeed without running
    ([JobStatus.RUNNING], JobStatus.RUNNING),  # no second concurrent run
])
def test_guarded_transitions_refuse_stale_writers(fake: fakeredis.FakeRedis, path: list[JobStatus],
                                                  refused: JobStatus) -> None:
    store = JobStore(fake, retention=60)
    job = store.create(JobStore.new("iris", {}))
    on_a_slot(fake, job)
    for status in path:
        assert store.transition(job, status)
    before = store.get(job.id)
    assert not store.transition(job, refused, output="1")
    assert store.get(job.id) == before


def test_cancel_records_what_it_interrupted(fake: fakeredis.FakeRedis) -> None:
    store = JobStore(fake, retention=60)
    job = store.create(JobStore.new("iris", {}))
    on_a_slot(fake, job)
    store.transition(job, JobStatus.RUNNING)
    running = store.get(job.id)
    assert running is not None and store.cancel(running)
    cancelled = store.get(job.id)
    assert cancelled is not None and cancelled.cancelled_while is JobStatus.RUNNING
    assert store.wait(job.id, timeout=5) == cancelled  # finished: returns without blocking


def test_record_refuses_past_max_queued_and_discard_forgets(fake: fakeredis.FakeRedis) -> None:
    store = JobStore(fake, retention=60)
    first, second = JobStore.new("iris", {}), JobStore.new("iris", {})
    assert store.record(first, max_queued=1)
    assert not store.record(second, max_queued=1) and store.get(second.id) is None
    assert store.queue_depth("iris") == 1
    store.discard(first)
    assert store.get(first.id) is None and store.queue_depth("iris") == 0


def test_only_the_current_claim_commits(fake: fakeredis.FakeRedis) -> None:
    store = JobStore(fake, retention=60)
    job = store.create(JobStore.new("iris", {}))
    claimed = store.claim(job.id, "first", lease=5, worker="w1")
    assert isinstance(claimed, Job) and claimed.id == job.id and claimed.worker == "w1"
    assert store.claim(job.id, "second", lease=5, worker="w2") == "CLAIMED"  # a duplicate delivery
    registry = ReplicaRegistry(fake)
    replica(registry, "r1")
    assert registry.acquire("iris", concurrency=4, job_id=job.id, claim="second") is None  # not its claim
    assert registry.acquire("iris", concurrency=4, job_id=job.id, claim="first") is not None
    assert store.transition(job, JobStatus.RUNNING, "first")
    assert not store.transition(job, JobStatus.SUCCEEDED, "second", output="2")
    assert store.transition(job, JobStatus.SUCCEEDED, "first", output="1")
    done = store.get(job.id)
    assert done is not None and done.output == 1 and done.commits == 1 and done.worker == "w1"
    assert store.expired_leases(time.time() + 100) == []  # finished jobs hold no lease


def test_reaper_requeues_an_expired_lease_then_buries_after_the_last_attempt(fake: fakeredis.FakeRedis) -> None:
    store = JobStore(fake, retention=60)
    registry = ReplicaRegistry(fake)
    replica(registry, "a")
    job = store.create(JobStore.new("iris", {}))
    for attempt in (1, 2):
        assert isinstance(store.claim(job.id, f"t{attempt}", lease=5, worker="w"), Job)
        assert registry.acquire("iris", concurrency=1, job_id=job.id) is not None
        assert store.transition(job, JobStatus.RUNNING, f"t{attempt}")
        now = time.time()
        assert store.expire_lease(job, max_attempts=2, now=now) == "LIVE"
        assert store.renew({job.id: f"t{attempt}"}, lease=5) == 1
        assert store.renew({job.id: "someone else"}, lease=5) == 0
        assert store.expired_leases(now + 100) == [job.id]
        outcome = store.expire_lease(job, max_attempts=2, now=now + 100)
        assert outcome == ("REQUEUE" if attempt == 1 else "DEAD")
        assert [r.in_flight for r in registry.list("iris")] == [0]  # the lost worker's slot is free again
    dead = store.get(job.id)
    assert dead is not None and dead.status is JobStatus.FAILED and dead.error is not None
    assert dead.error.code == "worker_lost" and dead.attempts == 2 and dead.commits == 1
    assert store.dead_letters() == [job.id]
    assert not store.transition(job, JobStatus.SUCCEEDED, "t2", output="1")  # the lost worker's late result


def replica(registry: ReplicaRegistry, replica_id: str, state: ReplicaState = ReplicaState.READY) -> Replica:
    """Register a replica."""
    record = Replica(id=replica_id, model="iris", backend="process", endpoint=f"http://127.0.0.1/{replica_id}",
                     handle="1", state=state, started_at=time.time())
    registry.add(record)
    return record


def test_slots_go_to_the_least_loaded_ready_replica_and_never_past_concurrency(fake: fakeredis.FakeRedis) -> None:
    registry = ReplicaRegistry(fake)
    replica(registry, "a")
    replica(registry, "b")
    replica(registry, "c", ReplicaState.STARTING)
    slots = [registry.acquire("iris", concurrency=2, job_id=f"j{i}") for i in range(5)]
    taken = [s.replica_id for s in slots if s]
    assert sorted(taken) == ["a", "a", "b", "b"] and slots[4] is None
    assert slots[0] is not None
    assert [r.in_flight for r in registry.list("iris")] == [2, 2, 0]
    registry.release("iris", slots[0], "j0")
    assert registry.acquire("iris", concurrency=2, job_id="j5") == slots[0]


def test_a_busy_replica_is_never_drained(fake: fakeredis.FakeRedis) -> None:
    registry = ReplicaRegistry(fake)
    record = replica(registry, "a")
    slot = registry.acquire("iris", concurrency=1, job_id="j")
    assert slot is not None
    assert not registry.drain_if_idle(record, idle_before=time.time() + 100)
    registry.release("iris", slot, "j")
    assert not registry.drain_if_idle(record, idle_before=time.time() - 100)  # used just now
    assert registry.drain_if_idle(record, idle_before=time.time() + 1)
    assert registry.acquire("iris", concurrency=1, job_id="k") is None  # draining takes no new work


def test_moving_average_starts_at_the_first_sample(fake: fakeredis.FakeRedis) -> None:
    registry = ReplicaRegistry(fake, weight=0.5)
    model = ModelConfig(name="iris", cold_start_seed=7.0, service_time_seed=0.5)
    assert registry.averages(model) == {"cold_start": MovingAverage(7.0, 0), "service_time": MovingAverage(0.5, 0)}
    registry.record("iris", "cold_start", 2.0)
    registry.record("iris", "cold_start", 4.0)
    assert registry.averages(model)["cold_start"] == MovingAverage(3.0, 2)


def test_models_file_parses_with_defaults_and_rejects_unknown_fields() -> None:
    models = parse_models({"models": {"m": {"command": ["python", "x.py"], "concurrency": 2}}})
    assert models["m"].queue == "model.m" and models["m"].max_replicas == 1 and models["m"].concurrency == 2
    with pytest.raises(ValueError, match="concurency"):
        parse_models({"models": {"m": {"concurency": 2}}})


class SlowModel:
    """A model whose setup waits for the test."""

    def setup(self) -> None:
        time.sleep(0.3)

    def predict(self, payload: Any) -> Any:
        if payload.get("crash"):
            raise RuntimeError("boom")
        if "x" not in payload:
            raise ValueError("x is required")
        return {"y": payload["x"] * 2}


def test_replica_server_contract() -> None:
    app = create_app("tests.test_units:SlowModel").test_client()
    assert app.get("/ok").status_code == 503
    assert app.post("/", json={"x": 1}).status_code == 503
    deadline = time.monotonic() + 5
    while app.get("/ok").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app.get("/ok").json == {"status": "READY", "error": None}
    assert app.post("/", json={"x": 21}).json == {"y": 42}
    bad = app.post("/", json={"z": 1})
    assert bad.status_code == 422 and bad.json["error"] == {"code": "bad_input", "message": "x is required"}
    assert app.post("/", data="{", content_type="application/json").status_code == 400
    crash = app.post("/", json={"crash": True})
    assert crash.status_code == 500 and crash.json["error"]["message"] == "RuntimeError: boom"


class BrokenModel:
    """A model whose setup fails."""

    def setup(self) -> None:
        raise OSError("weights missing")


def test_replica_reports_setup_failure() -> None:
    app = create_app("tests.test_units:BrokenModel").test_client()
    deadline = time.monotonic() + 5
    while app.get("/ok").json["status"] == "STARTING" and time.monotonic() < deadline:
        time.sleep(0.01)
    answer = app.get("/ok")
    assert answer.status_code == 503
    assert answer.json == {"status": "SETUP_FAILED", "error": "OSError: weights missing"}


def test_example_model_validates_its_input() -> None:
    from model.model import parse_features

    assert parse_features({"features": [[1, 2, 3, 4.5]]}) == [[1.0, 2.0, 3.0, 4.5]]
    for bad in [{}, {"features": []}, {"features": [[1, 2]]}, {"features": [[1, 2, 3, "4"]]},
                {"features": [[True, 2, 3, 4]]}, [1, 2]]:
        with pytest.raises(ValueError):
            parse_features(bad)
