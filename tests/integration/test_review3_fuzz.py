"""A fuzz of the job scripts with the runner's Python around them, on the real Redis: worker threads taking the
model's Celery messages and running ``run_job``, a lease keeper that stalls now and then, the reaper, resends and
dispatches, cancels (through the API's script and through revokes), and replicas that misbehave on real sockets
(slow, busy, reset, closed, undecodable, probes that hang), condemned replicas replaced as the autoscaler does.

When the faults stop, every job must end once: finished, committed exactly once, with its own answer if it
succeeded, and nothing left holding a slot, a lease, a claim or a place in a queue.
"""

import contextlib
import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery.worker import state as worker_state

from tests.integration.wire import Request, WireServer, response
from workers.config import ModelConfig
from workers.execution.celery_app import cancel_revoked, cancel_revoked_running
from workers.execution.runner import LeaseKeeper, WorkerContext, run_job
from workers.job import JobStatus
from workers.protocols.transport import http_pool
from workers.scaling.autoscaler import draining
from workers.store import Store, keys
from workers.store.records import ReplicaState

pytestmark = pytest.mark.integration
READY = response(200, b'{"status": "READY"}')
RESET = b"\x01\x00\x00\x00\x00\x00\x00\x00"
MODEL = ModelConfig(name="m", command=["serve"], concurrency=2, max_attempts=3, request_timeout=3.0)
LEASE = 1.5
JOBS = 120


class Faults:
    """What the replicas and the lease keeper do, drawn from one seeded generator; off once the run settles."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.on = True

    def draw(self) -> float:
        """A number in [0, 1); 1 once the faults are off."""
        with self.lock:
            return self.random.random() if self.on else 1.0


def answer(faults: Faults, served: dict[int, int]) -> Any:
    """A replica that answers {"y": x} to {"x": x}, when it does not misbehave."""
    def serve(connection: socket.socket, request: Request) -> None:
        roll = faults.draw()
        if request.path == "/ok":
            if roll < 0.15:
                time.sleep(2.5)  # past the probe's 2 s: judged gone
            connection.sendall(READY)
            return
        x = json.loads(request.body)["x"]
        served[x] = served.get(x, 0) + 1
        if roll < 0.06:
            connection.sendall(response(503, b'{"error": "busy"}', "Retry-After: 0\r\n"))
        elif roll < 0.12:
            connection.sendall(response(200, b'{"y": 1}')[:20])
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
            connection.close()
            raise OSError("reset")
        elif roll < 0.18:
            connection.close()
            raise OSError("closed unanswered")
        elif roll < 0.22:
            time.sleep(MODEL.jobs.request_timeout + 0.4)  # slow: the job fails timeout, the replica is alive
            connection.sendall(response(200, json.dumps({"y": x}).encode()))
        elif roll < 0.25:
            connection.sendall(response(200, b"not json"))
        else:
            time.sleep(roll * 1.6)
            connection.sendall(response(200, json.dumps({"y": x}).encode()))
    return serve


class StallingKeeper(LeaseKeeper):
    """A lease keeper whose process stalls past the lease now and then (a GC pause, a stopped container)."""

    def __init__(self, store: Store, faults: Faults) -> None:
        self.faults = faults
        super().__init__(store, LEASE, watch=lambda held: cancel_revoked_running(store, held))

    def renew(self) -> int:
        """Renew, after a stall once in a while."""
        if self.faults.draw() < 0.3:
            time.sleep(LEASE + 0.5)
        return super().renew()


def job_of(message: str) -> str:
    """The job id of a Celery message the scripts pushed."""
    return str(json.loads(json.loads(message)["body"])[0][0])


def worker(ctx: WorkerContext, client: "redis.Redis", faults: Faults, stop: threading.Event) -> None:
    """Take the model's messages one at a time, as a Celery worker thread does; now and then lose one."""
    while not stop.is_set():
        found = client.brpop([keys.celery_queue("m")], timeout=0.2)
        if found is None:
            continue
        job_id = job_of(found[1])
        if faults.draw() < 0.03:
            continue  # the worker died between taking the message and starting the job
        if job_id in worker_state.revoked:
            cancel_revoked(ctx.store, job_id)  # Celery discards a revoked task's message
            continue
        with contextlib.suppress(redis.RedisError):
            run_job(ctx, job_id, "m")


def leader(store: Store, token: str, servers: list[WireServer], stop: threading.Event,
           seen: dict[str, int]) -> None:
    """The autoscaler's share: reap, resend, dispatch; replace a condemned replica once its calls are over."""
    def count(what: str, many: int = 1) -> None:
        seen[what] = seen.get(what, 0) + many

    while not stop.is_set():
        jobs = store.jobs
        for reaped in jobs.reap({"m": MODEL.jobs.max_attempts}):
            count(f"reaped {reaped.outcome}")
        count("resent", len(jobs.resend_lost("m", 0.5)))
        jobs.dispatch("m")
        snapshot = store.replicas.snapshot("m", {})
        for replica in snapshot.replicas:
            if replica.state is ReplicaState.FAILED and not draining(MODEL, replica, snapshot.now):
                assert store.replicas.remove(token, replica)
                count("replicas replaced")
                ready(store, token, next(s for s in servers if s.url == replica.endpoint))
        stop.wait(0.1)


