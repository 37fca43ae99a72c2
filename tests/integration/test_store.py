"""The job store and replica registry on a real Redis server: every Lua script, the claims, slots and parking,
fencing of leader writes, and the Celery message the scripts push."""

import base64
import json

import pytest
import redis
from celery import Celery

from bench import replicas
from workers.job import Job, JobError, JobStatus, Outcome
from workers.store import Store, keys
from workers.store.envelope import TASK_NAME, template
from workers.store.jobs import Refusal
from workers.store.records import ReplicaState, Started

pytestmark = pytest.mark.integration
OK = Outcome(JobStatus.SUCCEEDED, output='{"y": 1}', service_time=0.01)


def leader(store: Store) -> str:
    """Take the autoscaler lease; its token."""
    token = store.leadership(30).hold()
    assert token
    return token


def ready_replica(store: Store, replica_id: str = "r1", model: str = "m", token: str = "") -> str:
    """A READY replica of ``model``."""
    token = token or leader(store)
    assert store.replicas.add(token, replica_id, model, "fake")
    assert store.replicas.launched(token, replica_id, f"http://127.0.0.1/{replica_id}", replica_id)
    assert store.replicas.ready(token, replica_id, concurrency=1) is not None
    return token


def submit(store: Store, model: str = "m", cap: int = 0) -> Job:
    """A recorded job."""
    job = store.jobs.submit(store.jobs.new(model, {"x": 1}), cap)
    assert job is not None
    return job


def start(store: Store, job: Job, token: str) -> Started | str:
    """A task starts the job under ``token``."""
    return store.jobs.start(job.id, token, lease=5, worker="w", fail_on_start_failure=True)


def in_flight(store: Store, model: str = "m") -> list[int]:
    """The replicas' in-flight counts."""
    return [r.in_flight for r in store.replicas.of(model)]


def test_a_job_runs_on_a_slot_and_commits_once(store: Store, client: "redis.Redis") -> None:
    ready_replica(store)
    job = submit(store)
    assert client.llen(keys.celery_queue("m")) == 1 and job.created_at > 0
    started = start(store, job, "t")
    assert isinstance(started, Started) and started.slot.replica_id == "r1" and started.job.attempts == 1
    assert store.jobs.finish(job.id, "t", OK) == "OK"
    assert store.jobs.finish(job.id, "t", OK) == "SUCCEEDED"  # the same call again changes nothing
    done = store.jobs.get(job.id)
    assert done is not None and done.status is JobStatus.SUCCEEDED and done.output == {"y": 1} and done.commits == 1
    assert done.created_at <= done.started_at <= done.finished_at  # type: ignore[operator]
    assert in_flight(store) == [0] and 0 < client.ttl(keys.job(job.id)) <= 60
    snapshot = store.replicas.snapshot("m", {"service_time": 9.0, "cold_start": 9.0})
    assert snapshot.averages["service_time"].seconds == pytest.approx(0.01) and snapshot.waiting == 0


def test_only_the_current_claim_starts_and_commits(store: Store) -> None:
    ready_replica(store)
    job = submit(store)
    assert isinstance(start(store, job, "first"), Started)
    assert start(store, job, "second") == "RUNNING"  # a duplicate delivery
    assert store.jobs.finish(job.id, "second", OK) == "STALE"
    assert store.jobs.finish(job.id, "first", OK) == "OK"


def test_no_free_slot_parks_the_job_holding_nothing_and_a_freed_slot_sends_it(store: Store,
                                                                               client: "redis.Redis") -> None:
    ready_replica(store)
    first, second = submit(store), submit(store)
    client.delete(keys.celery_queue("m"))
    assert isinstance(start(store, first, "a"), Started)
    assert start(store, second, "b") == "PARKED"
    parked = store.jobs.get(second.id)
    assert parked is not None and parked.status is JobStatus.QUEUED and parked.attempts == 0
    assert client.hget(keys.job(second.id), "claim") is None and client.zscore(keys.LEASES, second.id) is None
    assert store.replicas.snapshot("m", {}).parked == 1
    assert store.jobs.finish(first.id, "a", OK) == "OK"  # the slot frees: the parked job is sent again
    [message] = client.lrange(keys.celery_queue("m"), 0, -1)
    assert json.loads(message)["headers"]["id"] == second.id
    assert isinstance(start(store, second, "c"), Started)


