"""Running one job: start it on a replica slot (or park it), call the replica, commit what came back.

This is the body of the Celery task, as plain functions over their clients, so it runs and is tested without
Celery. ``start`` claims the job with a token and a lease that a background thread renews, takes a free slot and
marks the job RUNNING in one script; with no free slot the job is parked and the task returns at once (a job that
waits holds no thread). Every later write checks the claim, so a task that lost it (its worker stalled past the
lease and the reaper took the job back) never commits. A replica that fails under a job leaves routing, and the job
runs on another, waits, or fails after ``max_attempts``.
"""

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import redis
import urllib3

from workers.config import ModelConfig
from workers.protocols import protocol_for
from workers.protocols.base import ReplicaBusy
from workers.store import Store
from workers.store.records import JobError, JobStatus, Outcome, Started

log = logging.getLogger(__name__)
BUSY_PAUSE = 0.2  # seconds before asking a busy replica again


class LeaseKeeper:
    """Renews, from one background thread, the leases of every job this worker holds."""

    def __init__(self, store: Store, lease: float) -> None:
        self.store = store
        self.lease = lease
        self.claims: dict[str, tuple[str, float]] = {}  # job id → (token, renewed until: monotonic)
        self.lock = threading.Lock()
        threading.Thread(target=self.renew_forever, name="lease-keeper", daemon=True).start()

    @contextlib.contextmanager
    def holding(self, job_id: str, token: str, at_most: float) -> Iterator[None]:
        """Keep the claim's lease alive while the block runs, for ``at_most`` seconds: a call stuck past that
        (a replica that trickles its answer) loses the job to the reaper, which frees its slot."""
        with self.lock:
            self.claims[job_id] = (token, time.monotonic() + at_most)
        try:
            yield
        finally:
            with self.lock:
                self.claims.pop(job_id, None)

    def renew_forever(self) -> None:
        """Renew every held lease three times per lease period."""
        while True:
            time.sleep(self.lease / 3)
            now = time.monotonic()
            with self.lock:
                claims = {job_id: token for job_id, (token, until) in self.claims.items() if until > now}
            try:
                self.store.jobs.renew(claims, self.lease)
            except redis.RedisError as exc:
                log.warning("cannot renew job leases: %s", exc)


@dataclass(frozen=True)
class WorkerContext:
    """What a worker runs jobs with."""

    models: dict[str, ModelConfig]
    store: Store
    http: urllib3.PoolManager
    leases: LeaseKeeper
    max_output_bytes: int = 10 * 1024 * 1024
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")


@dataclass(frozen=True)
class Summary:
    """What one task did with its job: the job's status as the task left it, and where and how long it ran."""

    job_id: str
    status: str  # a JobStatus, or PARKED / CLAIMED / MISSING / STALE: the task did not run it
    replica: str = ""
    error: JobError | None = None
    seconds: float = 0.0  # the replica call's wall time, last attempt

    def as_result(self) -> dict[str, object]:
        """The task's result, as Flower shows it."""
        found: dict[str, object] = {"job": self.job_id, "status": self.status}
        if self.replica:
            found.update(replica=self.replica, seconds=round(self.seconds, 6))
        return found


def http_pool(pool_size: int = 64) -> urllib3.PoolManager:
    """Keep-alive connections to replicas, enough for every worker thread; no retries (a retry is ours)."""
    return urllib3.PoolManager(num_pools=16, maxsize=pool_size, retries=False)


def run_job(ctx: WorkerContext, job_id: str, model_name: str) -> Summary:
    """Run the job if it can run now; park it if no slot is free; nothing if another task holds it."""
    model = ctx.models.get(model_name)
    if model is None:  # its message would come back here if dropped: the job fails, saying why
        log.warning("job %s names model %r, which this worker does not serve", job_id, model_name)
        why = JobError("model_not_served", f"worker {ctx.worker} does not serve model {model_name!r} (it is not in "
                                           f"its models file)")
        refused = ctx.store.jobs.refuse(job_id, why)
        return Summary(job_id, refused, error=why if refused == JobStatus.FAILED else None)
    token = uuid.uuid4().hex
    started = ctx.store.jobs.start(job_id, token, ctx.leases.lease, ctx.worker, model.concurrency,
                                   model.on_start_failure == "fail")
    if isinstance(started, str):
        return Summary(job_id, started)
    with ctx.leases.holding(job_id, token, model.max_attempts * (model.request_timeout + 10)):
        return run_started(ctx, model, started, token)


def run_started(ctx: WorkerContext, model: ModelConfig, started: Started, token: str) -> Summary:
    """Call the replica until the job is committed, parked, or out of attempts."""
    while True:
        began = time.monotonic()
        outcome = call(ctx, model, started)
        seconds = time.monotonic() - began
        if isinstance(outcome, Outcome):
            if outcome.status is JobStatus.SUCCEEDED:  # the replica's own time, if it said, but never more than ours
                outcome = replace(outcome, service_time=min(seconds, outcome.service_time or seconds))
            committed = ctx.store.jobs.finish(started.job.id, token, outcome)
            status = outcome.status.value if committed in ("OK", outcome.status.value) else committed
            return Summary(started.job.id, status, started.slot.replica_id, outcome.error, seconds)
        log.warning("job %s: replica %s failed: %s", started.job.id, started.slot.replica_id, outcome)
        retried = ctx.store.jobs.retry(started.job.id, token, started.slot.replica_id, outcome, model.max_attempts,
                                       model.concurrency, ctx.leases.lease, ctx.worker)
        if isinstance(retried, str):
            return Summary(started.job.id, retried, started.slot.replica_id, seconds=seconds)
        started = retried


def call(ctx: WorkerContext, model: ModelConfig, started: Started) -> Outcome | str:
    """Send the job to its replica: the outcome of its answer, or why the replica failed (text). A replica that
    says it is busy (a request it still runs for a lost worker) is asked again until the request's deadline."""
    protocol = protocol_for(model)
    request = protocol.request(started.job.id, started.job.input)
    deadline = time.monotonic() + model.request_timeout
    while True:
        try:
            response = ctx.http.request(request.method, started.slot.endpoint + request.path, body=request.body,
                                        headers=dict(request.headers), timeout=max(0.1, deadline - time.monotonic()),
                                        preload_content=False)
            body = read_body(response, deadline, ctx.max_output_bytes)
        except urllib3.exceptions.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if body is None:
            return Outcome(JobStatus.FAILED, error=JobError(
                "bad_response", f"the replica's answer is over {ctx.max_output_bytes} bytes"))
        try:
            return protocol.outcome(response.status, response.headers, body, model.request_timeout)
        except ReplicaBusy as busy:
            if time.monotonic() + BUSY_PAUSE > deadline:
                return f"busy until the request timeout: {busy}"
            time.sleep(BUSY_PAUSE)
        except Exception as exc:  # an answer no adapter foresaw fails the job, never the worker
            return Outcome(JobStatus.FAILED, error=JobError("bad_response", f"{type(exc).__name__}: {exc}"[:2000]))


def read_body(response: urllib3.BaseHTTPResponse, deadline: float, limit: int) -> bytes | None:
    """The whole body by ``deadline`` (else a read timeout), or None if it is over ``limit`` bytes."""
    chunks, size = [], 0
    try:
        while chunk := response.read1(65536):
            size += len(chunk)
            if size > limit:
                response.close()  # the rest is unread: this connection cannot serve another request
                return None
            if time.monotonic() > deadline:
                response.close()
                raise urllib3.exceptions.TimeoutError("no complete answer within the request timeout")
            chunks.append(chunk)
    finally:
        response.release_conn()
    return b"".join(chunks)
