"""Request and response models: they validate requests and generate the OpenAPI document."""

import copy
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, StrictInt, model_validator

from workers.config import ModelConfig
from workers.job import DeliveryStatus, Job, JobStatus, Priority
from workers.store.records import (
    MOST_REPLICAS,
    ColdStart,
    Desired,
    FailedDelivery,
    Host,
    JobPage,
    JobSummary,
    ModelSnapshot,
    Replica,
    ReplicaState,
    ScaleBounds,
    SeenHosts,
    Waiting,
)


class ModelPath(BaseModel):
    """A model in the URL."""

    model: str = Field(description="the model's name, as declared in models.toml")


class JobPath(BaseModel):
    """A job in the URL."""

    job_id: str = Field(description="the job's id (any other string is an unknown job: 404)")


class Query(BaseModel):
    """Query parameters. flask-openapi3 asks for their JSON schema on every request: it is made once."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The model's JSON schema (a copy of the one made at the first call)."""
        key = (cls, args, tuple(sorted(kwargs.items())))
        if key not in SCHEMAS:
            SCHEMAS[key] = super().model_json_schema(*args, **kwargs)
        return copy.deepcopy(SCHEMAS[key])


SCHEMAS: dict[tuple[Any, ...], dict[str, Any]] = {}


LONGEST_BOUND = 30 * 86400  # seconds: the longest ttl or execution_timeout a job may ask for


class WaitQuery(Query):
    """How long to wait for the result."""

    wait: float = Field(0, ge=0, description="seconds to block for the result (200 if done, else 202)")


class SubmitQuery(WaitQuery):
    """A submit's options, beside the model's input (which goes to the model untouched), and where to deliver the
    job's end."""

    ttl: float | None = Field(None, gt=0, le=LONGEST_BOUND, allow_inf_nan=False,
                              description="seconds the job may wait to start (at most 30 days); past it FAILED "
                                          "expired (default: the model's ttl, else none)")
    execution_timeout: float | None = Field(None, gt=0, le=LONGEST_BOUND, allow_inf_nan=False,
                                            description="seconds its run may take; past it FAILED timeout (at "
                                                        "most, and by default, the model's request_timeout)")
    webhook: str | None = Field(None, description="an http(s) URL (at most 2048 characters) the finished job's view "
                                                  "is POSTed to, signed; default: the API key's, if configured")
    priority: Priority = Field(Priority.NORMAL, description="high: starts before the normal jobs waiting (unless "
                                                            "they waited longer than the model's priority_aging, 60 s, "
                                                            "before it came); low: starts after them, and alone "
                                                            "starts no replica of a model at zero")


class SubmitHeaders(Query):
    """The headers a submit reads."""

    idempotency_key: str | None = Field(
        None, description="1 to 255 printable ASCII characters: the same key (of the same API key) with the same "
                          "request within the retention (24 h) answers the job it made (200, Idempotent-Replayed: "
                          "true) instead of making another; with another request 409 idempotency_conflict")


class StreamQuery(Query):
    """Where a stream resumes."""

    after: int = Field(-1, ge=-1, le=2 ** 53, description="send only the parts after this index (as the Last-Event-ID "
                                                         "header)")


class JobInput(RootModel[dict[str, Any]]):
    """The model's input: any JSON object; the model validates it."""


class ErrorDetail(BaseModel):
    """Why something failed."""

    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error response."""

    error: ErrorDetail


class Timings(BaseModel):
    """Where a job's time went, in seconds."""

    queue_wait: float | None = Field(None, description="created → started on a replica")
    execution: float | None = Field(None, description="started → finished")
    total: float | None = Field(None, description="created → finished")


class WebhookView(BaseModel):
    """How the delivery of a job's webhook goes."""

    status: DeliveryStatus = Field(description="pending (to be made, or retried), delivered, or failed (given up)")
    attempts: int = Field(description="delivery attempts so far")
    last_error: str = Field("", description="why the last attempt failed")


