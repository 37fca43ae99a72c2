"""Running one job: start it on a replica slot (or park it), call the replica, commit what came back.

This is the body of the Celery task, as plain functions over their clients, so it runs and is tested without
Celery. ``start`` claims the job with a token and a lease that a background thread renews, takes a free slot and
marks the job RUNNING in one script; with no free slot the job is parked and the task returns at once (a job that
waits holds no thread). Every later write checks the claim, so a task that lost it (its worker stalled past the
lease and the reaper took the job back) never commits.

A whole exchange with a replica, connect to last byte, ends by the request timeout (``workers.protocols.transport``).
A failed exchange is judged by a readiness probe: a replica that answers it is alive, so a request that ran out of
time fails its job ``timeout`` and nothing else, and a broken connection is tried again on another slot; a replica
that does not answer leaves routing (its other jobs finish or fail on their own), and the job runs on another,
waits, or fails after ``max_attempts``.
"""

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace

import redis
import urllib3

from workers import logs
from workers.config import ModelConfig
from workers.hooks import Hooks
from workers.job import Job, JobError, JobStatus, Outcome
from workers.protocols import Readiness, protocol_for, transport
from workers.protocols.base import PartReader, ReplicaBusy, bad_response, transient
from workers.store import Store
from workers.store.records import Started
from workers.store.replies import AppendReply, FinishReply, RefuseReply, StartReply

log = logging.getLogger(__name__)
BUSY_PAUSE = 0.2  # seconds before asking a busy replica again (unless it says how long)
PROBE_TIMEOUT = 2.0  # seconds a replica whose call failed has to answer a readiness probe, else it is gone


class LeaseKeeper:
    """Renews, from one background thread, the leases of every claim this worker holds.

    Claims are held by token, never by job id alone: two tasks of one worker may hold claims on the same job
    (the first one's lapsed, the reaper sent the job again, and the second started it), and the first leaving
    must not drop the second's claim. Before each renewal ``watch`` is given the ids of the jobs held (the Celery
    app cancels those whose task was revoked while they ran).
    """

    def __init__(self, store: Store, lease: float, renewing: bool = True,
                 watch: Callable[[list[str]], None] = lambda _: None) -> None:
        self.store = store
        self.lease = lease
        self.watch = watch
        self.claims: dict[str, tuple[str, float]] = {}  # claim token → (job id, renewed until: monotonic)
        self.lock = threading.Lock()
        if renewing:
            threading.Thread(target=self.renew_forever, name="lease-keeper", daemon=True).start()

    @contextlib.contextmanager
    def holding(self, job_id: str, token: str, at_most: float) -> Iterator[None]:
        """Keep the claim's lease alive while the block runs, for ``at_most`` seconds: a call stuck past that
        (a replica that trickles its answer) loses the job to the reaper, which frees its slot."""
        with self.lock:
            self.claims[token] = (job_id, time.monotonic() + at_most)
        try:
            yield
        finally:
            with self.lock:
                self.claims.pop(token, None)

    def renew(self) -> int:
        """Renew every claim held now; how many Redis renewed (a claim taken back stays unrenewed)."""
        now = time.monotonic()
        with self.lock:
            held = [(job_id, token) for token, (job_id, until) in self.claims.items() if until > now]
        if held:
            try:
                self.watch([job_id for job_id, _ in held])
            except Exception:  # a failing watch must never stop the renewals
                log.exception("watching the held jobs failed")
        return self.store.jobs.renew(held, self.lease)

    def renew_forever(self) -> None:
        """Renew every held lease three times per lease period."""
        while True:
            time.sleep(self.lease / 3)
            try:
                self.renew()
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
    max_parts: int = 10000  # parts a streamed output may have
    worker: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    host: str = field(default_factory=socket.gethostname)  # replicas on this host are preferred
    hooks: Hooks = field(default_factory=Hooks)  # called once a job's end is committed


@dataclass(frozen=True)
class Summary:
    """What one task did with its job: the job's status as the task left it, and where and how long it ran."""

    job_id: str
    status: JobStatus | StartReply | RefuseReply | FinishReply  # the job's status, or why the task did not run it
    replica: str = ""
    error: JobError | None = None
    seconds: float = 0.0  # the replica call's wall time, last attempt
    committed: bool = False  # this task committed the job's end (its outcome, or its failure after the last try)

    def as_result(self) -> dict[str, object]:
        """The task's result, as Flower shows it."""
        found: dict[str, object] = {"job": self.job_id, "status": self.status}
        if self.replica:
            found.update(replica=self.replica, seconds=round(self.seconds, 6))
        return found


