"""The job options in the scripts, on a real Redis: idempotency keys (submit.lua, withdraw.lua), deadlines
(submit, start, expire, resubmit), priorities (submit, start, park, dispatch, observe)."""

import pytest
import redis

from tests.integration.conftest import Clock
from workers.job import Job, JobOptions, JobStatus, Outcome, Priority
from workers.store import Store, keys
from workers.store.jobs import Existing, Idempotency, Refusal
from workers.store.records import Started

pytestmark = pytest.mark.integration


@pytest.fixture
def timed(client: "redis.Redis", clock: Clock) -> Store:
    """The store on the test's clock."""
    return Store.of(client, retention=60, clock=clock)


def ready_replica(store: Store, replica_id: str = "r1", concurrency: int = 1) -> None:
    """A READY replica of model m."""
    token = store.leadership(30).hold() or ""
    assert store.replicas.add(token, replica_id, "m", "fake")
    assert store.replicas.launched(token, replica_id, f"http://127.0.0.1/{replica_id}", replica_id)
    assert store.replicas.ready(token, replica_id, concurrency=concurrency) is not None


def submitted(store: Store, options: JobOptions | None = None, owner: str = "", aging: float = 60) -> Job:
    """A recorded job of model m."""
    job = store.jobs.submit(store.jobs.new("m", {"x": 1}, owner, options=options), aging=aging)
    assert isinstance(job, Job)
    return job


def once(key: str, request: object) -> Idempotency:
    """An idempotency key for ``request``."""
    return Idempotency(key, Idempotency.digest_of(request), 60)


def test_one_key_makes_one_job_per_owner_and_another_request_is_a_conflict(store: Store, client: "redis.Redis") -> None:
    first = store.jobs.submit(store.jobs.new("m", {"x": 1}, "a"), idempotency=once("k", {"x": 1}))
    assert isinstance(first, Job)
    messages = client.llen(keys.celery_queue("m"))
    again = store.jobs.submit(store.jobs.new("m", {"x": 1}, "a"), idempotency=once("k", {"x": 1}))
    assert isinstance(again, Existing) and again.job.id == first.id and again.job.status is JobStatus.QUEUED
    assert client.llen(keys.celery_queue("m")) == messages  # the job was not sent again
    other = store.jobs.submit(store.jobs.new("m", {"x": 2}, "a"), idempotency=once("k", {"x": 2}))
    assert other is Refusal.CONFLICT
    theirs = store.jobs.submit(store.jobs.new("m", {"x": 2}, "b"), idempotency=once("k", {"x": 2}))
    assert isinstance(theirs, Job) and theirs.id != first.id  # another owner's key is another key
    assert store.replicas.snapshot("m", {}).waiting == 2
    assert 0 < client.ttl(keys.idempotency("a", "k")) <= 60


def test_a_key_whose_job_is_gone_or_withdrawn_makes_a_new_job(store: Store, client: "redis.Redis") -> None:
    job = store.jobs.new("m", {"x": 1})
    assert isinstance(store.jobs.submit(job, idempotency=once("k", {"x": 1})), Job)
    assert store.jobs.withdraw(job) == "WITHDRAWN"  # a submit whose answer was lost, taken back: its key goes too
    assert not client.exists(keys.idempotency("", "k"))
    made = store.jobs.submit(store.jobs.new("m", {"x": 1}), idempotency=once("k", {"x": 1}))
    assert isinstance(made, Job)
    client.delete(keys.job(made.id))  # expired after its retention
    later = store.jobs.submit(store.jobs.new("m", {"x": 1}), idempotency=once("k", {"x": 1}))
    assert isinstance(later, Job) and later.id != made.id


def test_a_job_a_replay_answered_is_not_withdrawn(store: Store, client: "redis.Redis") -> None:
    job = store.jobs.new("m", {"x": 1})
    assert isinstance(store.jobs.submit(job, idempotency=once("k", {"x": 1})), Job)
    replay = store.jobs.submit(store.jobs.new("m", {"x": 1}), idempotency=once("k", {"x": 1}))
    assert isinstance(replay, Existing) and replay.job.id == job.id  # another caller now holds its id
    assert store.jobs.withdraw(job) == "QUEUED"  # so its first submit's lost answer does not take it back
    assert client.exists(keys.job(job.id)) and client.exists(keys.idempotency("", "k"))