class WaitingView(BaseModel):
    """What a waiting job waits for."""

    reason: str = Field(description="sent (its message is out, to be taken by a worker), parked (for a free slot), "
                                    "or replica_starting (the model has no ready replica and this one is starting)")
    since: datetime = Field(description="since when it waits so (sent or parked)")
    age: float = Field(description="seconds it has waited so")
    replica: str | None = Field(None, description="replica_starting: the replica")
    stage: str | None = Field(None, description="replica_starting: the last line the replica printed")

    @classmethod
    def of(cls, waiting: Waiting) -> "WaitingView":
        """The view of what a job waits for."""
        return cls(reason=waiting.reason, since=iso(waiting.since), age=round(waiting.age, 3),
                   replica=waiting.replica or None, stage=waiting.stage or None)


class ColdStartView(BaseModel):
    """A replica's cold start by stage, each in seconds from the end of the one before (from its record for the
    first): placed (it had a host), created (its process or container ran), process_up (its server answered),
    ready (it answered ready), first_result (the first result of the jobs that waited for it). A stage not seen is
    merged into the next; the stages add up to ``total``."""

    replica: str
    host: str
    started_at: datetime
    stages: dict[str, float]
    total: float
    complete: bool = Field(description="false while jobs that waited for it have no result yet")

    @classmethod
    def of(cls, cold: ColdStart) -> "ColdStartView":
        """The view of a recorded cold start."""
        return cls(replica=cold.replica, host=cold.host, started_at=iso(cold.started_at),
                   stages={name: round(seconds, 6) for name, seconds in cold.stages.items()},
                   total=round(cold.total, 6), complete=cold.complete)

    def server_timing(self) -> str:
        """As a ``Server-Timing`` header: the whole and each stage, in milliseconds."""
        said = re.sub(r'[^\x20-\x7e]|["\\]', "", f"replica {self.replica} on {self.host or '?'}")  # a backend's
        whole = f'cold-start;dur={self.total * 1000:.1f};desc="{said}"'  # names, as a quoted string may hold them
        return ", ".join([whole, *(f"cold-start-{name.replace('_', '-')};dur={seconds * 1000:.1f}"
                                   for name, seconds in self.stages.items())])


class JobView(BaseModel):
    """A job as clients see it."""

    id: str
    model: str
    status: JobStatus
    created_at: datetime
    output: Any = None
    error: ErrorDetail | None = None
    timings: Timings
    replica: str | None = None
    attempts: int = 0
    cancelled_while: JobStatus | None = Field(None, description="QUEUED, or RUNNING for a best-effort cancel")
    priority: Priority = Priority.NORMAL
    waiting: WaitingView | None = Field(None, description="GET /v1/jobs/<id> of a QUEUED job: what it waits for")
    ttl: float | None = Field(None, description="seconds it may wait to start (null: no bound)")
    execution_timeout: float | None = Field(None, description="seconds its run may take (null: the model's "
                                                              "request_timeout)")
    links: dict[str, str]
    webhook: WebhookView | None = Field(None, description="the delivery of its webhook, if it names one")
    cold_start: ColdStartView | None = Field(None, description="the cold start of the replica it ran on, if it "
                                                               "was submitted before that replica was ready")

    @classmethod
    def of(cls, job: Job, waiting: Waiting | None = None, cold: ColdStart | None = None) -> "JobView":
        """The view of a stored job (and of what it waits for, and the cold start it waited for, if known)."""
        return cls(waiting=WaitingView.of(waiting) if waiting else None,
                   cold_start=ColdStartView.of(cold) if cold else None,
            id=job.id, model=job.model, status=job.status, created_at=iso(job.created_at), output=job.output,
            error=ErrorDetail(code=job.error.code, message=job.error.message) if job.error else None,
            timings=Timings(queue_wait=span(job.created_at, job.started_at),
                            execution=span(job.started_at, job.finished_at),
                            total=span(job.created_at, job.finished_at)),
            replica=job.replica, attempts=job.attempts, cancelled_while=job.cancelled_while,
            priority=job.options.priority, ttl=job.options.ttl, execution_timeout=job.options.execution_timeout,
            links={"self": f"/v1/jobs/{job.id}", "model": f"/v1/models/{job.model}"},
            webhook=WebhookView(status=job.webhook.status, attempts=job.webhook.attempts,
                                last_error=job.webhook.last_error) if job.webhook else None,
        )