def test_hole01_a_cancelled_running_job_gives_its_slot_back_even_when_its_worker_died(store: Store) -> None:
    ready_replica(store)
    job = submit(store)
    assert isinstance(start(store, job, "lost worker"), Started)
    assert store.jobs.cancel(job.id) == "OK"
    assert in_flight(store) == [1]  # its worker may still be calling the replica
    assert store.jobs.renew([(job.id, "lost worker")], lease=5) == 1  # a live worker keeps the slot until it returns
    store.client.zadd(keys.LEASES, {job.id: 0})  # ... this one died: its lease runs out
    [reaped] = store.jobs.reap({"m": 3})
    assert reaped.outcome == "FREED" and in_flight(store) == [0]
    cancelled = store.jobs.get(job.id)
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED


def test_a_callers_cancel_is_one_script_call_answering_its_own_job_only_without_the_input(store: Store) -> None:
    mine = store.jobs.submit(store.jobs.new("m", {"x": 1}, "alice"))
    assert isinstance(mine, Job)
    assert store.jobs.cancel_own(mine.id, "bob") == ("MISSING", None)  # another owner's: nothing said, nothing done
    assert store.jobs.cancel_own("0" * 32, "alice") == ("MISSING", None)
    reads = [int(store.client.info("stats")["total_reads_processed"]) for _ in range(2)]  # one read per INFO
    found, job = store.jobs.cancel_own(mine.id, "alice")
    assert int(store.client.info("stats")["total_reads_processed"]) - reads[1] == 2  # the cancel's read, this INFO's
    assert found == "OK" and job is not None and job == store.jobs.get(mine.id)  # as a get reads it
    assert job.status is JobStatus.CANCELLED and job.cancelled_while is JobStatus.QUEUED and job.owner == "alice"
    again, same = store.jobs.cancel_own(mine.id, "alice")
    assert again is JobStatus.CANCELLED and same == job  # already finished: its status and the job, unchanged


def test_a_job_cancelled_while_it_runs_keeps_its_record_until_its_slot_is_back(store: Store) -> None:
    ready_replica(store)
    job = submit(store)
    assert isinstance(start(store, job, "t"), Started)
    assert store.jobs.cancel(job.id) == "OK"
    assert store.client.ttl(keys.job(job.id)) == -1  # no expiry yet: the record names the slot to give back
    assert store.jobs.finish(job.id, "t", OK) == "CANCELLED"
    assert 0 < store.client.ttl(keys.job(job.id)) <= 60 and in_flight(store) == [0]


def test_a_job_that_ran_once_is_not_withdrawn(store: Store) -> None:
    token = ready_replica(store)
    job = submit(store)
    assert isinstance(start(store, job, "t"), Started)
    assert store.jobs.retry(job.id, "t", "r1", "connection refused", True, 3, 5, "w") == "PARKED"
    assert store.replicas.remove(token, store.replicas.of("m")[0])
    assert store.jobs.withdraw(job) == "QUEUED"  # its input reached a replica once: it stays, and runs again


def test_a_live_worker_gives_the_slot_of_its_cancelled_job_back_when_its_call_returns(store: Store) -> None:
    ready_replica(store)
    job = submit(store)
    assert isinstance(start(store, job, "t"), Started)
    assert store.jobs.cancel(job.id) == "OK"
    assert store.jobs.finish(job.id, "t", OK) == "CANCELLED"  # its result is refused
    assert in_flight(store) == [0] and store.client.zscore(keys.LEASES, job.id) is None


def test_hole06_a_stale_workers_late_writes_never_free_the_new_holders_slot(store: Store) -> None:
    ready_replica(store)
    job = submit(store)
    assert isinstance(start(store, job, "stale"), Started)
    store.client.zadd(keys.LEASES, {job.id: 0})
    assert [r.outcome for r in store.jobs.reap({"m": 3})] == ["REQUEUED"]
    store.jobs.dispatch("m")
    assert isinstance(start(store, job, "new"), Started)
    assert store.jobs.finish(job.id, "stale", OK) == "STALE"
    assert store.jobs.retry(job.id, "stale", "r1", "timeout", True, 3, 5, "w") == "STALE"
    assert in_flight(store) == [1]  # the new holder's slot is still held
    assert store.jobs.finish(job.id, "new", OK) == "OK" and in_flight(store) == [0]