def test_a_submit_run_again_after_its_answer_was_lost_is_still_its_own_job(store: Store) -> None:
    job = store.jobs.new("m", {"x": 1})
    made = store.jobs.submit(job, idempotency=once("k", {"x": 1}))
    assert isinstance(made, Job)
    assert store.jobs.submit(job, idempotency=once("k", {"x": 1})) == made  # the same id: not a replay


def test_a_job_past_its_ttl_never_starts_and_the_janitor_fails_the_overdue(timed: Store, clock: Clock,
                                                                            client: "redis.Redis") -> None:
    ready_replica(timed)
    late = submitted(timed, JobOptions(ttl=5))
    parked = submitted(timed, JobOptions(ttl=5), owner="a")
    forever = submitted(timed)
    soon = submitted(timed, JobOptions(ttl=5))
    assert isinstance(timed.jobs.start(soon.id, "t0", 5, "w", True), Started)  # started in time: no deadline
    assert timed.jobs.start(parked.id, "t1", 5, "w", True) == "PARKED"  # the one slot is busy
    clock.now += 4.9
    assert timed.jobs.expire_overdue() == []
    clock.now += 0.1
    assert timed.jobs.start(late.id, "t2", 5, "w", True) is JobStatus.FAILED  # its message came too late
    failed = timed.jobs.get(late.id)
    assert failed is not None and failed.error is not None and failed.error.code == "expired"
    assert [(e.job_id, e.owner) for e in timed.jobs.expire_overdue()] == [(parked.id, "a")]  # parked: the janitor
    assert timed.jobs.get(parked.id).error.code == "expired"  # type: ignore[union-attr]
    assert timed.jobs.get(forever.id).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert timed.jobs.get(soon.id).status is JobStatus.RUNNING  # type: ignore[union-attr]
    assert timed.replicas.snapshot("m", {}).waiting == 1 and client.zcard(keys.DEADLINES) == 0
    assert timed.jobs.get(late.id).options == JobOptions(ttl=5)  # type: ignore[union-attr]


def test_an_expired_job_retried_has_its_ttl_afresh(timed: Store, clock: Clock) -> None:
    job = submitted(timed, JobOptions(ttl=2, execution_timeout=1.5))
    clock.now += 3
    assert len(timed.jobs.expire_overdue()) == 1
    assert timed.jobs.resubmit(job.id) == "OK"
    clock.now += 1.9
    assert timed.jobs.expire_overdue() == []
    ready_replica(timed)
    started = timed.jobs.start(job.id, "t", 5, "w", True)
    assert isinstance(started, Started) and started.job.options.execution_timeout == 1.5


HIGH, LOW = JobOptions(priority=Priority.HIGH), JobOptions(priority=Priority.LOW)
OK = Outcome(JobStatus.SUCCEEDED, output='{"y": 1}', service_time=0.01)


def run(store: Store, job: Job, token: str) -> Started:
    """The job started."""
    started = store.jobs.start(job.id, token, 5, "w", True)
    assert isinstance(started, Started), started
    return started


def test_a_freed_slot_goes_to_the_high_job_before_older_normal_ones_and_a_low_one_last(timed: Store,
                                                                                       clock: Clock) -> None:
    ready_replica(timed)
    first = submitted(timed)
    run(timed, first, "t0")
    low = submitted(timed, LOW)
    normal = []
    for _ in range(2):
        clock.now += 1
        normal.append(submitted(timed))
    clock.now += 30
    high = submitted(timed, HIGH)
    for job in (low, *normal, high):
        assert timed.jobs.start(job.id, "p", 5, "w", True) == "PARKED"  # the one slot is busy
    order, token = [], "t0"
    for job in (first, high, *normal, low):  # each freed slot sends the best-ranked parked job: it runs, even when
        # the others' messages (duplicates) come first
        assert timed.jobs.finish(job.id, token, OK) == "OK", (job, token, order)
        waiting = [j for j in (high, *normal, low) if j.id not in order and j.id != job.id]
        if not waiting:
            break
        starts = {j.id: timed.jobs.start(j.id, f"s{j.id}", 5, "w", True) for j in reversed(waiting)}
        running = [job_id for job_id, found in starts.items() if isinstance(found, Started)]
        assert len(running) == 1, starts
        order.append(running[0])
        token = f"s{running[0]}"
    assert order == [high.id, normal[0].id, normal[1].id, low.id]


