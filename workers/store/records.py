"""What the store holds, as frozen values: jobs, replicas, moving averages, a model's snapshot, and the hosts."""

import enum
import json
import math
from dataclasses import dataclass, field
from typing import Any


class JobStatus(enum.StrEnum):
    """A job's lifecycle."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        """True once nothing more will happen to the job."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class JobError:
    """Why a job failed: a short code and a message."""

    code: str
    message: str

    @classmethod
    def decode(cls, text: str) -> "JobError":
        """The error as stored; anything unreadable becomes a ``bad_record`` error rather than an exception."""
        try:
            found = json.loads(text)
            return cls(code=str(found["code"]), message=str(found["message"]))
        except (ValueError, TypeError, KeyError):
            return cls(code="bad_record", message=text[:500])


@dataclass(frozen=True)
class Job:
    """A job as recorded."""

    id: str
    model: str
    status: JobStatus
    input: Any
    created_at: float
    output: Any = None
    error: JobError | None = None
    started_at: float | None = None
    finished_at: float | None = None
    replica: str | None = None
    attempts: int = 0
    cancelled_while: JobStatus | None = None
    owner: str = ""  # the API key (a digest prefix) that submitted it
    worker: str = ""  # the worker (host:pid) that claimed it last
    commits: int = 0  # outcomes committed: 1 once finished
    requeued_at: float | None = None  # when it was last taken back from a lost worker or sent again

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> "Job":
        """Decode a job record."""
        return cls(
            id=fields["id"], model=fields["model"], status=JobStatus(fields["status"]),
            input=json.loads(fields["input"]), created_at=float(fields["created_at"]),
            output=json.loads(fields["output"]) if "output" in fields else None,
            error=JobError.decode(fields["error"]) if fields.get("error") else None,
            started_at=_float(fields.get("started_at")), finished_at=_float(fields.get("finished_at")),
            replica=fields.get("replica") or None, attempts=int(fields.get("attempts", 0)),
            cancelled_while=JobStatus(fields["cancelled_while"]) if fields.get("cancelled_while") else None,
            owner=fields.get("owner", ""), worker=fields.get("worker", ""), commits=int(fields.get("commits", 0)),
            requeued_at=_float(fields.get("requeued_at")),
        )


def _float(value: str | None) -> float | None:
    return float(value) if value else None


@dataclass(frozen=True)
class Slot:
    """A concurrency slot a job holds on a replica."""

    replica_id: str
    endpoint: str


@dataclass(frozen=True)
class Started:
    """A job running on a slot under a task's claim."""

    job: Job
    slot: Slot

    @classmethod
    def of(cls, reply: Any) -> "Started | str":
        """From a script's ``['RUNNING', replica, endpoint, fields ...]``; else the script's reason, as text."""
        if not isinstance(reply, list):
            return str(reply)
        fields = dict(zip(reply[3::2], reply[4::2], strict=True))
        return cls(job=Job.from_hash(fields), slot=Slot(replica_id=reply[1], endpoint=reply[2]))


class ReplicaState(enum.StrEnum):
    """A replica's lifecycle: STARTING → READY → DRAINING → removed; FAILED from any, then removed."""

    STARTING = "STARTING"
    READY = "READY"
    DRAINING = "DRAINING"
    FAILED = "FAILED"


@dataclass(frozen=True)
class Replica:
    """A replica as recorded."""

    id: str
    model: str
    backend: str
    endpoint: str
    handle: str
    state: ReplicaState
    started_at: float
    in_flight: int = 0
    ready_at: float | None = None
    last_used: float | None = None
    reason: str = ""
    log_tail: str = ""  # while STARTING: the last lines it printed
    failed_at: float | None = None  # when it became FAILED
    concurrency: int = 0  # the requests it serves at once, as started (0 until it is READY)
    host: str = ""  # the hostname of the machine it runs on ("" until it runs)

    @classmethod
    def from_hash(cls, fields: dict[str, Any]) -> "Replica":
        """Decode a replica record (``in_flight`` counted from its slot set)."""
        return cls(
            id=fields["id"], model=fields["model"], backend=fields["backend"], endpoint=fields["endpoint"],
            handle=fields["handle"], state=ReplicaState(fields["state"]), started_at=float(fields["started_at"]),
            in_flight=int(fields.get("in_flight", 0)), ready_at=_float(fields.get("ready_at")),
            last_used=_float(fields.get("last_used")), reason=fields.get("reason", ""),
            log_tail=fields.get("log_tail", ""), failed_at=_float(fields.get("failed_at")),
            concurrency=int(fields.get("concurrency", 0)), host=fields.get("host", ""),
        )

    @property
    def idle_since(self) -> float:
        """When the replica last finished a request (or became ready, or was created)."""
        return self.last_used or self.ready_at or self.started_at