def test_hole06_a_task_that_cannot_run_its_job_keeps_no_claim(store: Store) -> None:
    job = submit(store)  # no replica at all
    assert start(store, job, "a") == "PARKED"
    assert store.client.hget(keys.job(job.id), "claim") is None
    ready_replica(store)
    assert isinstance(start(store, job, "b"), Started)  # at once: nothing to wait out


def free_by_replica(store: Store, model: str = "m") -> dict[str, float]:
    """The READY replicas' free slots negated, from their records: what the index must say."""
    return {r.id: float(r.in_flight - (r.concurrency or 0)) for r in store.replicas.of(model)
            if r.state is ReplicaState.READY}


def assert_indexed(store: Store, model: str = "m") -> None:
    """The index of READY replicas (all, and by host) agrees with the records."""
    expected = free_by_replica(store, model)
    assert dict(store.client.zrange(keys.ready(model), 0, -1, withscores=True)) == expected
    hosts = {r.id: store.client.hget(keys.replica(r.id), "host") or "" for r in store.replicas.of(model)}
    for host in set(hosts.values()):
        here = {rid: free for rid, free in expected.items() if hosts[rid] == host}
        assert dict(store.client.zrange(keys.ready(model, host), 0, -1, withscores=True)) == here


def test_the_ready_index_follows_every_state_and_slot_of_a_replica(store: Store) -> None:
    token = ready_replica(store, "r1")
    assert store.replicas.add(token, "r2", "m", "fake")
    assert_indexed(store)  # STARTING: not in it
    assert store.replicas.launched(token, "r2", "http://127.0.0.1/r2", "r2")
    assert store.replicas.ready(token, "r2", concurrency=3) is not None
    assert_indexed(store)
    jobs = [submit(store) for _ in range(5)]
    started = [start(store, job, f"t{n}") for n, job in enumerate(jobs)]
    assert [s.slot.replica_id for s in started if isinstance(s, Started)] == ["r2", "r2", "r1", "r2"]  # most free
    assert started[4] == "PARKED"
    assert_indexed(store)
    assert store.jobs.finish(jobs[0].id, "t0", OK) == "OK"  # r2's slot goes to the parked job
    assert_indexed(store)
    moved = store.jobs.retry(jobs[2].id, "t2", "r1", "connection refused", True, 3, 5, "w")  # r1 leaves routing
    assert isinstance(moved, Started) or moved == "PARKED"
    assert_indexed(store)
    assert store.replicas.failed(token, "r2", "exited while ready")
    assert_indexed(store)
    assert free_by_replica(store) == {}
    for replica in store.replicas.of("m"):
        assert store.replicas.remove(token, replica)
    assert_indexed(store)
    assert store.client.exists(keys.ready("m"), keys.ready("m", "")) == 0


def test_a_new_leader_indexes_replicas_recorded_before_the_index(store: Store) -> None:
    token = ready_replica(store, "r1")
    ready_replica(store, "r2", token=token)
    assert store.replicas.drain_if_idle(token, "r2", idle_for=0)
    store.client.delete(keys.ready("m"), keys.ready("m", ""))  # records written by a version without it
    assert start(store, submit(store), "t") == "PARKED"
    assert store.replicas.reindex(token)
    assert_indexed(store)
    assert list(free_by_replica(store)) == ["r1"]  # READY only: the DRAINING one is not
    assert not store.replicas.reindex("not the leader")
    assert store.jobs.dispatch("m") == 1  # the parked job is sent to the slot now known


def test_a_new_leader_drops_an_index_entry_whose_replica_record_is_gone(store: Store) -> None:
    token = ready_replica(store, "r1")
    ready_replica(store, "r2", token=token)
    store.client.delete(keys.replica("r2"))  # a record lost with its entry left (removed by hand, say)
    assert store.replicas.reindex(token)
    assert store.client.zrange(keys.ready("m"), 0, -1) == ["r1"]


def test_a_start_and_a_finish_cost_as_many_redis_commands_with_50_ready_replicas_as_with_1(
        client: redis.Redis) -> None:
    few, many = (replicas.one_round(client, count, jobs=20)["commands"] for count in (1, 50))
    assert few == many