class ReplicaView(BaseModel):
    """One replica of a model."""

    id: str
    state: str
    endpoint: str
    host: str = Field("", description="the hostname of the machine it runs on")
    in_flight: int
    concurrency: int = Field(description="requests it serves at once (0 until READY)")
    started_at: datetime
    age: float = Field(description="seconds since it was started")
    ready_at: datetime | None = None
    last_used: datetime | None = Field(None, description="when it last finished a request")
    reason: str = ""
    log: list[str] = Field([], description="while STARTING: the last lines it printed, refreshed every 2 s")
    links: dict[str, str]

    @classmethod
    def of(cls, replica: Replica, now: float) -> "ReplicaView":
        """The view of a replica."""
        starting = replica.state is ReplicaState.STARTING
        return cls(id=replica.id, state=replica.state.value, endpoint=replica.endpoint, host=replica.host,
                   in_flight=replica.in_flight,
                   concurrency=replica.concurrency, started_at=iso(replica.started_at),
                   age=round(max(0.0, now - replica.started_at), 3),
                   ready_at=iso(replica.ready_at) if replica.ready_at else None,
                   last_used=iso(replica.last_used) if replica.last_used else None, reason=replica.reason,
                   log=replica.log_tail.splitlines() if starting and replica.log_tail else [],
                   links={"logs": f"/v1/models/{replica.model}/replicas/{replica.id}/logs"})


class ReplicaPath(BaseModel):
    """A model's replica in the URL."""

    model: str = Field(description="the model's name")
    replica: str = Field(description="the replica's id")


class LogQuery(Query):
    """How many lines."""

    tail: int = Field(100, ge=1, le=10_000, description="the last this many lines")


class ReplicaLog(BaseModel):
    """The last lines a replica printed."""

    replica: str
    lines: list[str]


class Average(BaseModel):
    """A moving average."""

    seconds: float
    samples: int = Field(description="samples folded in; 0 means the configured seed, not yet measured")


class ScaleBody(BaseModel):
    """An operator's replica bounds of a model: either or both, merged with the bounds in effect."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: StrictInt | None = Field(None, ge=0, le=MOST_REPLICAS, description="replicas kept warm")
    max_replicas: StrictInt | None = Field(None, ge=1, le=MOST_REPLICAS, description="replicas at most")

    @model_validator(mode="after")
    def names_a_bound(self) -> "ScaleBody":
        """At least one bound is given; both given, min_replicas is at most max_replicas."""
        if self.min_replicas is None and self.max_replicas is None:
            raise ValueError("give min_replicas, max_replicas or both")
        if self.max_replicas is not None and self.min_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} is over max_replicas {self.max_replicas}")
        return self


class ScaleView(BaseModel):
    """A model's replica bounds in effect, and where they come from."""

    model: str
    min_replicas: int
    max_replicas: int
    source: str = Field(description="override (set by PUT /v1/models/<model>/scale) or config (the models file)")

    @classmethod
    def of(cls, model: str, bounds: ScaleBounds) -> "ScaleView":
        """The view of a model's bounds."""
        return cls(model=model, min_replicas=bounds.min_replicas, max_replicas=bounds.max_replicas,
                   source=bounds.source.value)


class DesiredView(BaseModel):
    """The replicas the scaling policy last wanted."""

    replicas: int
    at: datetime = Field(description="since when it wants that many")
    reason: str = Field(description="why, as the policy put it then")

    @classmethod
    def of(cls, desired: Desired) -> "DesiredView":
        """The view of what the policy wanted."""
        return cls(replicas=desired.replicas, at=iso(desired.at), reason=desired.reason)


