"""The gateway's Flask app factory (served by gunicorn: ``gunicorn 'gateway.app:create_app()'``)."""

import contextlib
from typing import Any

import redis
from celery import Celery
from flask import Response, g, jsonify, request
from flask_openapi3 import Info, OpenAPI, Tag
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge, UnsupportedMediaType

from gateway import auth, errors
from gateway.schemas import (
    ErrorBody,
    EventList,
    EventQuery,
    EventView,
    Health,
    JobInput,
    JobPath,
    JobView,
    ModelList,
    ModelPath,
    ModelView,
    WaitQuery,
    iso,
)
from workers.celery_app import TASK_NAME, create_celery
from workers.config import ModelConfig, Settings
from workers.events import EventLog
from workers.jobs import Job, JobStatus, JobStore
from workers.registry import ReplicaRegistry

SECURED: list[dict[str, list[str]]] = [{"bearer": []}]  # API keys, when SM_API_KEYS is set
JOBS = Tag(name="jobs", description="submit, read and cancel inference jobs")
MODELS = Tag(name="models", description="served models, their queues and replicas")
ERRORS: dict[Any, Any] = {400: ErrorBody, 401: ErrorBody, 404: ErrorBody, 413: ErrorBody, 415: ErrorBody,
                          422: ErrorBody, 429: ErrorBody, 503: ErrorBody}


class Gateway:
    """The gateway's handlers over its clients."""

    def __init__(self, settings: Settings, models: dict[str, ModelConfig], client: redis.Redis,
                 celery: Celery) -> None:
        self.settings = settings
        self.models = models
        self.redis = client
        self.store = JobStore(client, settings.job_retention)
        self.registry = ReplicaRegistry(client)
        self.events = EventLog(client)
        self.celery = celery
        self.api_keys = auth.parse_digests(settings.api_keys)

    def model(self, name: str) -> ModelConfig:
        """The named model, or UnknownModel."""
        if name not in self.models:
            raise errors.UnknownModel(f"no model named {name!r}; GET /v1/models lists them")
        return self.models[name]

    def job(self, job_id: str, owner: str) -> Job:
        """The caller's job, or UnknownJob (also for another key's job)."""
        job = self.store.get(job_id)
        if job is None or job.owner != owner:
            raise errors.UnknownJob(f"no job {job_id!r} (unknown, or expired after its retention)")
        return job

    def submit(self, model: ModelConfig, payload: dict[str, Any], wait: float, owner: str) -> Job:
        """Record the job, then enqueue it; 503 if either fails (nothing is left of a job not enqueued).

        Recording first means a task always finds its job. Should this process die between the two
        steps, the autoscaler sends the task of a QUEUED job that nobody claims.
        """
        job = JobStore.new(model.name, payload, owner)
        try:
            recorded = self.store.record(job, model.max_queued)
        except redis.RedisError as exc:
            raise errors.Unavailable(f"the job store is unreachable: {exc}") from exc
        if not recorded:
            raise errors.QueueFull(f"{model.name!r} has {model.max_queued} jobs waiting; retry later")
        try:
            # declare=[]: the queue is a Redis list that workers declare; checking it again on every
            # publish would cost a tenth of a submit
            self.celery.send_task(TASK_NAME, args=[job.id, model.name], queue=model.queue, declare=[])
        except Exception as exc:
            with contextlib.suppress(redis.RedisError):
                self.store.discard(job)
            raise errors.Unavailable(f"the broker is unreachable: {exc}") from exc
        if wait > 0:
            job = self.store.wait(job.id, min(wait, self.settings.max_wait)) or job
        return job

    def view(self, model: ModelConfig) -> ModelView:
        """What the registry and job store say of a model."""
        return ModelView.of(model, self.store.queue_depth(model.name), self.store.in_flight(model.name),
                            self.registry.averages(model), self.registry.list(model.name))


def respond(body: Any, status: int = 200) -> Response:
    """A pydantic model as a JSON response."""
    response = jsonify(body.model_dump(mode="json"))
    response.status_code = status
    return response