def test_a_start_never_routes_to_an_index_entry_whose_replica_is_not_ready(store: Store) -> None:
    token = ready_replica(store, "r1")
    ready_replica(store, "r2", token=token)
    assert store.replicas.drain_if_idle(token, "r2", idle_for=0)
    store.client.zadd(keys.ready("m"), {"r2": -100, "gone": -50})  # entries no script writes: DRAINING, no record
    store.client.zadd(keys.ready("m", "h1"), {"gone": -200})
    started = store.jobs.start(submit(store).id, "t", lease=5, worker="w", fail_on_start_failure=True, host="h1")
    assert isinstance(started, Started) and started.slot.replica_id == "r1"
    assert store.client.zrange(keys.ready("m"), 0, -1) == ["r1"]
    assert store.client.exists(keys.ready("m", "h1")) == 0
    assert_indexed(store)


def test_a_replica_that_fails_under_a_job_leaves_routing_and_the_job_runs_elsewhere(store: Store) -> None:
    token = ready_replica(store, "r1")
    ready_replica(store, "r2", token=token)
    job = submit(store)
    started = start(store, job, "t")
    assert isinstance(started, Started)
    first = started.slot.replica_id
    moved = store.jobs.retry(job.id, "t", first, "connection refused", True, 2, 5, "w")
    assert isinstance(moved, Started) and moved.slot.replica_id != first
    again = store.jobs.retry(job.id, "t", first, "connection refused", True, 2, 5, "w")  # the same call, run again
    assert isinstance(again, Started) and again.slot == moved.slot and again.job.attempts == 2
    states = {r.id: r.state for r in store.replicas.of("m")}
    assert states[first] is ReplicaState.FAILED and states[moved.slot.replica_id] is ReplicaState.READY
    assert store.jobs.retry(job.id, "t", moved.slot.replica_id, "timeout", True, 2, 5, "w") == "FAILED"  # no more
    failed = store.jobs.get(job.id)
    assert failed is not None and failed.error is not None and failed.error.code == "replica_failed"
    assert job.id in store.jobs.dead_letters()


def test_the_reaper_requeues_then_buries_a_job_whose_workers_are_lost(store: Store) -> None:
    ready_replica(store)
    job = submit(store)
    for attempt, outcome in ((1, "REQUEUED"), (2, "DEAD")):
        store.jobs.dispatch("m")
        assert isinstance(start(store, job, f"t{attempt}"), Started)
        assert store.jobs.reap({"m": 2}) == []  # its lease is live
        store.client.zadd(keys.LEASES, {job.id: 0})
        assert [r.outcome for r in store.jobs.reap({"m": 2})] == [outcome]
        assert in_flight(store) == [0]
    dead = store.jobs.get(job.id)
    assert dead is not None and dead.status is JobStatus.FAILED and dead.attempts == 2 and dead.commits == 1
    assert dead.error == JobError("worker_lost", "the worker running it was lost on all 2 attempts")


def test_submit_refuses_past_the_cap_and_withdraw_takes_back_record_and_message(store: Store,
                                                                              client: "redis.Redis") -> None:
    kept = submit(store, cap=1)
    assert store.jobs.submit(store.jobs.new("m", {}), 1) is Refusal.FULL  # nothing recorded
    assert client.llen(keys.celery_queue("m")) == 1
    assert store.jobs.withdraw(kept) == "WITHDRAWN" and store.jobs.withdraw(kept) == "NONE"
    assert client.llen(keys.celery_queue("m")) == 0 and store.jobs.get(kept.id) is None
    again = store.jobs.new("m", {})
    recorded = store.jobs.submit(again, 0)
    assert recorded is not None and store.jobs.submit(again, 0) == recorded  # a retried submit is one job


def test_a_lost_message_is_sent_again_only_while_nothing_holds_the_job(store: Store, client: "redis.Redis") -> None:
    job, other = submit(store), submit(store)
    assert store.jobs.resend_lost("m", after=0) == {}  # their messages still wait
    client.rpop(keys.celery_queue("m"))  # the oldest message was taken by a worker that died at once
    assert store.jobs.resend_lost("m", after=0) == {job.id: ""}  # found among those waiting: only its own
    assert store.jobs.resend_lost("m", after=0) == {}
    assert isinstance(start(store, other, "t"), str) and store.jobs.resend_lost("m", after=0) == {}