def ready(store: Store, token: str, server: WireServer) -> None:
    """A new READY replica at the server."""
    replica_id = f"r{time.monotonic_ns()}"
    assert store.replicas.add(token, replica_id, "m", "test")
    assert store.replicas.launched(token, replica_id, server.url, replica_id)
    assert store.replicas.ready(token, replica_id, MODEL.scaling.concurrency) is not None


@pytest.fixture
def servers() -> Iterator[list[WireServer]]:
    """Filled by the test; closed after it."""
    made: list[WireServer] = []
    yield made
    for server in made:
        server.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_review3_fuzz_every_job_ends_once_with_its_own_answer(store: Store, client: "redis.Redis",
                                                              servers: list[WireServer], seed: int) -> None:
    faults = Faults(seed)
    served: dict[int, int] = {}
    servers.extend(WireServer(answer(faults, served)) for _ in range(3))
    token = store.leadership(600).hold()
    assert token
    for server in servers:
        ready(store, token, server)
    steady = WorkerContext(models={"m": MODEL}, store=store, http=http_pool(),
                           leases=LeaseKeeper(store, LEASE, watch=lambda held: cancel_revoked_running(store, held)))
    stalling = WorkerContext(models={"m": MODEL}, store=store, http=http_pool(), leases=StallingKeeper(store, faults))
    stop = threading.Event()
    threads = [threading.Thread(target=worker, args=(ctx, client, faults, stop), daemon=True)
               for ctx in [steady] * 4 + [stalling] * 2]
    seen: dict[str, int] = {}
    threads.append(threading.Thread(target=leader, args=(store, token, servers, stop, seen), daemon=True))
    for thread in threads:
        thread.start()
    chooser = random.Random(seed + 100)
    ids: dict[str, int] = {}
    try:
        for x in range(JOBS):
            job = store.jobs.submit(store.jobs.new("m", {"x": x}))
            assert not isinstance(job, str)
            ids[job.id] = x
            roll = chooser.random()
            recent = list(ids)[-8:]  # queued, parked or running now, mostly
            if roll < 0.08:
                store.jobs.cancel(chooser.choice(recent))
            elif roll < 0.14:
                worker_state.revoked.add(chooser.choice(recent))
            time.sleep(chooser.random() * 0.08)
        settle = time.monotonic() + 30
        while time.monotonic() < settle and not all(
                (j := store.jobs.get(i)) is not None and j.status.finished for i in ids):
            time.sleep(0.2)
        faults.on = False
        settle = time.monotonic() + 30
        while time.monotonic() < settle and not all(
                (j := store.jobs.get(i)) is not None and j.status.finished for i in ids):
            time.sleep(0.2)
        time.sleep(LEASE * 2 + 1)  # let the reaper free the slots of lapsed claims
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        for job_id in ids:
            worker_state.revoked.discard(job_id)

    problems = []
    for job_id, x in ids.items():
        job = store.jobs.get(job_id)
        if job is None or not job.status.finished:
            problems.append(f"{job_id} (x={x}) not finished: {job}")
            continue
        if job.commits != 1:
            problems.append(f"{job_id} (x={x}) committed {job.commits} times")
        if job.status is JobStatus.SUCCEEDED and job.output != {"y": x}:
            problems.append(f"{job_id} (x={x}) succeeded with {job.output}")
    for replica in store.replicas.of("m"):
        if replica.in_flight:
            problems.append(f"replica {replica.id} ({replica.state}) still holds {replica.in_flight} slots")
    indexed = dict(client.zrange(keys.ready("m"), 0, -1, withscores=True))
    ready_now = {r.id: float(r.in_flight - (r.concurrency or 0)) for r in store.replicas.of("m")
                 if r.state is ReplicaState.READY}
    if indexed != ready_now:
        problems.append(f"the index of READY replicas says {indexed}, their records {ready_now}")
    leftovers = {name: client.zcard(name) for name in (keys.LEASES, keys.sent("m"), keys.parked("m"))}
    leftovers[keys.running("m")] = client.scard(keys.running("m"))
    problems += [f"{name} holds {count}" for name, count in leftovers.items() if count]
    outcomes: dict[str, int] = {}
    for job_id in ids:
        job = store.jobs.get(job_id)
        code = job.status.value + (f":{job.error.code}" if job and job.error else "") if job else "gone"
        outcomes[code] = outcomes.get(code, 0) + 1
    print(f"seed {seed}: {outcomes}; {seen}; inputs sent more than once: {sum(1 for n in served.values() if n > 1)}")
    assert problems == [], problems