class ModelView(BaseModel):
    """A served model: its queue, replicas and moving averages."""

    name: str
    queue_depth: int = Field(description="jobs waiting, parked ones included")
    parked: int = Field(description="jobs waiting for a free replica slot")
    running: int = Field(description="jobs running (a replica's in_flight: the slots its jobs hold)")
    averages: dict[str, Average] = Field(description="moving averages: service_time, cold_start")
    replicas: list[ReplicaView]
    concurrency: int
    min_replicas: int = Field(description="the bounds in effect (see scale)")
    max_replicas: int
    cold_starts: list[ColdStartView] = Field([], description="its last cold starts by stage, newest first")
    scale: ScaleView = Field(description="the bounds in effect and their source")
    desired: DesiredView | None = Field(None, description="the replicas the leading autoscaler's policy last "
                                                          "wanted (null: it decided nothing yet)")
    example_input: Any = None
    links: dict[str, str]

    @classmethod
    def of(cls, model: ModelConfig, snapshot: ModelSnapshot, cold_starts: list[ColdStart] | None = None
           ) -> "ModelView":
        """The view of a model as the store saw it (and its last cold starts)."""
        bounds = snapshot.override or ScaleBounds(model.scaling.min_replicas, model.scaling.max_replicas)
        return cls(
            cold_starts=[ColdStartView.of(cold) for cold in cold_starts or []],
            name=model.name, queue_depth=snapshot.waiting, parked=snapshot.parked, running=snapshot.running,
            averages={name: Average(seconds=a.seconds, samples=a.samples) for name, a in snapshot.averages.items()},
            replicas=[ReplicaView.of(r, snapshot.now) for r in snapshot.replicas],
            concurrency=model.scaling.concurrency, min_replicas=bounds.min_replicas,
            max_replicas=bounds.max_replicas, scale=ScaleView.of(model.name, bounds),
            desired=DesiredView.of(snapshot.desired) if snapshot.desired else None,
            example_input=model.docs.example_input,
            links={"self": f"/v1/models/{model.name}", "jobs": f"/v1/models/{model.name}/jobs",
                   "scale": f"/v1/models/{model.name}/scale"},
        )


class JobListQuery(Query):
    """Which of the caller's jobs to list."""

    model: str | None = Field(None, description="only this model's jobs")
    status: JobStatus | None = Field(None, description="only the jobs in this status")
    limit: int = Field(50, ge=1, le=1000, description="how many at most, newest first")
    before: float | None = Field(None, ge=0, le=1e12, allow_inf_nan=False,
                                 description="only the jobs created before this time (Unix seconds): a page's next")


class JobSummaryView(BaseModel):
    """A job as listed: no input or output (GET /v1/jobs/<id> has them)."""

    id: str
    model: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    replica: str | None
    error: ErrorDetail | None = Field(None, description="only when FAILED")

    @classmethod
    def of(cls, job: JobSummary) -> "JobSummaryView":
        """The view of a listed job."""
        error = job.error if job.status is JobStatus.FAILED else None
        return cls(id=job.id, model=job.model, status=job.status, created_at=iso(job.created_at),
                   started_at=iso(job.started_at) if job.started_at is not None else None,
                   finished_at=iso(job.finished_at) if job.finished_at is not None else None,
                   attempts=job.attempts, replica=job.replica or None,
                   error=ErrorDetail(code=error.code, message=error.message) if error else None)


class JobList(BaseModel):
    """The caller's jobs, newest first (with API keys, its own; without, all)."""

    jobs: list[JobSummaryView]
    next: float | None = Field(description="pass as ?before= for the next page (it may hold fewer than limit); "
                                           "null: no more")

    @classmethod
    def of(cls, page: JobPage) -> "JobList":
        """The view of a page of jobs."""
        return cls(jobs=[JobSummaryView.of(job) for job in page.jobs], next=page.next)

    def dump(self) -> dict[str, Any]:
        """As JSON: a job's error only when it failed."""
        return {"jobs": [job.model_dump(mode="json", exclude={"error"} if job.error is None else None)
                         for job in self.jobs], "next": self.next}


class FailedQuery(Query):
    """How many given-up deliveries to list."""

    limit: int = Field(100, ge=1, le=1000, description="how many, newest first")


