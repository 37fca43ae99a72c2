"""The gateway's Flask app factory (served by gunicorn: ``gunicorn 'gateway.app:create_app()'``)."""

import json
import math
import threading
import time
from dataclasses import replace
from typing import Any

import redis
from flask import Response, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from flask_openapi3 import Info, OpenAPI, Tag
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError
from werkzeug.exceptions import BadRequest, ClientDisconnected, RequestEntityTooLarge, UnsupportedMediaType
from werkzeug.middleware.proxy_fix import ProxyFix

from gateway import errors
from gateway.auth import Guard, Waiters, parse_digests
from gateway.schemas import (
    ErrorBody,
    EventList,
    EventQuery,
    EventView,
    Health,
    HostList,
    JobInput,
    JobPath,
    JobView,
    LogQuery,
    ModelList,
    ModelPath,
    ModelView,
    Purged,
    ReplicaLog,
    ReplicaPath,
    WaitQuery,
    iso,
)
from workers.config import ModelConfig, Settings
from workers.job import Job
from workers.protocols.base import float_sized
from workers.store import Store, urls
from workers.store.jobs import JobStore, Refusal, Unreplicated
from workers.store.replies import CancelReply, ResubmitReply, WithdrawReply

SECURED: list[dict[str, list[str]]] = [{"bearer": []}]  # API keys, when SM_API_KEYS is set
JOBS = Tag(name="jobs", description="submit, read and cancel inference jobs")
MODELS = Tag(name="models", description="served models, their queues and replicas")
HOSTS = Tag(name="hosts", description="the machines replicas run on")
BODILESS = {"retry_job"}  # POST routes that take no body (no Content-Type needed)
ERRORS: dict[Any, Any] = {400: ErrorBody, 401: ErrorBody, 404: ErrorBody, 413: ErrorBody, 415: ErrorBody,
                          422: ErrorBody, 429: ErrorBody, 503: ErrorBody, 507: ErrorBody}
WITHDRAW_FOR = 10.0  # seconds from its start a submit whose answer was lost keeps trying to take its job back
LONGEST_ID = 128  # a longer job id is unknown without a lookup


class Gateway:
    """The gateway's handlers over its clients."""

    def __init__(self, settings: Settings, models: dict[str, ModelConfig], store: Store,
                 waits: Store | None = None) -> None:
        self.settings = settings
        self.models = models
        self.store = store  # every command but the waits: short timeouts (a hung Redis answers soon)
        self.waits = waits or store  # blocking waits, whose timeout is the wait's own
        self.guard = Guard(store.limits, parse_digests(settings.api_keys), settings.auth_failures_per_minute,
                           settings.rate_limit)
        self.waiters = Waiters(settings.max_waiters, settings.max_waiters_per_key)
        self.log_requests = threading.BoundedSemaphore(4)  # requests of replica logs in flight (each waits ≤ 5 s)

    def model(self, name: str) -> ModelConfig:
        """The named model, or UnknownModel."""
        if name not in self.models:
            raise errors.UnknownModel(f"no model named {name!r}; GET /v1/models lists them")
        return self.models[name]

    def job(self, job_id: str, owner: str) -> Job:
        """The caller's job, or UnknownJob (also for another key's job, and for any id the platform never made)."""
        job = self.store.jobs.get(job_id) if len(job_id) <= LONGEST_ID else None
        if job is None or job.owner != owner:
            raise errors.UnknownJob(f"no job {job_id[:LONGEST_ID]!r} (unknown, or expired after its retention)")
        return job

    def submit(self, model: ModelConfig, payload: dict[str, Any], wait: float, owner: str) -> Job:
        """Record the job and push its message (one script: both or neither), then wait up to ``wait`` seconds."""
        job = JobStore.new(model.name, payload, owner)
        began = time.monotonic()
        try:
            recorded = self.store.jobs.submit(job, model.jobs.max_queued, model.jobs.max_queued_per_key)
        except redis.OutOfMemoryError as exc:  # refused at its first write: nothing was recorded
            raise errors.StoreFull(f"the job store is full ({exc}); retry once finished jobs expire") from exc
        except redis.RedisError as exc:
            recorded = self.settle(job, exc, began + WITHDRAW_FOR)
        if recorded is Refusal.FULL:
            raise errors.QueueFull(f"{model.name!r} has {model.jobs.max_queued} jobs waiting; retry later")
        if recorded is Refusal.KEY_FULL:
            raise errors.QueueFull(f"{model.jobs.max_queued_per_key} jobs of this key wait for {model.name!r}; "
                                   f"retry once some have started")
        if wait <= 0:
            return recorded
        with self.waiters.admit(owner) as admitted:
            if not admitted:  # too many waits at once: answer now, the client polls the job
                return recorded
            try:
                return self.waits.jobs.wait(recorded.id, min(wait, self.settings.max_wait)) or recorded
            except redis.RedisError:  # the job is accepted: never a 503 for it now
                return recorded

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
        if found is ResubmitReply.MISSING:
            raise errors.UnknownJob(f"no job {job.id!r} (expired after its retention)")
        if found is not ResubmitReply.OK:
            raise errors.NotRetryable(f"job {job.id} is {found}: only a FAILED or CANCELLED job can be retried")
        return self.job(job.id, owner)

    def purge(self, model: ModelConfig, owner: str | None) -> int:
        """Cancel the model's waiting jobs (only ``owner``'s, if given): how many."""
        return self.store.jobs.purge(model.name, owner)

    def view(self, model: ModelConfig) -> ModelView:
        """The model as the store sees it."""
        return ModelView.of(model, self.store.replicas.snapshot(model.name, model.scaling.seeds))

    def hosts(self) -> HostList:
        """The hosts as the leader last saw them, with the replicas of every model (served or not) on each."""
        names = dict.fromkeys([*self.models, *sorted(self.store.jobs.models_held())])
        return HostList.of(self.store.replicas.hosts(), [r for name in names for r in self.store.replicas.of(name)])


