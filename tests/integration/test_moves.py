"""The job state machine, written once (``workers.job.MOVES``): every status any script writes, seen on a real
Redis with MONITOR while each script is driven through its paths, is a move of the table; and a move the table
lacks is refused by the guard in ``lib.lua``."""

import re
import threading
from collections.abc import Iterator

import pytest
import redis

from workers.job import MOVES, Job, JobError, JobOptions, JobStatus, Outcome
from workers.store import Store, keys
from workers.store.records import Started
from workers.store.scripts import prelude

pytestmark = pytest.mark.integration
OK = Outcome(JobStatus.SUCCEEDED, output='{"y": 1}', service_time=0.01)
BAD = Outcome(JobStatus.FAILED, error=JobError("model_error", "no"))
ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
END = "end-of-the-moves"


class StatusWrites:
    """Every write of a job's status on the server, as (job id, status before, status written), read by MONITOR."""

    def __init__(self, client: "redis.Redis") -> None:
        self.client = client
        self.connection = client.connection_pool.get_connection()
        self.connection.send_command("MONITOR")
        assert self.connection.read_response() in ("OK", b"OK")
        self.seen: list[tuple[str, JobStatus | None, JobStatus]] = []
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self) -> None:
        """Follow the server's commands until the end marker."""
        status: dict[str, JobStatus | None] = {}
        while True:
            try:
                line = self.connection.read_response()
            except redis.ConnectionError:  # the test ended early
                return
            args = ARG.findall(line.decode() if isinstance(line, bytes) else str(line))
            if END in args:
                return
            if len(args) < 2 or not args[1].startswith(keys.JOB):
                continue
            job_id, verb = args[1][len(keys.JOB):], args[0].upper()
            if verb == "DEL":
                status.pop(job_id, None)
            elif verb == "HSET":
                pairs = dict(zip(args[2::2], args[3::2], strict=False))
                if "status" in pairs:
                    written = JobStatus(pairs["status"])
                    self.seen.append((job_id, status.get(job_id), written))
                    status[job_id] = written

    def stop(self) -> list[tuple[str, JobStatus | None, JobStatus]]:
        """The writes seen so far."""
        self.client.echo(END)
        self.thread.join(10)
        self.connection.disconnect()
        return self.seen


@pytest.fixture
def writes(client: "redis.Redis") -> Iterator[StatusWrites]:
    """The status writes of the test, from its first command on."""
    found = StatusWrites(client)
    yield found
    found.connection.disconnect()


def ready(store: Store, token: str, replica_id: str, model: str = "m") -> None:
    """A READY replica."""
    assert store.replicas.add(token, replica_id, model, "fake")
    assert store.replicas.launched(token, replica_id, f"http://127.0.0.1/{replica_id}", replica_id)
    assert store.replicas.ready(token, replica_id, concurrency=1) is not None


def new(store: Store, model: str = "m", owner: str = "") -> str:
    """A submitted job's id."""
    job = store.jobs.submit(store.jobs.new(model, {"x": 1}, owner))
    assert not isinstance(job, str)
    return job.id


def run(store: Store, job_id: str, token: str) -> Started:
    """The job started under ``token``."""
    started = store.jobs.start(job_id, token, 5, "w", True)
    assert isinstance(started, Started), started
    return started


