"""The native front door: the /v1 API (jobs, models, replicas, events, hosts)."""

import json
from typing import Any

from flask import Response, g, jsonify, request
from flask_openapi3 import APIBlueprint, Tag
from flask_openapi3.utils import get_operation_id_for_path

from gateway import errors
from gateway.schemas import (
    ErrorBody,
    EventList,
    EventQuery,
    EventView,
    FailedDeliveries,
    FailedDeliveryView,
    FailedQuery,
    HostList,
    JobInput,
    JobList,
    JobListQuery,
    JobPath,
    JobView,
    LogQuery,
    ModelList,
    ModelPath,
    ModelView,
    Purged,
    ReplicaLog,
    ReplicaPath,
    ScaleBody,
    ScaleView,
    StreamQuery,
    SubmitHeaders,
    SubmitQuery,
    iso,
)
from gateway.service import LONGEST_ID, Gateway, idempotency_key
from workers.job import Job, JobOptions, JobStatus
from workers.store.records import Waiting

SECURED: list[dict[str, list[str]]] = [{"bearer": []}]  # API keys, when SM_API_KEYS is set
JOBS = Tag(name="jobs", description="submit, read and cancel inference jobs")
MODELS = Tag(name="models", description="served models, their queues and replicas")
HOSTS = Tag(name="hosts", description="the machines replicas run on")
WEBHOOKS = Tag(name="webhooks", description="webhook deliveries that were given up, and redelivering them")
ERRORS: dict[Any, Any] = {400: ErrorBody, 401: ErrorBody, 404: ErrorBody, 413: ErrorBody, 415: ErrorBody,
                          422: ErrorBody, 429: ErrorBody, 503: ErrorBody, 507: ErrorBody}


def respond(body: Any, status: int = 200, exclude_none: bool = False) -> Response:
    """A pydantic model as a JSON response (``exclude_none``: its fields that are None left out)."""
    response = jsonify(body.model_dump(mode="json", exclude_none=exclude_none))
    response.status_code = status
    return response


def operation_id(*, bp_name: str = "", name: str = "", path: str = "", method: str = "") -> str:
    """An operation's id in the OpenAPI document: its function, path and method (the door's name left out)."""
    return str(get_operation_id_for_path(name=name, path=path, method=method))


def caller() -> str:
    """Who calls, for an event's reason: the API key's digest prefix (never the key), else the client address."""
    return f"key {g.principal}" if g.principal else f"address {request.remote_addr or 'unknown'}"