def respond(body: Any, status: int = 200) -> Response:
    """A pydantic model as a JSON response."""
    response = jsonify(body.model_dump(mode="json"))
    response.status_code = status
    return response


def authenticate(gateway: Gateway) -> None:
    """Who calls (g.principal), within their limits; only the /v1 API needs a key."""
    g.principal = ""
    if request.path.startswith("/v1/"):
        g.principal = gateway.guard.check(request.headers.get("Authorization"), request.remote_addr or "unknown")


def parse_json_body() -> None:
    """Reject a body that is not JSON before any handler runs (415, 400)."""
    if request.method not in ("POST", "PUT", "PATCH") or request.endpoint in BODILESS:
        return
    if not request.is_json:
        raise UnsupportedMediaType("send the model's input as Content-Type: application/json")
    limit = request.max_content_length
    try:
        if request.content_length is None and limit is not None and len(request.get_data(cache=True)) >= limit:
            raise RequestEntityTooLarge()  # a chunked body is cut at the limit rather than refused by werkzeug
        request.get_json()
    except ClientDisconnected as exc:  # werkzeug's word for a body cut short, by the client or by its deadline
        raise errors.IncompleteBody("the request's body did not arrive whole within SM_HEADER_TIMEOUT seconds of "
                                    "its first byte") from exc
    except BadRequest as exc:
        raise errors.MalformedJson("the body is not valid JSON") from exc
    except RecursionError as exc:
        raise errors.MalformedJson("the body is nested too deeply") from exc


class StrictJSON(DefaultJSONProvider):
    """JSON as the standard says: NaN, Infinity and numbers too large for a float are malformed in a request."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse, refusing what is not a finite number."""
        return json.loads(s, parse_constant=refuse_constant, parse_float=finite, parse_int=float_sized, **kwargs)


def refuse_constant(name: str) -> Any:
    """``json.loads``'s hook for NaN and Infinity."""
    raise ValueError(f"{name} is not JSON")


