"""What the store holds beside jobs (``workers.job``), as frozen values: a started job's slot, replicas, moving
averages, a model's snapshot, and the hosts."""

import enum
import json
import math
from dataclasses import dataclass, field
from typing import Any

from workers.job import Job, JobError, JobStatus


def _float(value: str | None) -> float | None:
    return float(value) if value else None


@dataclass(frozen=True)
class Slot:
    """A concurrency slot a job holds on a replica."""

    replica_id: str
    endpoint: str


@dataclass(frozen=True)
class Waiting:
    """What a waiting job waits for: its message to be taken (sent), a free slot (parked), or a replica's start
    (replica_starting: which, and the last line it printed); since when (Redis time) and how long by now."""

    reason: str
    since: float
    age: float
    replica: str = ""
    stage: str = ""

    @classmethod
    def decode(cls, reply: list[str]) -> "Waiting | None":
        """From waiting.lua's ``{reason, since, now, replica, stage}`` (``{}``: not waiting)."""
        if not reply:
            return None
        since, now = float(reply[1]), float(reply[2])
        return cls(reason=str(reply[0]), since=since, age=max(0.0, now - since), replica=str(reply[3]),
                   stage=str(reply[4])[:500])


@dataclass(frozen=True)
class Started:
    """A job running on a slot under a task's claim."""

    job: Job
    slot: Slot


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


STAGES = ("placed", "created", "process_up", "ready", "first_result")  # a cold start's stages, in order


@dataclass(frozen=True)
class ColdStart:
    """A replica's cold start: each stage's seconds, from the end of the one before (from its record for the first):
    placed (it had a host), created (its process or container ran), process_up (its server answered), ready (it
    answered ready), first_result (its first job's result, if jobs waited for it). A stage not seen is merged into
    the next; the stages add up to ``total``."""

    replica: str
    model: str
    host: str
    started_at: float
    ready_at: float
    stages: dict[str, float]
    total: float
    waited: int  # the jobs sent to it once it was ready

    @classmethod
    def decode(cls, text: str) -> "ColdStart":
        """From its stored JSON."""
        found = json.loads(text)
        stages = found.get("stages") or {}  # Lua's cjson writes an empty table as {}
        return cls(replica=found["replica"], model=found["model"], host=found.get("host", ""),
                   started_at=float(found["started_at"]), ready_at=float(found["ready_at"]),
                   stages={name: float(stages[name]) for name in STAGES if name in stages},
                   total=float(found["total"]), waited=int(found.get("waited", 0)))

    @property
    def complete(self) -> bool:
        """Whether it is over: ready with nobody waiting, or its first result in."""
        return self.waited == 0 or "first_result" in self.stages


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
class JobSummary:
    """A job as listed (GET /v1/jobs): its status, times, attempts, replica and error; no input or output."""

    id: str
    model: str
    status: JobStatus
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    replica: str = ""
    error: JobError | None = None

    @classmethod
    def decode(cls, fields: list[str | None]) -> "JobSummary":
        """From list_jobs.lua's nine fields (id, model, status, created_at, started_at, finished_at, attempts,
        replica, error; None where not set)."""
        job_id, model, status, created, started, finished, attempts, replica, error = fields
        return cls(id=str(job_id), model=str(model), status=JobStatus(str(status)), created_at=float(str(created)),
                   started_at=_float(started), finished_at=_float(finished), attempts=int(attempts or 0),
                   replica=replica or "", error=JobError.decode(error) if error else None)


@dataclass(frozen=True)
class JobPage:
    """Jobs of one owner, newest first, and where the next page begins (``next``: the created_at to list before;
    None when no more remain)."""

    jobs: tuple[JobSummary, ...]
    next: float | None


class BoundsSource(enum.StrEnum):
    """Where a model's replica bounds in effect come from."""

    OVERRIDE = "override"  # an operator's (PUT /v1/models/<m>/scale)
    CONFIG = "config"  # the models file


