"""The job service both front doors call: submits, reads and the views of models and hosts."""

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import redis
from redis.sentinel import MasterNotFoundError

from gateway import errors
from gateway.auth import Guard, Waiters, parse_digests
from gateway.schemas import HostList, JobListQuery, ModelView, ScaleBody, ScaleView, WaitingView
from gateway.webhooks import Targets
from workers.config import ModelConfig, Settings
from workers.job import Job, JobOptions, JobStatus, View
from workers.scaling.policy import configured_bounds
from workers.store import Store
from workers.store.jobs import Existing, Idempotency, JobStore, Refusal, Unreplicated
from workers.store.records import ColdStart, FailedDelivery, JobPage, ModelSnapshot, ScaleBounds
from workers.store.replies import CancelReply, RedeliverReply, ResubmitReply, ScaleReply, WithdrawReply

WITHDRAW_FOR = 10.0  # seconds from its start a submit whose answer was lost keeps trying to take its job back
LONGEST_ID = 128  # a longer job id is unknown without a lookup
LONGEST_IDEMPOTENCY_KEY = 255


@dataclass(frozen=True)
class Accepted:
    """A submit's job, and whether it is one an idempotency key made before (``replayed``: nothing was sent)."""

    job: Job
    replayed: bool = False


def idempotency_key(header: str | None) -> str:
    """The Idempotency-Key header's value ('' if absent); InvalidIdempotencyKey if empty (or blank), too long or not
    printable ASCII."""
    if header is None:
        return ""
    if not header.strip() or len(header) > LONGEST_IDEMPOTENCY_KEY or not (header.isascii() and header.isprintable()):
        raise errors.InvalidIdempotencyKey(f"an Idempotency-Key is 1 to {LONGEST_IDEMPOTENCY_KEY} printable ASCII "
                                           f"characters")
    return header


def said(bounds: ScaleBounds) -> str:
    """Replica bounds in an event's reason."""
    return f"min_replicas={bounds.min_replicas} max_replicas={bounds.max_replicas}"


STREAM_PAUSE = 0.25  # seconds a stream waits on the job's end between reads of its parts
WAITING_EVERY = 1.0  # seconds between two reads of what a streamed job waits for


def unknown(job_id: str) -> errors.UnknownJob:
    """The refusal of a job the caller cannot see: unknown, another key's, or expired."""
    return errors.UnknownJob(f"no job {job_id[:LONGEST_ID]!r} (unknown, or expired after its retention)")


def sse(event: str, data: str, index: int | None = None) -> str:
    """One Server-Sent Event (``data`` is one line of JSON)."""
    head = f"id: {index}\n" if index is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