@dataclass(frozen=True)
class Host:
    """A machine replicas run on, as its backend sees it."""

    name: str  # its hostname
    state: str  # "ready", or why not ("down", "unknown" …)
    address: str  # where its replicas answer
    cpus: float  # cores
    memory: int  # bytes
    gpus: tuple[str, ...] = ()  # device ids it offers
    role: str = ""  # a Swarm node: "manager" or "worker"
    availability: str = ""  # a Swarm node: "active", "pause" or "drain"

    @classmethod
    def decode(cls, found: dict[str, Any]) -> "Host":
        """From its stored JSON object."""
        return cls(name=str(found["name"]), state=str(found["state"]), address=str(found["address"]),
                   cpus=float(found["cpus"]), memory=int(found["memory"]),
                   gpus=tuple(str(gpu) for gpu in found.get("gpus") or ()), role=str(found.get("role", "")),
                   availability=str(found.get("availability", "")))


@dataclass(frozen=True)
class SeenHosts:
    """The hosts as the leading autoscaler saw them at ``at`` (Redis time)."""

    at: float
    hosts: tuple[Host, ...]

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> "SeenHosts":
        """Decode the stored hosts."""
        return cls(at=float(fields["seen_at"]), hosts=tuple(Host.decode(h) for h in json.loads(fields["hosts"])))


@dataclass(frozen=True)
class MovingAverage:
    """A moving average in seconds and how many samples it folded in (0: the configured seed)."""

    seconds: float
    samples: int


@dataclass(frozen=True)
class StartFailure:
    """The latest failed start of a model's replica."""

    at: float
    reason: str


@dataclass(frozen=True)
class ModelSnapshot:
    """A model as one script saw it at ``now`` (Redis time)."""

    now: float
    queued: int  # waiting: messages out and parked
    parked: int
    in_flight: int
    replicas: tuple[Replica, ...]
    averages: dict[str, MovingAverage] = field(default_factory=dict)
    start_failure: StartFailure | None = None
    scaling: dict[str, str] = field(default_factory=dict)  # the policy's state, as stored

    @classmethod
    def decode(cls, text: str, seeds: dict[str, float]) -> "ModelSnapshot":
        """From observe.lua's JSON; averages not yet measured are their ``seeds``."""
        found = json.loads(text)
        stats, failure = found["stats"] or {}, found["start_failure"] or {}
        replicas = sorted((Replica.from_hash(r) for r in found["replicas"] or []), key=lambda r: (r.started_at, r.id))
        averages = {metric: MovingAverage(seconds=_finite(stats.get(metric), seed),
                                          samples=int(stats.get(f"{metric}_samples", 0)))
                    for metric, seed in seeds.items()}
        return cls(now=float(found["now"]), queued=int(found["queued"]) + int(found["parked"]),
                   parked=int(found["parked"]), in_flight=int(found["in_flight"]), replicas=tuple(replicas),
                   averages=averages, scaling=dict(found["scaling"] or {}),
                   start_failure=StartFailure(float(failure["at"]), failure["reason"]) if failure else None)


def _finite(value: str | None, default: float) -> float:
    number = float(value) if value else default
    return number if math.isfinite(number) else default


@dataclass(frozen=True)
class Outcome:
    """What a replica's answer makes of a job: SUCCEEDED with its output (JSON text), or FAILED with an error."""

    status: JobStatus
    output: str | None = None
    error: JobError | None = None
    service_time: float | None = None  # the replica's own seconds for the request, when it said (validated)

    def fields(self) -> list[str]:
        """The job fields it sets."""
        if self.error is not None:
            return ["error", json.dumps({"code": self.error.code, "message": self.error.message})]
        return ["output", self.output or "null"]