def run_job(ctx: WorkerContext, job_id: str, model_name: str) -> Summary:
    """Run the job if it can run now; park it if no slot is free; nothing if another task holds it. The lines
    logged meanwhile are about the job and its model."""
    with logs.about(job=job_id, model=model_name):
        return run_or_park(ctx, job_id, model_name)


def run_or_park(ctx: WorkerContext, job_id: str, model_name: str) -> Summary:
    """Start the job on a free slot and run it; park it if none is free; nothing if another task holds it."""
    model = ctx.models.get(model_name)
    if model is None:  # its message would come back here if dropped: the job fails, saying why
        log.warning("job %s names model %r, which this worker does not serve", job_id, model_name)
        why = JobError("model_not_served", f"worker {ctx.worker} does not serve model {model_name!r} (it is not in "
                                           f"its models file)")
        refused = ctx.store.jobs.refuse(job_id, why)
        return Summary(job_id, refused, error=why if refused is JobStatus.FAILED else None)
    token = uuid.uuid4().hex
    started = ctx.store.jobs.start(job_id, token, ctx.leases.lease, ctx.worker, model.jobs.on_start_failure == "fail",
                                   ctx.host)
    if not isinstance(started, Started):
        return Summary(job_id, started)
    with ctx.leases.holding(job_id, token, model.jobs.max_attempts * (model.jobs.request_timeout + 10)):
        summary = run_started(ctx, model, started, token)
    if summary.committed:
        ctx.hooks.after_finish(started.job, JobStatus(summary.status), summary.error, summary.seconds)
    return summary


@dataclass(frozen=True)
class Fault:
    """The exchange with the replica failed: why; whether the replica is gone (it failed a probe too), or alive
    and merely slow (the request ran out of time)."""

    reason: str
    gone: bool = False
    slow: bool = False


def run_started(ctx: WorkerContext, model: ModelConfig, started: Started, token: str) -> Summary:
    """Call the replica until the job is committed, parked, or out of attempts (the lines logged meanwhile are
    about the replica of each attempt)."""
    while True:
        with logs.about(replica=started.slot.replica_id):
            tried = attempt(ctx, model, started, token)
        if isinstance(tried, Summary):
            return tried
        started = tried


def attempt(ctx: WorkerContext, model: ModelConfig, started: Started, token: str) -> Summary | Started:
    """Call the replica once: what the task did with the job, or the job started again on another slot."""
    began = time.monotonic()
    outcome = call(ctx, model, started, token)
    seconds = time.monotonic() - began
    if isinstance(outcome, Fault) and outcome.slow:  # the job fails alone; the replica goes on
        outcome = Outcome(JobStatus.FAILED, error=JobError("timeout", outcome.reason))
        timed_out = True
    else:
        timed_out = False
    if isinstance(outcome, Outcome):
        if outcome.status is JobStatus.SUCCEEDED:  # the replica's own time, if it said, but never more than ours
            outcome = replace(outcome, service_time=min(seconds, outcome.service_time or seconds))
        committed = ctx.store.jobs.finish(started.job.id, token, outcome, timed_out)
        if committed is FinishReply.OK and outcome.error is not None:
            log.info("job %s failed: %s: %s", started.job.id, outcome.error.code, outcome.error.message)
        status = outcome.status if committed is FinishReply.OK or committed is outcome.status else committed
        return Summary(started.job.id, status, started.slot.replica_id, outcome.error, seconds,
                       committed=committed is FinishReply.OK)
    log.warning("job %s: replica %s %s: %s", started.job.id, started.slot.replica_id,
                "is gone" if outcome.gone else "failed the call", outcome.reason)
    retried = ctx.store.jobs.retry(started.job.id, token, started.slot.replica_id, outcome.reason, outcome.gone,
                                   model.jobs.max_attempts, ctx.leases.lease, ctx.worker, ctx.host)
    if not isinstance(retried, Started):
        return Summary(started.job.id, retried, started.slot.replica_id, seconds=seconds,
                       committed=retried is JobStatus.FAILED)
    return retried