def blueprint(gateway: Gateway) -> APIBlueprint:
    """The /v1 routes over ``gateway``."""
    api = APIBlueprint("native", __name__, operation_id_callback=operation_id)

    def job_answer(job: Job, status: int = 200, waiting: Waiting | None = None) -> Response:
        """A job's view; for a job that waited for its replica's cold start, that cold start in the view and in
        a ``Server-Timing`` header."""
        view = JobView.of(job, waiting, gateway.cold_start(job))
        response = respond(view, status)
        if view.cold_start:
            response.headers["Server-Timing"] = view.cold_start.server_timing()
        return response

    @api.post("/v1/models/<model>/jobs", security=SECURED, tags=[JOBS],
              responses={200: JobView, 202: JobView, 409: ErrorBody, 429: ErrorBody, 504: ErrorBody, **ERRORS})
    def submit_job(path: ModelPath, query: SubmitQuery, header: SubmitHeaders, body: JobInput) -> Response:
        """Submit a job; with ?wait=<s>, block up to that long for its result; with an Idempotency-Key, at most one
        job per key and request; ?ttl= and ?execution_timeout= bound its wait and its run; with ?webhook=<url>,
        its finished view is POSTed there, signed."""
        model = gateway.model(path.model)
        options = JobOptions(ttl=query.ttl, execution_timeout=query.execution_timeout, priority=query.priority)
        accepted = gateway.accept(model, body.root, query.wait, g.principal, idempotency_key(header.idempotency_key),
                                  options, webhook=query.webhook)
        job = accepted.job
        response = job_answer(job, 200 if job.status.finished or accepted.replayed else 202)
        if accepted.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return response

    @api.get("/v1/jobs", security=SECURED, tags=[JOBS], responses={200: JobList, **ERRORS})
    def list_jobs(query: JobListQuery) -> Response:
        """The caller's jobs (with API keys its own, without all), newest first: of one model, in one status;
        ?before= the previous page's next. A page may hold fewer than limit and still have a next."""
        return jsonify(JobList.of(gateway.jobs(g.principal, query)).dump())

    @api.get("/v1/jobs/<job_id>", security=SECURED, tags=[JOBS], responses={200: JobView, **ERRORS})
    def get_job(path: JobPath) -> Response:
        """A job's status, output or error, timings, replica and attempts; while it waits, what for."""
        job = gateway.job(path.job_id, g.principal)
        return job_answer(job, waiting=gateway.store.jobs.waiting(job.id) if job.status is JobStatus.QUEUED else None)

    @api.get("/v1/jobs/<job_id>/stream", security=SECURED, tags=[JOBS], responses={200: None, **ERRORS})
    def stream_job(path: JobPath, query: StreamQuery) -> Response:
        """A job's streamed output as Server-Sent Events: ``part`` per part (``id`` its index), then ``done`` with
        the job's view; resumes after the ``Last-Event-ID`` header (or ``?after=``). A stream still open after
        SM_MAX_WAIT seconds ends without ``done``: resume it."""
        last = request.headers.get("Last-Event-ID", "")
        after = int(last) if last.isascii() and last.isdigit() and len(last) < 10 else query.after
        events = gateway.stream(path.job_id, g.principal, after,
                                lambda job: json.dumps(JobView.of(job).model_dump(mode="json")))
        return Response(events, mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})

    @api.delete("/v1/jobs/<job_id>", security=SECURED, tags=[JOBS], responses={200: JobView, 409: ErrorBody, **ERRORS})
    def cancel_job(path: JobPath) -> Response:
        """Cancel a queued job; a running one is cancelled best-effort (its result is discarded)."""
        return respond(JobView.of(gateway.cancel(path.job_id, g.principal)))

    @api.post("/v1/jobs/<job_id>/retry", security=SECURED, tags=[JOBS],
              responses={200: JobView, 409: ErrorBody, **ERRORS})
    def retry_job(path: JobPath) -> Response:
        """Queue a FAILED (expired too) or CANCELLED job again: same id, attempts kept, output and error cleared."""
        return respond(JobView.of(gateway.retry(path.job_id, g.principal)))

    @api.delete("/v1/models/<model>/queue", security=SECURED, tags=[MODELS], responses={200: Purged, **ERRORS})
    def purge_queue(path: ModelPath) -> Response:
        """Cancel every waiting (not running) job of the model; with API keys, the caller's own."""
        model = gateway.model(path.model)
        return respond(Purged(cancelled=gateway.purge(model, g.principal if gateway.guard.accepted else None)))

    @api.put("/v1/models/<model>/scale", security=SECURED, tags=[MODELS], responses={200: ScaleView, **ERRORS})
    def set_scale(path: ModelPath, body: ScaleBody) -> Response:
        """Set the model's replica bounds (either or both, merged with those in effect) in place of the models
        file's; the leading autoscaler applies them at its next pass. Any valid key may."""
        model = gateway.model(path.model)
        return respond(gateway.scale(model, body, caller()))

    @api.delete("/v1/models/<model>/scale", security=SECURED, tags=[MODELS], responses={200: ScaleView, **ERRORS})
    def reset_scale(path: ModelPath) -> Response:
        """Remove the replica bounds set by PUT: the models file's apply again."""
        return respond(gateway.unscale(gateway.model(path.model), caller()))

    @api.get("/v1/models", security=SECURED, tags=[MODELS], responses={200: ModelList})
    def list_models() -> Response:
        """Every served model with its queue, replicas and moving averages."""
        return respond(ModelList(models=[gateway.view(m) for m in gateway.models.values()]))

    @api.get("/v1/models/<model>", security=SECURED, tags=[MODELS], responses={200: ModelView, **ERRORS})
    def get_model(path: ModelPath) -> Response:
        """One model: queue depth, in flight, moving averages, replicas and an example input."""
        return respond(gateway.view(gateway.model(path.model)))

    @api.get("/v1/models/<model>/replicas/<replica>/logs", security=SECURED, tags=[MODELS],
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

    @api.get("/v1/events", security=SECURED, tags=[MODELS], responses={200: EventList, **ERRORS})
    def list_events(query: EventQuery) -> Response:
        """The autoscaler's decisions and lifecycle events with their reasons, newest first (with API keys, the
        events about jobs show only the caller's)."""
        if query.model is not None:
            gateway.model(query.model)
        owner = g.principal if gateway.guard.accepted else None
        events = gateway.store.events.recent(query.model, query.limit, owner)
        return respond(EventList(events=[EventView(at=iso(e.at), model=e.model, kind=e.kind, replica=e.replica,
                                                   reason=e.reason, job=e.job) for e in events]))

    @api.get("/v1/webhooks/failed", security=SECURED, tags=[WEBHOOKS], responses={200: FailedDeliveries, **ERRORS})
    def failed_webhooks(query: FailedQuery) -> Response:
        """The caller's jobs whose webhook delivery was given up, newest first."""
        found = gateway.failed_deliveries(g.principal, query.limit)
        return respond(FailedDeliveries(failed=[FailedDeliveryView.of(f) for f in found]))

    @api.post("/v1/webhooks/failed/<job_id>/redeliver", security=SECURED, tags=[WEBHOOKS],
              responses={202: JobView, **ERRORS})
    def redeliver_webhook(path: JobPath) -> Response:
        """Deliver a given-up webhook again, with a new window of retries: the job, its webhook pending."""
        return respond(JobView.of(gateway.redeliver(path.job_id, g.principal)), 202)

    @api.get("/v1/hosts", security=SECURED, tags=[HOSTS], responses={200: HostList, **ERRORS})
    def list_hosts() -> Response:
        """The machines replicas may run on (state, address, capacity, GPUs) and the replicas on each, as the
        leading autoscaler last saw them."""
        return respond(gateway.hosts())

    return api