def test_a_normal_job_that_waited_past_the_aging_goes_before_a_high_one(timed: Store, clock: Clock) -> None:
    ready_replica(timed)
    first = submitted(timed, aging=10)
    run(timed, first, "t0")
    old = submitted(timed, aging=10)
    clock.now += 11
    high = submitted(timed, HIGH, aging=10)
    for job in (high, old):
        assert timed.jobs.start(job.id, "p", 5, "w", True) == "PARKED"
    assert timed.jobs.finish(first.id, "t0", OK) == "OK"
    assert isinstance(timed.jobs.start(old.id, "t1", 5, "w", True), Started)


def test_a_sent_job_outranked_by_jobs_sent_for_the_free_slots_parks(timed: Store) -> None:
    normal = submitted(timed)
    high = submitted(timed, HIGH)  # both messages out, no replica yet
    ready_replica(timed)  # one free slot; the normal job's message comes first
    assert timed.jobs.start(normal.id, "t1", 5, "w", True) == "PARKED"
    assert isinstance(timed.jobs.start(high.id, "t2", 5, "w", True), Started)
    assert timed.jobs.finish(high.id, "t2", OK) == "OK"  # sends the normal job to the freed slot
    assert isinstance(timed.jobs.start(normal.id, "t3", 5, "w", True), Started)


def test_the_snapshot_counts_the_waiting_low_jobs(timed: Store) -> None:
    low = [submitted(timed, LOW) for _ in range(2)]
    submitted(timed)
    assert timed.replicas.snapshot("m", {}).low == 2
    assert timed.jobs.cancel(low[0].id) == "OK"
    ready_replica(timed, concurrency=2)  # a slot for the normal job sent before it, and one for it
    assert isinstance(timed.jobs.start(low[1].id, "t", 5, "w", True), Started)
    found = timed.replicas.snapshot("m", {})
    assert found.low == 0 and found.waiting == 1
    assert timed.jobs.get(low[1].id).options.priority is Priority.LOW  # type: ignore[union-attr]


def test_a_waiting_job_says_what_it_waits_for(timed: Store, clock: Clock) -> None:
    job = submitted(timed)
    clock.now += 2
    sent = timed.jobs.waiting(job.id)
    assert sent is not None and (sent.reason, sent.age, sent.replica) == ("sent", 2, "")
    assert timed.jobs.start(job.id, "t", 5, "w", True) == "PARKED"
    parked = timed.jobs.waiting(job.id)
    assert parked is not None and (parked.reason, parked.since, parked.age) == ("parked", clock.now, 0)
    token = timed.leadership(30).hold() or ""
    assert timed.replicas.add(token, "r1", "m", "fake")
    assert timed.replicas.note(token, "r1", ["loading", "shard 2/3"])
    clock.now += 1
    starting = timed.jobs.waiting(job.id)
    assert starting is not None and (starting.reason, starting.replica, starting.stage, starting.age) == (
        "replica_starting", "r1", "shard 2/3", 1)
    assert timed.replicas.launched(token, "r1", "http://127.0.0.1/r1", "r1")
    assert timed.replicas.ready(token, "r1", concurrency=1) is not None  # READY: it waits for a slot there
    assert timed.jobs.waiting(job.id).reason in ("parked", "sent")  # type: ignore[union-attr]
    run(timed, job, "t2")
    assert timed.jobs.waiting(job.id) is None
