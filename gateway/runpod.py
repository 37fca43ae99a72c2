"""The RunPod door: RunPod serverless endpoints' routes under ``/runpod/v2/<model>/`` (the model's name is the
endpoint id), so the ``runpod`` SDK works with ``runpod.endpoint_url_base = "<gateway>/runpod/v2"``.

Each route is a few lines over the job service; statuses, timings (milliseconds) and errors (``{"error": "<message>"}``)
are RunPod's."""

from typing import Any

from flask import Response, g, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from gateway import errors
from gateway.native import SECURED, operation_id, respond
from gateway.schemas import LONGEST_BOUND
from gateway.service import Gateway, idempotency_key
from workers.job import Job, JobOptions, JobStatus, Priority, View
from workers.store.records import ModelSnapshot, ReplicaState

PREFIX = "/runpod/v2"
RUNPOD = Tag(name="runpod", description="RunPod serverless endpoints' API (the model's name is the endpoint id)")
STATUSES = {JobStatus.QUEUED: "IN_QUEUE", JobStatus.RUNNING: "IN_PROGRESS", JobStatus.SUCCEEDED: "COMPLETED",
            JobStatus.FAILED: "FAILED", JobStatus.CANCELLED: "CANCELLED"}
TIMED_OUT = "timeout"  # the error code of a job past its request deadline: RunPod's TIMED_OUT


class FlatError(BaseModel):
    """An error, as RunPod answers it."""

    error: str


ERRORS: dict[Any, Any] = {code: FlatError for code in (400, 401, 404, 408, 409, 413, 415, 422, 429, 503, 507)}


class EndpointPath(BaseModel):
    """An endpoint (a model) in the URL."""

    model: str = Field(description="the model's name: RunPod's endpoint id")


class EndpointJobPath(EndpointPath):
    """A job of an endpoint in the URL."""

    job_id: str = Field(description="the job's id")


class Policy(BaseModel):
    """RunPod's per-job execution policy (milliseconds)."""

    ttl: int | None = Field(None, gt=0, le=LONGEST_BOUND * 1000,
                            description="milliseconds the job may wait to start (at most 30 days); past it FAILED")
    executionTimeout: int | None = Field(None, gt=0, le=LONGEST_BOUND * 1000,
                                         description="milliseconds its run may take (at most the model's "
                                                     "request_timeout); past it TIMED_OUT")
    lowPriority: bool = Field(False, description="the job runs after the others waiting, and alone starts no worker")

    def options(self) -> JobOptions:
        """The job's options, in seconds."""
        return JobOptions(ttl=None if self.ttl is None else self.ttl / 1000,
                          execution_timeout=None if self.executionTimeout is None else self.executionTimeout / 1000,
                          priority=Priority.LOW if self.lowPriority else Priority.NORMAL)


class RunRequest(BaseModel):
    """A RunPod job request: the model's input under ``input``."""

    input: dict[str, Any] = Field(description="the model's input")
    webhook: str | None = Field(None, description="an http(s) URL the finished job's status (as status/<id> "
                                                  "answers it) is POSTed to, signed; default: the API key's, if "
                                                  "configured")
    policy: Policy | None = None


class SyncQuery(BaseModel):
    """How long ``runsync`` waits."""

    wait: int | None = Field(None, ge=0, description="milliseconds to wait for the result (at most SM_MAX_WAIT; "
                                                     "by default SM_MAX_WAIT)")


class JobState(BaseModel):
    """A job as RunPod shows it."""

    id: str
    status: str = Field(description="IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED or TIMED_OUT")
    delayTime: int | None = Field(None, description="milliseconds it waited before it started")
    executionTime: int | None = Field(None, description="milliseconds it ran")
    output: Any = None
    error: str | None = None
    workerId: str | None = Field(None, description="the replica that ran it")

    @classmethod
    def of(cls, job: Job) -> "JobState":
        """RunPod's view of a job."""
        status = STATUSES[job.status]
        if job.error is not None and job.error.code == TIMED_OUT:
            status = "TIMED_OUT"
        return cls(id=job.id, status=status, delayTime=milliseconds(job.created_at, job.started_at),
                   executionTime=milliseconds(job.started_at, job.finished_at), output=job.output,
                   error=job.error.message if job.error else None, workerId=job.replica)


class StreamChunk(BaseModel):
    """One part of a streamed output."""

    output: Any


class StreamState(BaseModel):
    """A job's status and the parts of its output not handed out yet."""

    id: str
    status: str = Field(description="IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED or TIMED_OUT")
    stream: list[StreamChunk] = Field(description="the parts since the last poll, in order (each part once)")


class JobCounts(BaseModel):
    """An endpoint's jobs by state (completed, failed and retried are not counted: null)."""

    completed: int | None = None
    failed: int | None = None
    inProgress: int
    inQueue: int
    retried: int | None = None


