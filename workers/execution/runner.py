"""Running one job: claim it, wait for a replica slot, forward the input, commit the outcome.

This is the body of the Celery task, written as plain functions over their clients so that it can be
called and tested without Celery. A task claims its job with a token and a lease that a background
thread renews; every later write is a compare-and-set on that claim, so a task that lost its claim (its
worker stalled past the lease and the reaper requeued the job) can never commit. A replica that dies
under a job takes it out of routing and the job is retried on another, up to ``max_attempts``.
"""

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
import urllib3

from workers import keys
from workers.config import ModelConfig
from workers.jobs import Job, JobStatus, JobStore
from workers.registry import ReplicaRegistry, ReplicaState, Slot

log = logging.getLogger(__name__)

WAKE_INTERVAL = 0.5  # seconds between re-checks while waiting for a replica slot
SERVICE_TIME_HEADER = "X-Inference-Seconds"  # the replica's own measure of predict()
JSON = {"Content-Type": "application/json"}
RETRY_BASE_DELAY = 0.2  # seconds; doubled per attempt after a replica died under a job


class LeaseKeeper:
    """Renews, from one background thread, the leases of every job this worker holds."""

    def __init__(self, store: JobStore, lease: float) -> None:
        self.store = store
        self.lease = lease
        self.claims: dict[str, str] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self.renew_forever, name="lease-keeper", daemon=True).start()

    @contextlib.contextmanager
    def holding(self, job_id: str, token: str) -> Iterator[None]:
        """Keep the claim's lease alive while the block runs."""
        with self.lock:
            self.claims[job_id] = token
        try:
            yield
        finally:
            with self.lock:
                self.claims.pop(job_id, None)

    def renew_forever(self) -> None:
        """Renew every held lease three times per lease period."""
        while True:
            time.sleep(self.lease / 3)
            with self.lock:
                claims = dict(self.claims)
            try:
                self.store.renew(claims, self.lease)
            except redis.RedisError as exc:
                log.warning("cannot renew job leases: %s", exc)


@dataclass(frozen=True)
class WorkerContext:
    """The clients a worker runs jobs with."""

    models: dict[str, ModelConfig]
    store: JobStore
    registry: ReplicaRegistry
    http: urllib3.PoolManager
    leases: LeaseKeeper
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")


def http_pool(pool_size: int = 64) -> urllib3.PoolManager:
    """Keep-alive connections to replicas, enough for every worker thread; no retries (a retry is ours)."""
    return urllib3.PoolManager(num_pools=16, maxsize=pool_size, retries=False)


def run_job(job_id: str, ctx: WorkerContext, model_name: str = "") -> None:
    """Run the job if it is queued and no other task holds it."""
    token = uuid.uuid4().hex
    model = ctx.models.get(model_name)
    if model is None:  # a message that does not name the model: claim now, then wait for a slot
        job, slot = ctx.store.claim(job_id, token, ctx.leases.lease, ctx.worker), None
    else:
        job, slot = claim_and_start(ctx, model, job_id, token)
    if not isinstance(job, Job):
        if job == "MISSING":
            log.warning("job %s is unknown (expired, or its submit failed); dropping its task", job_id)
        return
    with ctx.leases.holding(job_id, token):
        run_claimed(ctx, job, token, slot)


def claim_and_start(ctx: WorkerContext, model: ModelConfig, job_id: str, token: str) -> tuple[Job | str, Slot | None]:
    """Claim the job, take a free slot and mark the job RUNNING, in one round trip.

    The job as claimed (or why not), and the slot if the job now runs on it; no slot if none was free.
    Each step is guarded by the claim, so a duplicate delivery's steps change nothing.
    """
    with ctx.store.redis.pipeline(transaction=False) as pipe:
        ctx.store.queue_claim(pipe, job_id, token, ctx.leases.lease, ctx.worker)
        ctx.registry.queue_acquire(pipe, model.name, model.concurrency, job_id, token)
        ctx.store.queue_transition(pipe, job_id, model.name, JobStatus.RUNNING, token, started_at=repr(time.time()))
        claimed, found, started = pipe.execute()
    job, slot = ctx.store.claimed(claimed), Slot.of(found)
    if slot is not None and started != "OK":  # cancelled meanwhile
        ctx.registry.release(model.name, slot, job_id)
        return str(started), None
    return job, slot