def test_parked_jobs_expire_after_the_queue_timeout(store: Store) -> None:
    job = submit(store)
    assert start(store, job, "t") == "PARKED"
    assert store.jobs.expire_parked("m", queue_timeout=3600) == []
    assert store.jobs.expire_parked("m", queue_timeout=0) == [job.id]
    expired = store.jobs.get(job.id)
    assert expired is not None and expired.error is not None and expired.error.code == "no_replica"


def test_a_job_that_waited_for_a_start_waits_afresh_once_the_start_ends(store: Store) -> None:
    token = leader(store)
    jobs = submit(store), submit(store)
    for job in jobs:
        store.client.hset(keys.job(job.id), "created_at", "1")  # submitted long ago, while a replica started
    assert store.replicas.add(token, "r1", "m", "fake")
    assert [start(store, job, claim) for job, claim in zip(jobs, "ab", strict=True)] == ["PARKED"] * 2
    store.client.zadd(keys.parked("m"), {job.id: 1 for job in jobs})
    assert store.jobs.expire_parked("m", queue_timeout=60) == []  # a replica is starting
    assert store.replicas.launched(token, "r1", "http://127.0.0.1/r1", "r1")
    assert store.replicas.ready(token, "r1", concurrency=1) is not None  # the start ended: one is sent, one waits
    [left] = store.client.zrange(keys.parked("m"), 0, -1)
    assert store.jobs.expire_parked("m", queue_timeout=60) == []  # it waits since the replica turned READY
    assert store.replicas.failed(token, "r1", "exited while ready")
    [gone] = store.replicas.of("m")
    assert store.replicas.remove(token, gone)  # crashed and removed before any other start: still waiting afresh
    assert store.jobs.expire_parked("m", queue_timeout=60) == []
    assert store.jobs.expire_parked("m", queue_timeout=0) == [left]


def parked_during_a_start(store: Store) -> tuple[str, Job]:
    """A job submitted long ago, parked while replica r1 of its model starts; the leader's token."""
    token = leader(store)
    job = submit(store)
    store.client.hset(keys.job(job.id), "created_at", "1")
    assert store.replicas.add(token, "r1", "m", "fake")
    assert start(store, job, "a") == "PARKED"
    store.client.zadd(keys.parked("m"), {job.id: 1})
    return token, job


def test_a_job_waits_afresh_after_a_failed_start(store: Store) -> None:
    token, job = parked_during_a_start(store)
    assert store.replicas.start_failed(token, "r1", "m", "exited", fail_waiting=False) == 0
    [failed] = store.replicas.of("m")
    assert store.replicas.remove(token, failed) and store.replicas.of("m") == []
    assert store.jobs.expire_parked("m", queue_timeout=60) == []  # it waits since the start failed
    assert store.jobs.expire_parked("m", queue_timeout=0) == [job.id]


def test_a_job_waits_afresh_after_a_start_stopped_while_starting(store: Store) -> None:
    token, job = parked_during_a_start(store)
    [starting] = store.replicas.of("m")
    assert store.replicas.remove(token, starting)  # a new leader found it not live, say
    assert store.jobs.expire_parked("m", queue_timeout=60) == []
    assert store.jobs.expire_parked("m", queue_timeout=0) == [job.id]


def test_a_job_taken_back_from_a_lost_worker_waits_afresh(store: Store) -> None:
    ready_replica(store)
    job = submit(store)
    assert isinstance(start(store, job, "t"), Started)
    store.client.hset(keys.job(job.id), "created_at", "1")  # created long ago; it ran for a long time
    store.client.zadd(keys.LEASES, {job.id: 0})
    assert [r.outcome for r in store.jobs.reap({"m": 3})] == ["REQUEUED"]
    store.client.zrem(keys.sent("m"), job.id)  # its new message was lost, say: it waits parked again
    store.client.zadd(keys.parked("m"), {job.id: 1})
    assert store.jobs.expire_parked("m", queue_timeout=60) == []  # it waits since it was taken back