class WorkerCounts(BaseModel):
    """An endpoint's replicas by state."""

    idle: int = Field(description="ready, serving nothing")
    running: int = Field(description="ready, serving a job")
    ready: int = Field(description="idle + running")
    initializing: int = Field(description="starting")
    unhealthy: int = Field(description="failed, not yet removed")


class EndpointHealth(BaseModel):
    """An endpoint's jobs and workers."""

    jobs: JobCounts
    workers: WorkerCounts

    @classmethod
    def of(cls, snapshot: ModelSnapshot) -> "EndpointHealth":
        """From a snapshot of the model."""
        ready = [r for r in snapshot.replicas if r.state is ReplicaState.READY]
        running = sum(1 for r in ready if r.in_flight > 0)
        states = [r.state for r in snapshot.replicas]
        return cls(jobs=JobCounts(inProgress=snapshot.running, inQueue=snapshot.waiting),
                   workers=WorkerCounts(idle=len(ready) - running, running=running, ready=len(ready),
                                        initializing=states.count(ReplicaState.STARTING),
                                        unhealthy=states.count(ReplicaState.FAILED)))


class PurgedQueue(BaseModel):
    """What RunPod's purge-queue answers."""

    removed: int
    status: str


def milliseconds(start: float | None, end: float | None) -> int | None:
    """Whole milliseconds from start to end, if both happened."""
    return round((end - start) * 1000) if start is not None and end is not None else None


def state(job: Job) -> Response:
    """A job as RunPod answers it (fields it lacks left out)."""
    return respond(JobState.of(job), exclude_none=True)


def blueprint(gateway: Gateway) -> APIBlueprint:
    """The RunPod routes over ``gateway``."""
    api = APIBlueprint("runpod", __name__, url_prefix=PREFIX, abp_tags=[RUNPOD], abp_security=SECURED,
                       abp_responses=ERRORS, operation_id_callback=operation_id)

    def submit(path: EndpointPath, body: RunRequest, wait: float) -> Job:
        model = gateway.model(path.model)
        policy = body.policy or Policy()
        return gateway.accept(model, body.input, wait, g.principal,
                              idempotency_key(request.headers.get("Idempotency-Key")), policy.options(),
                              webhook=body.webhook, view=View.RUNPOD).job

    @api.post("/<model>/run", responses={200: JobState})
    def run(path: EndpointPath, body: RunRequest) -> Response:
        """Queue a job: its id and status IN_QUEUE."""
        return state(submit(path, body, 0))

    @api.post("/<model>/runsync", responses={200: JobState})
    def runsync(path: EndpointPath, query: SyncQuery, body: RunRequest) -> Response:
        """Run a job and wait for it (``?wait=`` milliseconds): its output if it finished, else its status."""
        limit = gateway.settings.max_wait
        return state(submit(path, body, limit if query.wait is None else min(query.wait, limit * 1000) / 1000))

    @api.get("/<model>/status/<job_id>", responses={200: JobState})
    def status(path: EndpointJobPath) -> Response:
        """A job's status, timings, and output or error."""
        return state(endpoint_job(path))

    @api.post("/<model>/cancel/<job_id>", responses={200: JobState})
    def cancel(path: EndpointJobPath) -> Response:
        """Cancel a job (best-effort once it runs); 409 if it has finished."""
        return state(gateway.cancel(endpoint_job(path).id, g.principal))

    @api.post("/<model>/retry/<job_id>", responses={200: JobState})
    def retry(path: EndpointJobPath) -> Response:
        """Queue a FAILED or CANCELLED job again (same id); 409 otherwise."""
        return state(gateway.retry(endpoint_job(path).id, g.principal))

    @api.post("/<model>/purge-queue", responses={200: PurgedQueue})
    def purge_queue(path: EndpointPath) -> Response:
        """Cancel the endpoint's jobs still in the queue (with API keys, the caller's own): how many."""
        model = gateway.model(path.model)
        removed = gateway.purge(model, g.principal if gateway.guard.accepted else None)
        return respond(PurgedQueue(removed=removed, status="completed"))

    @api.get("/<model>/health", responses={200: EndpointHealth})
    def health(path: EndpointPath) -> Response:
        """The endpoint's jobs waiting and running, and its workers by state."""
        return respond(EndpointHealth.of(gateway.snapshot(gateway.model(path.model))))

    @api.get("/<model>/stream/<job_id>", responses={200: StreamState})
    def stream(path: EndpointJobPath) -> Response:
        """A streaming job's status and its parts since the last poll (each part handed out once), as the SDK's
        ``Job.stream()`` polls them; its status is read first, so a final status comes with the last parts."""
        job = endpoint_job(path)
        status = JobState.of(job).status
        return respond(StreamState(id=job.id, status=status,
                                   stream=[StreamChunk(output=part) for part in gateway.take_parts(job)]))

    def endpoint_job(path: EndpointJobPath) -> Job:
        model = gateway.model(path.model)
        job = gateway.job(path.job_id, g.principal)
        if job.model != model.name:
            raise errors.UnknownJob(f"endpoint {model.name!r} has no job {job.id!r}")
        return job

    return api