def finite(text: str) -> float:
    """``json.loads``'s hook for a number with a fraction or exponent: a finite float, or ValueError (1e999)."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of range")
    return number


def create_app(settings: Settings | None = None) -> OpenAPI:
    """The gateway app for the given settings (from the environment by default)."""
    settings = settings or Settings()
    commands = Store.of(gateway_client(settings.redis_url, settings.redis_timeout), settings.job_retention,
                        replicas=settings.redis_replicas, replicas_within=settings.redis_timeout / 2)
    waits = Store.of(gateway_client(settings.redis_url, settings.max_wait + 5), settings.job_retention)
    gateway = Gateway(settings, settings.load_models(), commands, waits)
    app = OpenAPI(__name__, info=Info(title="serverless-model", version="0.1.0"),
                  security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
                  validation_error_status=422, validation_error_model=ErrorBody,
                  validation_error_callback=errors.validation_error)
    app.json = StrictJSON(app)
    if settings.trusted_proxies:  # the client is who the last trusted proxies say (else anyone could say so)
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies,  # type: ignore[method-assign]
                                x_proto=settings.trusted_proxies)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.before_request(lambda: authenticate(gateway))
    app.before_request(parse_json_body)
    errors.register(app)

    @app.post("/v1/models/<model>/jobs", security=SECURED, tags=[JOBS],
              responses={200: JobView, 202: JobView, 429: ErrorBody, 504: ErrorBody, **ERRORS})
    def submit_job(path: ModelPath, query: WaitQuery, body: JobInput) -> Response:
        """Submit a job; with ?wait=<s>, block up to that long for its result."""
        job = gateway.submit(gateway.model(path.model), body.root, query.wait, g.principal)
        return respond(JobView.of(job), 200 if job.status.finished else 202)

    @app.get("/v1/jobs/<job_id>", security=SECURED, tags=[JOBS], responses={200: JobView, **ERRORS})
    def get_job(path: JobPath) -> Response:
        """A job's status, output or error, timings, replica and attempts."""
        return respond(JobView.of(gateway.job(path.job_id, g.principal)))

    @app.delete("/v1/jobs/<job_id>", security=SECURED, tags=[JOBS], responses={200: JobView, 409: ErrorBody, **ERRORS})
    def cancel_job(path: JobPath) -> Response:
        """Cancel a queued job; a running one is cancelled best-effort (its result is discarded)."""
        job = gateway.job(path.job_id, g.principal)
        if gateway.store.jobs.cancel(job.id) is not CancelReply.OK:
            raise errors.JobFinished(f"job {job.id} already finished as {gateway.job(job.id, g.principal).status}")
        return respond(JobView.of(gateway.job(job.id, g.principal)))

    @app.post("/v1/jobs/<job_id>/retry", security=SECURED, tags=[JOBS],
              responses={200: JobView, 409: ErrorBody, **ERRORS})
    def retry_job(path: JobPath) -> Response:
        """Queue a FAILED (expired too) or CANCELLED job again: same id, attempts kept, output and error cleared."""
        return respond(JobView.of(gateway.retry(path.job_id, g.principal)))

    @app.delete("/v1/models/<model>/queue", security=SECURED, tags=[MODELS], responses={200: Purged, **ERRORS})
    def purge_queue(path: ModelPath) -> Response:
        """Cancel every waiting (not running) job of the model; with API keys, the caller's own."""
        model = gateway.model(path.model)
        return respond(Purged(cancelled=gateway.purge(model, g.principal if gateway.guard.accepted else None)))

    @app.get("/v1/models", security=SECURED, tags=[MODELS], responses={200: ModelList})
    def list_models() -> Response:
        """Every served model with its queue, replicas and moving averages."""
        return respond(ModelList(models=[gateway.view(m) for m in gateway.models.values()]))

    @app.get("/v1/models/<model>", security=SECURED, tags=[MODELS], responses={200: ModelView, **ERRORS})
    def get_model(path: ModelPath) -> Response:
        """One model: queue depth, in flight, moving averages, replicas and an example input."""
        return respond(gateway.view(gateway.model(path.model)))

    @app.get("/v1/models/<model>/replicas/<replica>/logs", security=SECURED, tags=[MODELS],
             responses={200: ReplicaLog, **ERRORS})
    def replica_logs(path: ReplicaPath, query: LogQuery) -> Response:
        """The last lines a replica printed (its container's output, or its process's log file)."""
        model = gateway.model(path.model)
        replica = gateway.store.replicas.get(path.replica) if len(path.replica) <= LONGEST_ID else None
        if replica is None or replica.model != model.name:
            raise errors.UnknownReplica(f"{model.name!r} has no replica {path.replica[:LONGEST_ID]!r}")
        if not gateway.log_requests.acquire(blocking=False):
            raise errors.RateLimited("too many log requests at once; retry")
        try:
            lines = gateway.waits.replicas.ask_logs(replica.id, query.tail, timeout=5)
        finally:
            gateway.log_requests.release()
        if lines is None:
            raise errors.Unavailable("no autoscaler answered (the leading one reads the logs); retry")
        return respond(ReplicaLog(replica=replica.id, lines=lines))

    @app.get("/v1/events", security=SECURED, tags=[MODELS], responses={200: EventList, **ERRORS})
    def list_events(query: EventQuery) -> Response:
        """The autoscaler's decisions and lifecycle events with their reasons, newest first (with API keys, the
        events about jobs show only the caller's)."""
        if query.model is not None:
            gateway.model(query.model)
        owner = g.principal if gateway.guard.accepted else None
        events = gateway.store.events.recent(query.model, query.limit, owner)
        return respond(EventList(events=[EventView(at=iso(e.at), model=e.model, kind=e.kind, replica=e.replica,
                                                   reason=e.reason, job=e.job) for e in events]))

    @app.get("/v1/hosts", security=SECURED, tags=[HOSTS], responses={200: HostList, **ERRORS})
    def list_hosts() -> Response:
        """The machines replicas may run on (state, address, capacity, GPUs) and the replicas on each, as the
        leading autoscaler last saw them."""
        return respond(gateway.hosts())

    @app.get("/healthz", responses={200: Health})
    def healthz() -> Response:
        """The process is alive."""
        return respond(Health(status="ok"))

    @app.get("/readyz", responses={200: Health, 503: ErrorBody})
    def readyz() -> Response:
        """Redis is reachable."""
        try:
            gateway.store.ping()
        except redis.RedisError as exc:
            raise errors.Unavailable(f"redis unreachable: {exc}") from exc
        return respond(Health(status="ok"))

    @app.get("/openapi.json", doc_ui=False)
    def openapi_json() -> Response:
        """The OpenAPI document."""
        return jsonify(app.api_doc)

    return app


def gateway_client(url: str, timeout: float) -> redis.Redis:
    """A client of the gateway whose commands give up after ``timeout`` seconds. No retries inside redis-py: a
    submit must know whether its one call reached Redis (see Gateway.settle)."""
    return urls.client(url, decode_responses=True, encoding_errors="replace", socket_timeout=timeout,
                       socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