def drive(store: Store) -> None:
    """Every job script, through the paths that move a job."""
    jobs, leader = store.jobs, store.leadership(30).hold() or ""
    waiting = new(store)
    assert jobs.start(waiting, "t0", 5, "w", True) == "PARKED"  # no replica yet
    ready(store, leader, "r1")  # sends the parked job to the new slot
    assert jobs.renew([(waiting, "t0")], 5) == 0
    run(store, waiting, "t1")
    assert jobs.finish(waiting, "t1", OK) == "OK"  # QUEUED → RUNNING → SUCCEEDED
    failing = new(store)
    run(store, failing, "t2")
    assert jobs.finish(failing, "t2", BAD) == "OK"  # RUNNING → FAILED
    ready(store, leader, "r2")
    moving = new(store)
    first = run(store, moving, "t3")
    moved = jobs.retry(moving, "t3", first.slot.replica_id, "reset", False, 3, 5, "w")  # → QUEUED → RUNNING
    assert isinstance(moved, Started)
    assert jobs.retry(moving, "t3", moved.slot.replica_id, "reset", True, 2, 5, "w") == "FAILED"
    ready(store, leader, "r3")
    lost = new(store)
    for token, outcome in (("t4", "REQUEUED"), ("t5", "DEAD")):
        jobs.dispatch("m")
        run(store, lost, token)
        store.client.zadd(keys.LEASES, {lost: 0})
        assert [r.outcome for r in jobs.reap({"m": 2})] == [outcome]  # RUNNING → QUEUED, then → FAILED
    queued, running = new(store), new(store)
    assert jobs.cancel(queued) == "OK"  # QUEUED → CANCELLED
    run(store, running, "t6")
    assert jobs.cancel(running) == "OK"  # RUNNING → CANCELLED
    assert jobs.resubmit(running) == "HELD"  # its call has not returned
    assert jobs.finish(running, "t6", OK) == "CANCELLED"
    for finished in (failing, running, lost):
        assert jobs.resubmit(finished) == "OK"  # FAILED or CANCELLED → QUEUED
    assert jobs.resubmit(waiting) == "SUCCEEDED"
    assert jobs.refuse(queued, JobError("model_not_served", "no")) == "CANCELLED"
    assert jobs.refuse(new(store), JobError("model_not_served", "no")) == "FAILED"  # QUEUED → FAILED
    for model in ("p", "q"):
        assert jobs.start(new(store, model), "t7", 5, "w", True) == "PARKED"
    assert len(jobs.expire_parked("p", 0)) == 1  # QUEUED → FAILED
    overdue, late_message = (store.jobs.submit(store.jobs.new("m", {"x": 1}, options=JobOptions(ttl=60)))
                             for _ in range(2))
    assert isinstance(overdue, Job) and isinstance(late_message, Job)
    store.client.zadd(keys.DEADLINES, {overdue.id: 0})
    assert [e.job_id for e in jobs.expire_overdue()] == [overdue.id]  # QUEUED → FAILED (expired)
    store.client.hset(keys.job(late_message.id), "deadline", "0")
    assert jobs.start(late_message.id, "t9", 5, "w", True) == "FAILED"  # QUEUED → FAILED (expired)
    late = new(store, "q")  # submitted before the start failed, not parked yet
    assert store.replicas.start_failed(leader, "rq", "q", "crashed", True) == 1  # the parked one: → FAILED
    assert jobs.start(late, "t8", 5, "w", True) == "FAILED"  # it fails instead of parking
    new(store, "gone")
    assert len(jobs.abandon("gone", 0).failed) == 1
    jobs.resend_lost("m", 0)
    for owner in ("a", "b", "a"):
        new(store, owner=owner)
    assert jobs.purge("m", "a", batch=1) >= 2 and jobs.purge("m", batch=1) >= 1  # QUEUED → CANCELLED
    withdrawn = store.jobs.new("m", {"x": 1})
    jobs.submit(withdrawn)
    assert jobs.withdraw(withdrawn) == "WITHDRAWN"


def test_every_status_any_script_writes_is_a_move_of_the_table(store: Store, writes: StatusWrites) -> None:
    drive(store)
    seen = writes.stop()
    table = {(move.source, move.target) for move in MOVES}
    assert seen, "MONITOR saw no status written"
    assert [(job, source, target) for job, source, target in seen if (source, target) not in table] == []
    assert {(source, target) for _, source, target in seen} == table  # and every move was driven


def test_a_move_the_table_lacks_is_refused_and_writes_nothing(store: Store, client: "redis.Redis") -> None:
    job_id = new(store)
    client.hset(keys.job(job_id), "status", "SUCCEEDED")
    guard = client.register_script(prelude() + "move(ARGV[3], ARGV[4])\nreturn 'MOVED'")
    with pytest.raises(redis.ResponseError, match=r"FORBIDDEN no move of job .* from SUCCEEDED to RUNNING"):
        guard(args=["", 60, job_id, "RUNNING"])
    assert client.hget(keys.job(job_id), "status") == "SUCCEEDED"
    with pytest.raises(redis.ResponseError, match=r"FORBIDDEN no move of job .* from none to RUNNING"):
        guard(args=["", 60, "never-submitted", "RUNNING"])
    assert not client.exists(keys.job("never-submitted"))
    client.hset(keys.job(job_id), "status", "FAILED")
    assert guard(args=["", 60, job_id, "QUEUED"]) == "MOVED"  # a move of the table: resubmit
    assert client.hget(keys.job(job_id), "status") == "QUEUED"


def test_a_script_asked_for_a_forbidden_move_stops_before_it_writes(store: Store, client: "redis.Redis") -> None:
    job_id = new(store, "p")
    assert store.jobs.start(job_id, "t", 5, "w", True) == "PARKED"
    client.hset(keys.job(job_id), "status", "SUCCEEDED")  # a record the parked set should never hold
    with pytest.raises(redis.ResponseError, match=r"FORBIDDEN no move of job .* from SUCCEEDED to FAILED"):
        store.jobs.expire_parked("p", 0)
    found = store.jobs.get(job_id)
    assert found is not None and found.status is JobStatus.SUCCEEDED and found.error is None