class StreamEnded(Exception):
    """A streamed answer stopped before its end: the job's outcome."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.error.message if outcome.error else "")
        self.outcome = outcome


@dataclass
class PartSink:
    """Appends each part of a streamed answer to the job's parts, under the run's claim, as it comes."""

    ctx: WorkerContext
    job_id: str
    token: str
    reader: PartReader
    size: int = 1  # bytes of the output the parts make: "[", each part and a comma or "]"

    def take(self, line: bytes) -> None:
        """Append the part the line completes, if any; StreamEnded for an error, a bad line, too many parts, an
        output over the largest answer, or a lost claim."""
        try:
            part = self.reader.read(line)
        except ValueError as exc:
            raise StreamEnded(bad_response(str(exc))) from None
        if part is None:
            return
        if isinstance(part, JobError):
            raise StreamEnded(Outcome(JobStatus.FAILED, error=part))
        self.size += len(part.encode()) + 1
        if self.size > self.ctx.max_output_bytes:
            raise StreamEnded(bad_response(f"the replica's streamed output is over {self.ctx.max_output_bytes} "
                                           f"bytes"))
        found = self.ctx.store.jobs.append_part(self.job_id, self.token, part, self.ctx.max_parts)
        if found is AppendReply.TOO_MANY:
            raise StreamEnded(Outcome(JobStatus.FAILED, error=JobError(
                "too_many_parts", f"the output has more than {self.ctx.max_parts} parts")))
        if isinstance(found, AppendReply):  # the claim is lost: the commit will be refused as well
            raise StreamEnded(Outcome(JobStatus.FAILED, error=JobError("stale", f"the run's claim is {found}")))


def call(ctx: WorkerContext, model: ModelConfig, started: Started, token: str) -> Outcome | Fault:
    """Send the job to its replica, the whole exchange within the request timeout: the outcome of its answer, or
    the replica's fault. A replica that says "not now" (429, 503, Cog's 409) is asked again, after its
    ``Retry-After``, while the deadline allows. A streamed answer's parts are appended as they come."""
    protocol = protocol_for(model)
    request = protocol.request(started.job.id, started.job.input or "null")  # (a start reads it)
    limit = run_timeout(model, started.job)
    until = time.monotonic() + limit
    readers: list[PartReader] = []

    def lines(status: int, headers: Mapping[str, str]) -> Callable[[bytes], None] | None:
        reader = protocol.parts(status, headers)
        if reader is None:
            return None
        readers.append(reader)
        return PartSink(ctx, started.job.id, token, reader).take

    while True:
        readers.clear()
        try:
            response, body = transport.ask(ctx.http, request.method, started.slot.endpoint + request.path, until,
                                           ctx.max_output_bytes, lines, body=request.body,
                                           headers=dict(request.headers))
        except StreamEnded as ended:
            return ended.outcome
        except urllib3.exceptions.DecodeError as exc:  # it answered, in an encoding that does not decode
            return bad_response(f"the replica's answer does not decode: {exc}")
        except transport.CALL_FAILURES as exc:
            return judge(ctx, model, started.slot.endpoint, exc, limit if time.monotonic() >= until else None)
        except ValueError as exc:  # a streamed answer's line over the limit
            return bad_response(f"the replica's answer: {exc}")
        if body is None:
            return bad_response(f"the replica's answer is over {ctx.max_output_bytes} bytes")
        try:
            if readers:
                return readers[0].outcome(limit)
            if busy := transient(response.status, response.headers):
                raise busy
            return protocol.outcome(response.status, response.headers, body, limit)
        except ReplicaBusy as busy:
            pause = max(BUSY_PAUSE, busy.retry_after or 0.0)
            if time.monotonic() + pause > until:
                return Fault(f"busy until the request timeout: {busy}")
            time.sleep(pause)
        except Exception as exc:  # an answer no adapter foresaw fails the job, never the worker
            return bad_response(f"{type(exc).__name__}: {exc}")


def run_timeout(model: ModelConfig, job: Job) -> float:
    """How long the job's run may take: its execution timeout, within the model's request timeout."""
    limit = job.options.execution_timeout
    return model.jobs.request_timeout if limit is None else min(limit, model.jobs.request_timeout)


def judge(ctx: WorkerContext, model: ModelConfig, endpoint: str, exc: Exception, timed_out: float | None) -> Fault:
    """What a failed exchange says, asked of a probe: a replica that answers it is alive, so a request that ran out
    of time (``timed_out``: the seconds it had) was slow, and a broken connection is tried elsewhere without
    condemning it; a replica that does not answer is gone."""
    reason = f"{type(exc).__name__}: {exc}"[:1000]
    found = transport.probe(ctx.http, protocol_for(model), endpoint,
                            time.monotonic() + min(PROBE_TIMEOUT, model.jobs.request_timeout))
    if found is None or found[0] is not Readiness.READY:
        return Fault(f"{reason}; and no answer to a readiness probe", gone=True)
    if timed_out is not None:
        return Fault(f"no complete answer within the timeout of {timed_out:g} s", slow=True)
    return Fault(reason)