def test_hole07_a_failed_start_leaves_parked_jobs_to_a_ready_replica(store: Store) -> None:
    token = ready_replica(store)
    busy, waiting = submit(store), submit(store)
    assert isinstance(start(store, busy, "a"), Started)
    assert start(store, waiting, "b") == "PARKED"
    assert store.replicas.add(token, "r2", "m", "fake")
    assert store.replicas.start_failed(token, "r2", "m", "setup failed", fail_waiting=True) == 0
    assert store.jobs.finish(busy.id, "a", OK) == "OK"
    assert isinstance(start(store, waiting, "b"), Started)


def test_a_failed_start_with_no_ready_replica_fails_waiting_jobs_when_the_model_says_so(store: Store) -> None:
    token = leader(store)
    job = submit(store)
    assert start(store, job, "t") == "PARKED"
    assert store.replicas.add(token, "r1", "m", "fake")
    assert store.replicas.start_failed(token, "r1", "m", "image missing", fail_waiting=True) == 1
    failed = store.jobs.get(job.id)
    assert failed is not None and failed.error == JobError("replica_start_failed",
                                                           "no replica of m could start: image missing")
    late = submit(store)  # submitted after the failure: it waits for the next start
    assert start(store, late, "t") == "PARKED"


def test_hole02_an_autoscaler_that_lost_the_lease_changes_nothing(store: Store) -> None:
    stale = leader(store)
    store.client.delete(keys.LEADER)  # its lease lapsed; another takes it
    current = leader(store)
    assert not store.replicas.add(stale, "r1", "m", "fake")
    assert store.replicas.add(current, "r1", "m", "fake")
    assert store.replicas.launched(stale, "r1", "http://x", "h") == 0
    assert store.replicas.launched(current, "gone", "http://x", "h") == -1
    assert store.replicas.ready(stale, "r1", 1) is None
    assert store.replicas.start_failed(stale, "r1", "m", "x", True) is None
    assert not store.replicas.drain_if_idle(stale, "r1", 0)
    assert not store.replicas.remove(stale, store.replicas.of("m")[0])
    assert not store.replicas.save_scaling(stale, "m", {"failures": "9"})
    assert [r.state for r in store.replicas.of("m")] == [ReplicaState.STARTING]


def test_a_busy_or_recently_used_replica_is_never_drained(store: Store) -> None:
    token = ready_replica(store)
    job = submit(store)
    assert isinstance(start(store, job, "t"), Started)
    assert not store.replicas.drain_if_idle(token, "r1", idle_for=0)
    assert store.jobs.finish(job.id, "t", OK) == "OK"
    assert not store.replicas.drain_if_idle(token, "r1", idle_for=60)
    assert store.replicas.drain_if_idle(token, "r1", idle_for=0)
    assert start(store, submit(store), "u") == "PARKED"  # draining takes no new work


def test_the_scripts_push_the_message_celery_itself_would_push(store: Store, client: "redis.Redis",
                                                              redis_url: str) -> None:
    app = Celery("check", broker=redis_url, set_as_current=False)
    app.send_task(TASK_NAME, args=["abc", "m"], queue=keys.celery_queue("m"), task_id="abc")
    theirs = json.loads(client.lpop(keys.celery_queue("m")) or "{}")
    ours = json.loads(template().replace("@job@", "abc").replace("@model@", "m").replace("@tag@", "t"))
    assert set(ours) == set(theirs) and set(ours["headers"]) == set(theirs["headers"])
    assert set(ours["properties"]) - {"body_encoding"} <= set(theirs["properties"])
    assert json.loads(ours["body"]) == json.loads(base64.b64decode(theirs["body"]))
    for name in ("task", "id", "root_id", "argsrepr", "lang", "retries", "timelimit"):
        assert ours["headers"][name] == theirs["headers"][name], name
    assert ours["properties"]["delivery_info"] == theirs["properties"]["delivery_info"]


def test_a_starting_replicas_lines_are_cut_by_characters_and_go_once_it_is_ready(store: Store) -> None:
    token = leader(store)
    assert store.replicas.add(token, "r1", "m", "fake")
    lines = [f"{i} 読み込み中…" * 60 for i in range(10)]  # about 5 kB of three-byte characters
    assert store.replicas.note(token, "r1", lines)
    [replica] = store.replicas.of("m")  # readable: no character cut in half
    assert 0 < len(replica.log_tail) <= 4000 and replica.log_tail.splitlines()[-1] == lines[-1]
    assert store.replicas.ready(token, "r1", 1) is not None
    assert store.replicas.of("m")[0].log_tail == ""
