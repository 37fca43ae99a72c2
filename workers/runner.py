"""Running one job: wait for a replica slot, forward the input, commit the outcome.

This is the body of the Celery task, written as a plain function over its clients so that it can be
called and tested without Celery.
"""

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import requests

from workers import keys
from workers.config import ModelConfig
from workers.jobs import Job, JobStatus, JobStore
from workers.registry import ReplicaRegistry, ReplicaState, Slot

log = logging.getLogger(__name__)

WAKE_INTERVAL = 0.5  # seconds between re-checks while waiting for a replica slot
SERVICE_TIME_HEADER = "X-Inference-Seconds"  # the replica's own measure of predict()
RETRY_BASE_DELAY = 0.2  # seconds; doubled per attempt after a replica died under a job


@dataclass(frozen=True)
class WorkerContext:
    """The clients a worker runs jobs with."""

    models: dict[str, ModelConfig]
    store: JobStore
    registry: ReplicaRegistry
    http: requests.Session


def http_session(pool_size: int = 64) -> requests.Session:
    """A keep-alive session with a connection pool large enough for every worker thread."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=16, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    return session


def run_job(job_id: str, ctx: WorkerContext) -> float | None:
    """Run the job once; returns a delay in seconds if it must be tried again, else None."""
    job = ctx.store.get(job_id)
    if job is None or job.status is not JobStatus.QUEUED:
        return None
    model = ctx.models.get(job.model)
    if model is None:
        fail(ctx, job, "unknown_model", f"model {job.model!r} is no longer served")
        return None
    slot = wait_for_slot(ctx, model, job)
    if slot is None:
        return None
    try:
        if not ctx.store.transition(job, JobStatus.RUNNING, started_at=repr(time.time()), replica=slot.replica_id):
            return None  # cancelled meanwhile
        return forward(ctx, model, job, slot)
    finally:
        ctx.registry.release(model.name, slot)


def wait_for_slot(ctx: WorkerContext, model: ModelConfig, job: Job) -> Slot | None:
    """A slot on a ready replica; None if the job was cancelled or waited past its queue timeout."""
    deadline = job.created_at + model.queue_timeout
    ctx.store.redis.rpush(keys.SCALE, model.name)
    while (slot := ctx.registry.acquire(model.name, model.concurrency)) is None:
        if time.time() > deadline:
            fail(ctx, job, "no_replica", f"no replica of {model.name!r} was ready within {model.queue_timeout:g} s")
            return None
        current = ctx.store.get(job.id)
        if current is None or current.status is not JobStatus.QUEUED:
            return None
        failure = ctx.registry.start_failure(model.name)
        if failure and failure.at >= job.created_at and model.on_start_failure == "fail":
            fail(ctx, job, "replica_start_failed", f"no replica of {model.name!r} could start: {failure.reason}")
            return None
        ctx.registry.wait_for_slot(model.name, WAKE_INTERVAL)
    return slot


def forward(ctx: WorkerContext, model: ModelConfig, job: Job, slot: Slot) -> float | None:
    """POST the job's input to the replica and commit what comes back."""
    started = time.monotonic()
    try:
        response = ctx.http.post(f"{slot.endpoint}/", data=json.dumps(job.input),
                                 headers={"Content-Type": "application/json"}, timeout=model.request_timeout)
    except requests.RequestException as exc:
        return replica_lost(ctx, model, job, slot, f"{type(exc).__name__}: {exc}")
    round_trip = time.monotonic() - started
    ctx.registry.record(model.name, "service_time", float(response.headers.get(SERVICE_TIME_HEADER, round_trip)))
    try:
        body: Any = response.json()
    except ValueError:
        body = {"error": {"code": "bad_response", "message": response.text[:500]}}
    finished = repr(time.time())
    if response.status_code == 200:
        ctx.store.transition(job, JobStatus.SUCCEEDED, output=response.text, finished_at=finished)
    else:
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            error = {"code": "model_error", "message": response.text[:500]}
        ctx.store.transition(job, JobStatus.FAILED, error=error, finished_at=finished)
    return None


def replica_lost(ctx: WorkerContext, model: ModelConfig, job: Job, slot: Slot, reason: str) -> float | None:
    """Take the replica out of routing and put the job back, or fail it after its last attempt."""
    replica = ctx.registry.get(slot.replica_id)
    if replica is not None:
        ctx.registry.set_state(replica, ReplicaState.FAILED, reason)
    log.warning("job %s: replica %s failed: %s", job.id, slot.replica_id, reason)
    attempts = job.attempts + 1
    if attempts >= model.max_attempts:
        fail(ctx, job, "replica_failed", f"replica failed on all {attempts} attempts; last: {reason}")
        return None
    if not ctx.store.transition(job, JobStatus.QUEUED):
        return None
    return float(RETRY_BASE_DELAY * 2**attempts)


def fail(ctx: WorkerContext, job: Job, code: str, message: str) -> None:
    """Mark the job FAILED with a reason."""
    ctx.store.transition(job, JobStatus.FAILED, error={"code": code, "message": message},
                         finished_at=repr(time.time()))