class Gateway:
    """The gateway's handlers over its clients."""

    def __init__(self, settings: Settings, models: dict[str, ModelConfig], store: Store,
                 waits: Store | None = None) -> None:
        self.settings = settings
        self.models = models
        self.store = store  # every command but the waits: short timeouts (a hung Redis answers soon)
        self.waits = waits or store  # blocking waits, whose timeout is the wait's own
        self.guard = Guard(store.limits, parse_digests(settings.api_keys), settings.auth_failures_per_minute,
                           settings.rate_limit, parse_digests(settings.metrics_token))
        self.waiters = Waiters(settings.max_waiters, settings.max_waiters_per_key)
        self.log_requests = threading.BoundedSemaphore(4)  # requests of replica logs in flight (each waits ≤ 5 s)
        self.targets = Targets(settings.webhook_allow_networks)
        self.default_webhooks = {who if who == "*" else who[:16]: url for who, url in settings.webhooks.items()}

    def model(self, name: str) -> ModelConfig:
        """The named model, or UnknownModel."""
        if name not in self.models:
            raise errors.UnknownModel(f"no model named {name!r}; GET /v1/models lists them")
        return self.models[name]

    def job(self, job_id: str, owner: str) -> Job:
        """The caller's job, or UnknownJob (also for another key's job, and for any id the platform never made)."""
        job = self.store.jobs.get(job_id) if len(job_id) <= LONGEST_ID else None
        if job is None or job.owner != owner:
            raise unknown(job_id)
        return job

    def jobs(self, owner: str, query: JobListQuery) -> JobPage:
        """The caller's jobs, newest first, as the query asks (UnknownModel for a model not served)."""
        if query.model is not None:
            self.model(query.model)
        return self.store.jobs.listed(owner, query.model, query.status, query.before, query.limit)

    def scale(self, model: ModelConfig, body: ScaleBody, by: str) -> ScaleView:
        """Set an operator's replica bounds of the model (merged with those in effect), recorded as an event
        naming ``by``: the bounds now in effect; InvalidInput if min_replicas would exceed max_replicas."""
        found = self.store.replicas.set_scale(model.name, configured_bounds(model.scaling), by, body.min_replicas,
                                              body.max_replicas)
        if isinstance(found, ScaleReply):  # INVALID
            raise errors.InvalidInput(f"min_replicas would exceed max_replicas once merged with the bounds in effect "
                                      f"(GET /v1/models/{model.name} shows them)")
        self.store.events.record(model.name, "scale_set", reason=f"{said(found.bounds)} (were {said(found.was)}, "
                                                                 f"{found.was.source}), by {by}")
        return ScaleView.of(model.name, found.bounds)

    def unscale(self, model: ModelConfig, by: str) -> ScaleView:
        """Remove an operator's replica bounds of the model, recorded as an event naming ``by``: the models file's
        bounds, in effect again."""
        removed = self.store.replicas.clear_scale(model.name)
        configured = configured_bounds(model.scaling)
        if removed is not None:
            self.store.events.record(model.name, "scale_reset", reason=f"{said(configured)} from the models file "
                                                                       f"(were {said(removed)}), by {by}")
        return ScaleView.of(model.name, configured)

    def webhook(self, asked: str | None, owner: str) -> str:
        """The webhook of a new job: the one asked for (InvalidWebhook unless its target is allowed), else the
        key's default (checked when delivered), else none."""
        if asked is None:
            if not self.settings.webhook_secret:
                return ""
            return self.default_webhooks.get(owner) or self.default_webhooks.get("*", "")
        if not self.settings.webhook_secret:
            raise errors.InvalidWebhook("webhooks are off: the platform has no SM_WEBHOOK_SECRET to sign them with")
        self.targets.target(asked)
        return asked

    def submit(self, model: ModelConfig, payload: dict[str, Any], wait: float, owner: str,
               result_only: bool = False) -> Job:
        """Record the job and push its message (one script: both or neither), then wait up to ``wait`` seconds."""
        return self.accept(model, payload, wait, owner, result_only=result_only).job

    def accept(self, model: ModelConfig, payload: dict[str, Any], wait: float, owner: str,
               idempotency: str = "", options: JobOptions | None = None, result_only: bool = False,
               webhook: str | None = None, view: View = View.NATIVE) -> Accepted:
        """Submit (see ``submit``) with ``options`` (the model's defaults filled in), its end delivered to
        ``webhook`` (or the key's default) as ``view``; with an idempotency key, the job it made before if the
        request (input, options and webhook) is the same (IdempotencyConflict if not). Past the cap on waiting
        requests the job is answered unwaited, or, for a door that answers only with the result
        (``result_only``), refused with TooManyWaiting before anything is recorded."""
        hook = self.webhook(webhook, owner)
        with self.waiters.admit(owner) if wait > 0 else contextlib.nullcontext(False) as admitted:
            if wait > 0 and not admitted and result_only:
                raise errors.TooManyWaiting(f"{self.waiters.total} requests wait already (at most "
                                            f"{self.waiters.per_key} per key); retry in a moment")
            recorded = self.record(model, payload, owner, idempotency, options or JobOptions(), hook, view)
            waited = wait if admitted else 0.0  # past the caps: answer now, the client polls the job
            if isinstance(recorded, Existing):
                return Accepted(self.wait_for(recorded.job, waited), replayed=True)
            return Accepted(self.wait_for(recorded, waited))

    def record(self, model: ModelConfig, payload: dict[str, Any], owner: str, idempotency: str,
               asked: JobOptions, webhook: str, view: View = View.NATIVE) -> Job | Existing:
        """Record the job and push its message (one script: both or neither): the job, the one an earlier request
        with the same idempotency key made, or why it was refused."""
        job = JobStore.new(model.name, payload, owner,
                           options=model.jobs.options(asked.ttl, asked.execution_timeout, asked.priority),
                           webhook=webhook, view=view)
        request = {"model": model.name, "input": payload, "options": asked.fields(), "webhook": webhook,
                   "view": view.value}
        once = Idempotency(idempotency, Idempotency.digest_of(request),
                           self.settings.idempotency_retention) if idempotency else None
        began = time.monotonic()
        try:
            recorded = self.store.jobs.submit(job, model.jobs.max_queued, model.jobs.max_queued_per_key, once,
                                              model.jobs.priority_aging)
        except redis.OutOfMemoryError as exc:  # refused at its first write: nothing was recorded
            raise errors.StoreFull(f"the job store is full ({exc}); retry once finished jobs expire") from exc
        except redis.RedisError as exc:
            recorded = self.settle(job, exc, began + WITHDRAW_FOR)
        if recorded is Refusal.FULL:
            raise errors.QueueFull(f"{model.name!r} has {model.jobs.max_queued} jobs waiting; retry later")
        if recorded is Refusal.KEY_FULL:
            raise errors.QueueFull(f"{model.jobs.max_queued_per_key} jobs of this key wait for {model.name!r}; "
                                   f"retry once some have started")
        if recorded is Refusal.CONFLICT:
            raise errors.IdempotencyConflict("this Idempotency-Key was used with another request; use a new key")
        return recorded

    def wait_for(self, job: Job, wait: float) -> Job:
        """The job once finished, or as it is after ``wait`` seconds (its caller holds a waiting place)."""
        if wait <= 0 or job.status.finished:
            return job
        try:
            return self.waits.jobs.wait(job.id, min(wait, self.settings.max_wait)) or job
        except redis.RedisError:  # the job is accepted: never a 503 for it now
            return job

    def settle(self, job: Job, error: redis.RedisError, deadline: float) -> Job:
        """A submit that failed: 503 only once the job surely will not run (it was never recorded, or it was taken
        back); the job if it stays (a worker has it); 504 if Redis stays away until ``deadline`` (monotonic) so
        that nobody can tell."""
        if isinstance(error, MasterNotFoundError) or (isinstance(error, (redis.ConnectionError, redis.TimeoutError))
                                                      and "connecting to" in str(error).lower()):
            raise errors.Unavailable(f"the job store is unreachable: {error}")  # nothing was sent
        while True:
            try:
                kept = self.store.jobs.withdraw(job)
                break
            except redis.RedisError as exc:
                if time.monotonic() > deadline:
                    raise errors.OutcomeUnknown(f"the job store went away while job {job.id} was submitted: "
                                                f"{exc}; GET /v1/jobs/{job.id} tells once it is back") from exc
                time.sleep(0.2)
        if isinstance(kept, WithdrawReply):
            raise errors.Unavailable(f"the job store failed during the submit ({error}); nothing was kept")
        if isinstance(error, Unreplicated):  # a worker took it already: it runs, but a failover could lose it
            raise errors.OutcomeUnknown(f"job {job.id} runs, but no Redis replica held it in time ({error}); "
                                        f"GET /v1/jobs/{job.id} tells whether it stays")
        try:
            return self.store.jobs.get(job.id) or replace(job, status=kept)
        except redis.RedisError:
            return replace(job, status=kept)

    def stream(self, job_id: str, owner: str, after: int, view: Callable[[Job], str]) -> Iterator[str]:
        """The caller's job's parts after index ``after`` as Server-Sent Events as they come, then ``done`` with
        the job's view (``error`` if the job store fails); holds a waiting place (TooManyWaiting past the cap)."""
        job = self.job(job_id, owner)
        place = self.waiters.admit(owner)
        if not place.__enter__():
            place.__exit__(None, None, None)
            raise errors.TooManyWaiting(f"{self.waiters.total} requests wait already (at most "
                                        f"{self.waiters.per_key} per key); retry in a moment")
        return self.events(job, after, view, place, time.monotonic() + self.settings.max_wait)

    def events(self, job: Job, after: int, view: Callable[[Job], str],
               place: contextlib.AbstractContextManager[bool], until: float = math.inf) -> Iterator[str]:
        """The events of ``stream``; the waiting place is given back when the client goes. A stream open at
        ``until`` (monotonic) ends without ``done``: the client resumes it with ``Last-Event-ID``. A part's id is
        its number over the job's runs; resumed from an id of an earlier run (the job was run again since), or if
        the job is run again under way, the stream sends ``restart`` (what came before is void), then the run's
        parts from its first. While the job waits, a ``waiting`` event (no id) says what for, again whenever that
        changes (read at most every ``WAITING_EVERY`` seconds)."""
        shown: tuple[str, str, str] | None = None
        next_look = 0.0
        index = max(0, after - job.parts_base + 1)  # of the run's next part
        try:
            if 0 <= after < job.parts_base:  # the client's last part is of an earlier run
                yield sse("restart", json.dumps({"first": job.parts_base}))
            while True:
                finished = job.status.finished
                run, parts = self.store.jobs.run_parts(job.id, index)
                if run != job.run:  # run again since it was read: what came was the next run's
                    fresh = self.store.jobs.get(job.id)
                    if fresh is None:  # expired after its retention: there is no run to restart with
                        yield sse("error", json.dumps({"error": {"code": "unknown_job", "message": (
                            f"job {job.id} expired after its retention")}}))
                        return
                    job, index = fresh, 0
                    yield sse("restart", json.dumps({"first": job.parts_base}))
                    continue
                for part in parts:
                    yield sse("part", part, job.parts_base + index)
                    index += 1
                if finished:
                    yield sse("done", view(job))
                    return
                if job.status is JobStatus.QUEUED and time.monotonic() >= next_look:
                    next_look = time.monotonic() + WAITING_EVERY
                    waiting = self.store.jobs.waiting(job.id)
                    if waiting is not None and (waiting.reason, waiting.replica, waiting.stage) != shown:
                        shown = (waiting.reason, waiting.replica, waiting.stage)
                        yield sse("waiting", WaitingView.of(waiting).model_dump_json())
                if time.monotonic() >= until:
                    return
                job = self.waits.jobs.wait(job.id, STREAM_PAUSE) or job
        except redis.RedisError as exc:
            yield sse("error", json.dumps({"error": {"code": "unavailable", "message": str(exc)[:500]}}))
        finally:
            place.__exit__(None, None, None)

    def view(self, model: ModelConfig) -> ModelView:
        """The model as the store sees it."""
        return ModelView.of(model, self.store.replicas.snapshot(model.name, model.scaling.seeds),
                            self.store.replicas.cold_starts(model.name))

    def cold_start(self, job: Job) -> ColdStart | None:
        """The cold start the job waited for, while it is kept."""
        return self.store.replicas.cold_start(job.cold_start) if job.cold_start else None

    def hosts(self) -> HostList:
        """The hosts as the leader last saw them, with the replicas of every model (served or not) on each."""
        names = dict.fromkeys([*self.models, *sorted(self.store.jobs.models_held())])
        return HostList.of(self.store.replicas.hosts(), [r for name in names for r in self.store.replicas.of(name)])

    def cancel(self, job_id: str, owner: str) -> Job:
        """Cancel the caller's job (best-effort once running): the job as it is then; JobFinished if it had."""
        found, job = self.store.jobs.cancel_own(job_id, owner) if len(job_id) <= LONGEST_ID else (None, None)
        if job is None:
            raise unknown(job_id)
        if found is not CancelReply.OK:
            raise errors.JobFinished(f"job {job.id} already finished as {job.status}")
        return job

    def retry(self, job_id: str, owner: str) -> Job:
        """Queue the caller's FAILED or CANCELLED job again: same id, attempts kept; NotRetryable if it cannot."""
        job = self.job(job_id, owner)
        if job.model not in self.models:
            raise errors.NotRetryable(f"job {job.id}'s model {job.model!r} is no longer served")
        limits = self.models[job.model].jobs
        found = self.store.jobs.resubmit(job.id, limits.max_queued, limits.max_queued_per_key)
        if found is ResubmitReply.FULL:
            raise errors.QueueFull(f"{job.model!r} has {limits.max_queued} jobs waiting; retry later")
        if found is ResubmitReply.KEY_FULL:
            raise errors.QueueFull(f"{limits.max_queued_per_key} jobs of this key wait for {job.model!r}; retry once "
                                   f"some have started")
        if found is ResubmitReply.HELD:
            raise errors.NotRetryable(f"job {job.id} was cancelled while it ran and its call has not returned yet; "
                                      f"retry in a moment")
        if found is ResubmitReply.REVOKED:
            raise errors.NotRetryable(f"job {job.id}'s Celery task was revoked, and Celery workers drop a revoked "
                                      f"task's messages for as long as they remember it; submit the input anew")
        if found is ResubmitReply.MISSING:
            raise errors.UnknownJob(f"no job {job.id!r} (expired after its retention)")
        if found is not ResubmitReply.OK:
            raise errors.NotRetryable(f"job {job.id} is {found}: only a FAILED or CANCELLED job can be retried")
        return self.job(job.id, owner)

    def take_parts(self, job: Job) -> list[Any]:
        """The job's parts not handed out yet to a poller of RunPod's stream/<id>, now taken."""
        return [json.loads(part) for part in self.store.jobs.take_parts(job.id)]

    def purge(self, model: ModelConfig, owner: str | None) -> int:
        """Cancel the model's waiting jobs (only ``owner``'s, if given): how many."""
        return self.store.jobs.purge(model.name, owner)

    def failed_deliveries(self, owner: str, limit: int) -> list[FailedDelivery]:
        """The caller's given-up webhook deliveries, newest first."""
        return self.store.webhooks.failed(owner, limit)

    def redeliver(self, job_id: str, owner: str) -> Job:
        """Deliver the caller's given-up webhook again (a new window of retries); UnknownDelivery if it is not one."""
        if len(job_id) > LONGEST_ID or self.store.webhooks.redeliver(job_id, owner) is not RedeliverReply.OK:
            raise errors.UnknownDelivery(f"no failed webhook delivery of job {job_id[:LONGEST_ID]!r} "
                                         f"(GET /v1/webhooks/failed lists them)")
        return self.job(job_id, owner)

    def snapshot(self, model: ModelConfig) -> ModelSnapshot:
        """The model as the store sees it now."""
        return self.store.replicas.snapshot(model.name, model.scaling.seeds)