def run_claimed(ctx: WorkerContext, job: Job, claim: str, slot: Slot | None = None) -> None:
    """Attempt the job until it is committed, cancelled, or out of attempts (``slot``: it already runs there)."""
    model = ctx.models.get(job.model)
    if model is None:
        fail(ctx, job, claim, "unknown_model", f"model {job.model!r} is no longer served")
        return
    while slot is not None or job.status is JobStatus.QUEUED:
        if slot is None:
            slot = wait_for_slot(ctx, model, job, claim)
            if slot is None:
                return
            if not ctx.store.transition(job, JobStatus.RUNNING, claim, started_at=repr(time.time())):
                ctx.registry.release(model.name, slot, job.id)
                return  # cancelled, or the claim was lost
        try:
            delay = attempt(ctx, model, job, slot, claim)
        except BaseException:
            ctx.registry.release(model.name, slot, job.id)
            raise
        if delay is None:
            return
        time.sleep(delay)
        slot, job = None, ctx.store.get(job.id) or job


def wait_for_slot(ctx: WorkerContext, model: ModelConfig, job: Job, claim: str) -> Slot | None:
    """A slot on a ready replica; None if the job was cancelled, failed to start, or waited too long."""
    deadline = job.created_at + model.queue_timeout
    nudged = False
    while (slot := ctx.registry.acquire(model.name, model.concurrency, job.id)) is None:
        if not nudged:  # the submit already woke the autoscaler; wake it again only when this job must wait
            ctx.store.redis.rpush(keys.SCALE, model.name)
            nudged = True
        if time.time() > deadline:
            fail(ctx, job, claim, "no_replica", f"no replica of {model.name!r} was ready within "
                                                f"{model.queue_timeout:g} s")
            return None
        current = ctx.store.get(job.id)
        if current is None or current.status is not JobStatus.QUEUED:
            return None
        failure = ctx.registry.start_failure(model.name)
        if failure and failure.at >= job.created_at and model.on_start_failure == "fail":
            fail(ctx, job, claim, "replica_start_failed", f"no replica of {model.name!r} could start: "
                                                          f"{failure.reason}")
            return None
        ctx.registry.wait_for_slot(model.name, WAKE_INTERVAL)
    return slot


def attempt(ctx: WorkerContext, model: ModelConfig, job: Job, slot: Slot, claim: str) -> float | None:
    """Run the RUNNING job on its slot's replica and give the slot back; a retry delay if the replica failed."""
    started = time.monotonic()
    try:
        response = ctx.http.request("POST", f"{slot.endpoint}/", body=json.dumps(job.input), headers=JSON,
                                    timeout=model.request_timeout)
    except urllib3.exceptions.HTTPError as exc:
        ctx.registry.release(model.name, slot, job.id)
        return replica_lost(ctx, model, job, slot, claim, f"{type(exc).__name__}: {exc}")
    service_time = float(response.headers.get(SERVICE_TIME_HEADER, time.monotonic() - started))
    status, fields = outcome(response.status, response.data.decode(errors="replace"))
    with ctx.store.redis.pipeline(transaction=False) as pipe:  # one round trip for all three
        ctx.store.queue_transition(pipe, job.id, job.model, status, claim, finished_at=repr(time.time()), **fields)
        ctx.registry.release(model.name, slot, job.id, pipe)
        ctx.registry.record(model.name, "service_time", service_time, pipe)
        pipe.execute()
    return None


def outcome(status: int, text: str) -> tuple[JobStatus, dict[str, Any]]:
    """What the replica's answer makes of the job: SUCCEEDED with its output, or FAILED with an error."""
    try:
        body: Any = json.loads(text)
    except ValueError:
        return JobStatus.FAILED, {"error": {"code": "bad_response", "message": text[:500]}}
    if status == 200:
        return JobStatus.SUCCEEDED, {"output": text}
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"code": "model_error", "message": text[:500]}
    return JobStatus.FAILED, {"error": error}


def replica_lost(ctx: WorkerContext, model: ModelConfig, job: Job, slot: Slot, claim: str,
                 reason: str) -> float | None:
    """Take the replica out of routing and put the job back, or fail it after its last attempt."""
    replica = ctx.registry.get(slot.replica_id)
    if replica is not None:
        ctx.registry.set_state(replica, ReplicaState.FAILED, reason)
    log.warning("job %s: replica %s failed: %s", job.id, slot.replica_id, reason)
    current = ctx.store.get(job.id)
    attempts = current.attempts if current else model.max_attempts
    if attempts >= model.max_attempts:
        if fail(ctx, job, claim, "replica_failed", f"replica failed on all {attempts} attempts; last: {reason}"):
            ctx.store.bury(job)
        return None
    if not ctx.store.transition(job, JobStatus.QUEUED, claim):
        return None
    return float(RETRY_BASE_DELAY * 2 ** (attempts - 1))


def fail(ctx: WorkerContext, job: Job, claim: str, code: str, message: str) -> bool:
    """Mark the job FAILED with a reason, if this claim still holds it."""
    return ctx.store.transition(job, JobStatus.FAILED, claim, error={"code": code, "message": message},
                                finished_at=repr(time.time()))