class FailedDeliveryView(BaseModel):
    """A job whose webhook delivery was given up."""

    job: str
    model: str
    url: str
    attempts: int
    last_error: str
    failed_at: datetime
    links: dict[str, str]

    @classmethod
    def of(cls, found: FailedDelivery) -> "FailedDeliveryView":
        """The view of a given-up delivery."""
        return cls(job=found.job, model=found.model, url=found.url, attempts=found.attempts,
                   last_error=found.last_error, failed_at=iso(found.failed_at),
                   links={"job": f"/v1/jobs/{found.job}", "redeliver": f"/v1/webhooks/failed/{found.job}/redeliver"})


class FailedDeliveries(BaseModel):
    """The caller's given-up webhook deliveries, newest first (kept SM_JOB_RETENTION seconds)."""

    failed: list[FailedDeliveryView]


class Purged(BaseModel):
    """What a purge of a model's queue did."""

    cancelled: int = Field(description="the waiting jobs it cancelled (with API keys: the caller's own)")


class ModelList(BaseModel):
    """Every served model."""

    models: list[ModelView]


class ReplicaSummary(BaseModel):
    """A replica in short."""

    id: str
    model: str
    state: str


class HostView(BaseModel):
    """A machine replicas may run on, and the replicas on it."""

    name: str = Field(description="its hostname")
    state: str = Field(description='"ready", or why not ("down", "unknown", …)')
    address: str = Field(description="where its replicas answer")
    cpus: float = Field(description="cores")
    memory: int = Field(description="bytes")
    gpus: list[str] = Field(description="the GPU device ids it offers")
    role: str = Field(description='a Swarm node: "manager" or "worker"; else ""')
    availability: str = Field(description='a Swarm node: "active", "pause" or "drain"; else ""')
    replicas: list[ReplicaSummary] = Field(description="the replicas whose host is this machine")

    @classmethod
    def of(cls, host: Host, replicas: list[ReplicaSummary]) -> "HostView":
        """The view of a host with its replicas."""
        return cls(name=host.name, state=host.state, address=host.address, cpus=host.cpus, memory=host.memory,
                   gpus=list(host.gpus), role=host.role, availability=host.availability, replicas=replicas)


class HostList(BaseModel):
    """The machines replicas may run on, as the leading autoscaler last saw them."""

    hosts: list[HostView]
    seen_at: datetime | None = Field(description="when the autoscaler saw them; null: no autoscaler saved them "
                                                 "in the last 30 s")
    unplaced: list[ReplicaSummary] = Field(description="replicas on none of these hosts: not placed on a machine "
                                                       "yet, or on one the list lacks")

    @classmethod
    def of(cls, seen: SeenHosts | None, replicas: list[Replica]) -> "HostList":
        """The hosts with the replicas on each; the rest unplaced."""
        hosts = seen.hosts if seen else ()
        on: dict[str, list[ReplicaSummary]] = {host.name: [] for host in hosts}
        unplaced: list[ReplicaSummary] = []
        for replica in replicas:
            summary = ReplicaSummary(id=replica.id, model=replica.model, state=replica.state.value)
            on.get(replica.host, unplaced).append(summary)
        return cls(hosts=[HostView.of(host, on[host.name]) for host in hosts],
                   seen_at=iso(seen.at) if seen else None, unplaced=unplaced)


class EventQuery(Query):
    """Which events to list."""

    model: str | None = Field(None, description="only this model's events")
    limit: int = Field(100, ge=1, le=1000, description="how many, newest first")


class EventView(BaseModel):
    """A scaling decision or replica lifecycle event."""

    at: datetime
    model: str
    kind: str = Field(description="scale_up, scale_down, ready, start_failed, replica_failed, adopted, lost, "
                                  "stray_removed, job_requeued, job_dead, job_resent, jobs_expired, …")
    replica: str = ""
    reason: str = ""
    job: str = Field("", description="the job the event is about (shown only to the key that owns it)")


class EventList(BaseModel):
    """Events, newest first."""

    events: list[EventView]


class Health(BaseModel):
    """A liveness or readiness answer."""

    status: str


def iso(timestamp: float) -> datetime:
    """A UTC datetime from a Unix timestamp."""
    return datetime.fromtimestamp(timestamp, UTC)


def span(start: float | None, end: float | None) -> float | None:
    """Seconds from start to end, if both happened."""
    return round(end - start, 6) if start is not None and end is not None else None