MOST_REPLICAS = 1000  # the highest bound an operator may set


@dataclass(frozen=True)
class ScaleBounds:
    """A model's replica bounds and where they come from."""

    min_replicas: int
    max_replicas: int
    source: BoundsSource = BoundsSource.CONFIG

    @classmethod
    def override(cls, fields: dict[str, str]) -> "ScaleBounds | None":
        """An operator's bounds as stored; None if there are none, or none that hold (0 <= min <= max, 1 <= max)."""
        try:
            least, most = int(fields["min_replicas"]), int(fields["max_replicas"])
        except (KeyError, ValueError):
            return None
        if not 0 <= least <= most or not 1 <= most <= MOST_REPLICAS:
            return None
        return cls(least, most, BoundsSource.OVERRIDE)


@dataclass(frozen=True)
class Desired:
    """The replicas the scaling policy last wanted for a model, since when (Redis time) and why."""

    replicas: int
    at: float
    reason: str

    def fields(self) -> dict[str, str]:
        """As stored beside the policy's state."""
        return {"desired": str(self.replicas), "desired_at": repr(self.at), "desired_reason": self.reason}

    @classmethod
    def of(cls, fields: dict[str, str]) -> "Desired | None":
        """From the stored scaling state; None if it holds none."""
        try:
            return cls(int(fields["desired"]), float(fields["desired_at"]), fields.get("desired_reason", ""))
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class ModelSnapshot:
    """A model as one script saw it at ``now`` (Redis time)."""

    now: float
    waiting: int  # QUEUED jobs: sent (their message is out) and parked
    parked: int
    running: int  # RUNNING jobs (a replica's in_flight counts the slots held on it)
    replicas: tuple[Replica, ...]
    averages: dict[str, MovingAverage] = field(default_factory=dict)
    start_failure: StartFailure | None = None
    scaling: dict[str, str] = field(default_factory=dict)  # the policy's state, as stored
    low: int = 0  # waiting jobs of priority low
    override: ScaleBounds | None = None  # an operator's replica bounds, if set

    @property
    def desired(self) -> Desired | None:
        """The replicas the policy last wanted, as the leader saved them with its state."""
        return Desired.of(self.scaling)

    @classmethod
    def decode(cls, text: str, seeds: dict[str, float]) -> "ModelSnapshot":
        """From observe.lua's JSON; averages not yet measured are their ``seeds``."""
        found = json.loads(text)
        stats, failure = found["stats"] or {}, found["start_failure"] or {}
        replicas = sorted((Replica.from_hash(r) for r in found["replicas"] or []), key=lambda r: (r.started_at, r.id))
        averages = {metric: MovingAverage(seconds=_finite(stats.get(metric), seed),
                                          samples=int(stats.get(f"{metric}_samples", 0)))
                    for metric, seed in seeds.items()}
        return cls(now=float(found["now"]), waiting=int(found["sent"]) + int(found["parked"]),
                   parked=int(found["parked"]), running=int(found["running"]), replicas=tuple(replicas),
                   averages=averages, scaling=dict(found["scaling"] or {}), low=int(found.get("low", 0)),
                   override=ScaleBounds.override(found.get("scale_bounds") or {}),
                   start_failure=StartFailure(float(failure["at"]), failure["reason"]) if failure else None)


def _finite(value: str | None, default: float) -> float:
    number = float(value) if value else default
    return number if math.isfinite(number) else default


@dataclass(frozen=True)
class FailedDelivery:
    """A job whose webhook delivery was given up."""

    job: str
    model: str
    url: str
    attempts: int
    last_error: str
    failed_at: float  # Redis time

    @classmethod
    def decode(cls, found: dict[str, Any]) -> "FailedDelivery":
        """From webhook_failed.lua's JSON object."""
        return cls(job=str(found["job"]), model=str(found["model"]), url=str(found["url"]),
                   attempts=int(found["attempts"]), last_error=str(found["last_error"]),
                   failed_at=float(found["failed_at"]))