def authenticate(gateway: Gateway) -> None:
    """Who calls (g.principal), within their rate limit; only the /v1 API needs a key."""
    g.principal = ""
    if request.path.startswith("/v1/"):
        g.principal = auth.principal(request.headers.get("Authorization"), gateway.api_keys)
        try:
            auth.check_rate(gateway.redis, g.principal, gateway.settings.rate_limit)
        except redis.RedisError as exc:
            raise errors.Unavailable(f"redis unreachable: {exc}") from exc


def parse_json_body() -> None:
    """Reject a body that is not JSON before any handler runs (415, 400)."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    if not request.is_json:
        raise UnsupportedMediaType("send the model's input as Content-Type: application/json")
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(request.get_data(cache=True)) >= limit:
        raise RequestEntityTooLarge()  # a chunked body is cut at the limit rather than refused by werkzeug
    try:
        request.get_json()
    except BadRequest as exc:
        raise errors.MalformedJson("the body is not valid JSON") from exc
    except RecursionError as exc:
        raise errors.MalformedJson("the body is nested too deeply") from exc


def create_app(settings: Settings | None = None, celery: Celery | None = None) -> OpenAPI:
    """The gateway app for the given settings (from the environment by default)."""
    settings = settings or Settings()
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=settings.max_wait + 5)
    gateway = Gateway(settings, settings.load_models(), client, celery or create_celery(settings))
    app = OpenAPI(__name__, info=Info(title="serverless-model", version="0.1.0"),
                  security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
                  validation_error_status=422, validation_error_model=ErrorBody,
                  validation_error_callback=errors.validation_error)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.before_request(lambda: authenticate(gateway))
    app.before_request(parse_json_body)
    errors.register(app)

    @app.post("/v1/models/<model>/jobs", security=SECURED, tags=[JOBS],
              responses={200: JobView, 202: JobView, 429: ErrorBody, **ERRORS})
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
        if job.status.finished or not gateway.store.cancel(job):
            raise errors.JobFinished(f"job {job.id} already finished as {gateway.job(job.id, g.principal).status}")
        return respond(JobView.of(gateway.job(job.id, g.principal)))

    @app.get("/v1/models", security=SECURED, tags=[MODELS], responses={200: ModelList})
    def list_models() -> Response:
        """Every served model with its queue, replicas and moving averages."""
        return respond(ModelList(models=[gateway.view(m) for m in gateway.models.values()]))

    @app.get("/v1/models/<model>", security=SECURED, tags=[MODELS], responses={200: ModelView, **ERRORS})
    def get_model(path: ModelPath) -> Response:
        """One model: queue depth, in flight, moving averages, replicas and an example input."""
        return respond(gateway.view(gateway.model(path.model)))

    @app.get("/v1/events", security=SECURED, tags=[MODELS], responses={200: EventList, **ERRORS})
    def list_events(query: EventQuery) -> Response:
        """The autoscaler's decisions and replica lifecycle events with their reasons, newest first."""
        if query.model is not None:
            gateway.model(query.model)
        events = gateway.events.recent(query.model, query.limit)
        return respond(EventList(events=[EventView(at=iso(e.at), model=e.model, kind=e.kind, replica=e.replica,
                                                   reason=e.reason) for e in events]))

    @app.get("/healthz", responses={200: Health})
    def healthz() -> Response:
        """The process is alive."""
        return respond(Health(status="ok"))

    @app.get("/readyz", responses={200: Health, 503: ErrorBody})
    def readyz() -> Response:
        """Redis is reachable."""
        try:
            client.ping()
        except redis.RedisError as exc:
            raise errors.Unavailable(f"redis unreachable: {exc}") from exc
        return respond(Health(status="ok"))

    @app.get("/openapi.json", doc_ui=False)
    def openapi_json() -> Response:
        """The OpenAPI document."""
        return jsonify(app.api_doc)

    return app


__all__ = ["JobStatus", "create_app"]
