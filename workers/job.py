"""A job's own types: its status, record, error and outcome, and the one table of the moves between its statuses.

The store, the protocol adapters and the gateway all import them from here. ``MOVES`` is written once: the Lua
prelude gets it as a table (``workers.store.scripts``), and every status a script writes goes through ``move`` in
``lib.lua``, which refuses a move the table lacks.
"""

import enum
import json
from dataclasses import dataclass
from typing import Any


class JobStatus(enum.StrEnum):
    """A job's lifecycle (the moves between statuses are ``MOVES``)."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        """True once nothing more will happen to the job (unless it is resubmitted)."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class Move:
    """An allowed change of a job's status, named by what makes it (``source`` None: the job is new)."""

    name: str
    source: JobStatus | None
    target: JobStatus


MOVES = (
    Move("submit", None, JobStatus.QUEUED),  # submit.lua
    Move("start", JobStatus.QUEUED, JobStatus.RUNNING),  # start.lua, retry.lua (on another slot)
    Move("finish", JobStatus.RUNNING, JobStatus.SUCCEEDED),  # finish.lua
    Move("fail", JobStatus.RUNNING, JobStatus.FAILED),  # finish.lua, retry.lua and reap.lua after the last attempt
    Move("fail", JobStatus.QUEUED, JobStatus.FAILED),  # start, refuse, expire_parked, expire, start_failed, abandon
    Move("requeue", JobStatus.RUNNING, JobStatus.QUEUED),  # retry.lua (its replica failed), reap.lua (worker lost)
    Move("cancel", JobStatus.QUEUED, JobStatus.CANCELLED),  # cancel.lua, purge.lua
    Move("cancel", JobStatus.RUNNING, JobStatus.CANCELLED),  # cancel.lua (best-effort: its result is refused)
    Move("resubmit", JobStatus.FAILED, JobStatus.QUEUED),  # resubmit.lua (POST /v1/jobs/<id>/retry)
    Move("resubmit", JobStatus.CANCELLED, JobStatus.QUEUED),  # resubmit.lua
)


def allowed(source: JobStatus | None, target: JobStatus) -> Move | None:
    """The move from ``source`` to ``target``, if the table has it."""
    return next((m for m in MOVES if m.source == source and m.target == target), None)


class Priority(enum.StrEnum):
    """Where a job stands in its model's queue: a high job starts before the normal ones waiting (unless they
    waited longer than the model's ``priority_aging`` before it came); low ones alone start no replica."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    def offset(self, aging: float) -> float:
        """Seconds its rank is ahead of its submit time (behind, if negative)."""
        return {Priority.HIGH: aging, Priority.NORMAL: 0.0, Priority.LOW: -aging}[self]


@dataclass(frozen=True)
class JobOptions:
    """What a submit may ask of its job: deadlines (seconds) and where it stands in its model's queue."""

    ttl: float | None = None  # not started within it (from its submit, or its retry): FAILED expired
    execution_timeout: float | None = None  # a run's bound (at most the model's request_timeout): FAILED timeout
    priority: Priority = Priority.NORMAL

    def fields(self) -> dict[str, str]:
        """The job fields it sets."""
        found = {"ttl": self.ttl, "execution_timeout": self.execution_timeout}
        fields = {name: repr(value) for name, value in found.items() if value is not None}
        return fields if self.priority is Priority.NORMAL else {**fields, "priority": self.priority.value}


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


class DeliveryStatus(enum.StrEnum):
    """Where a job's webhook delivery is: to be made (or retried), made, or given up."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class View(enum.StrEnum):
    """How a job is shown to a webhook: as the front door it was submitted through shows it."""

    NATIVE = "native"  # the /v1 API's view
    RUNPOD = "runpod"  # RunPod's status answer


@dataclass(frozen=True)
class Delivery:
    """A job's webhook: its URL, the view it gets, and how its delivery goes (attempts so far, the last attempt's
    error)."""

    url: str
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    last_error: str = ""
    view: View = View.NATIVE

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> "Delivery | None":
        """The delivery of a job record, if it names a webhook."""
        if not fields.get("webhook"):
            return None
        status = fields.get("webhook_status", DeliveryStatus.PENDING)
        return cls(url=fields["webhook"], status=DeliveryStatus(status) if status in DeliveryStatus._value2member_map_
                   else DeliveryStatus.PENDING, attempts=int(fields.get("webhook_attempts") or 0),
                   last_error=fields.get("webhook_error", ""),
                   view=View(fields["webhook_view"]) if fields.get("webhook_view") in View._value2member_map_
                   else View.NATIVE)


@dataclass(frozen=True)
class Job:
    """A job as recorded."""

    id: str
    model: str
    status: JobStatus
    input: str | None  # its input as JSON text (None when read without it): sent on to its replica as it is
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
    commits: int = 0  # outcomes committed: one per run that finished (a resubmitted job runs again)
    requeued_at: float | None = None  # when it was last taken back from a lost worker or sent again
    run: int = 0  # times it was run again (POST retry) after it ended
    parts_base: int = 0  # the number of its run's first part: the parts of its earlier runs
    options: JobOptions = JobOptions()
    webhook: Delivery | None = None  # where its end is delivered, and how that goes
    cold_start: str | None = None  # the replica it ran on, if it was submitted before that replica was ready

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> "Job":
        """Decode a job record: all of it, or the fields of ``VIEWED`` (``input`` None then); the input stays text."""
        return cls(
            id=fields["id"], model=fields["model"], status=JobStatus(fields["status"]),
            input=fields.get("input"), created_at=float(fields["created_at"]),
            output=json.loads(fields["output"]) if "output" in fields else None,
            error=JobError.decode(fields["error"]) if fields.get("error") else None,
            started_at=_float(fields.get("started_at")), finished_at=_float(fields.get("finished_at")),
            replica=fields.get("replica") or None, attempts=int(fields.get("attempts", 0)),
            cancelled_while=JobStatus(fields["cancelled_while"]) if fields.get("cancelled_while") else None,
            owner=fields.get("owner", ""), worker=fields.get("worker", ""), commits=int(fields.get("commits", 0)),
            requeued_at=_float(fields.get("requeued_at")), webhook=Delivery.from_hash(fields),
            run=int(fields.get("run", 0)), parts_base=int(fields.get("parts_base", 0)),
            cold_start=fields.get("cold_start") or None,
            options=JobOptions(ttl=_float(fields.get("ttl")), execution_timeout=_float(fields.get("execution_timeout")),
                               priority=Priority(fields.get("priority", Priority.NORMAL))),
        )


# The fields of a job record that Job.from_hash reads, but its input: what a reader that shows the job (its views,
# webhooks, waits) fetches; the input, as large as a client sent it, is read only by the worker that runs the job.
VIEWED = ("id", "model", "status", "created_at", "output", "error", "started_at", "finished_at", "replica",
          "attempts", "cancelled_while", "owner", "worker", "commits", "requeued_at", "run", "parts_base",
          "cold_start", "ttl", "execution_timeout", "priority", "webhook", "webhook_status", "webhook_attempts",
          "webhook_error", "webhook_view")


def _float(value: str | None) -> float | None:
    return float(value) if value else None


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
