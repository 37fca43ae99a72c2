"""The durable job store: job records in Redis with guarded status transitions.

Every status change is one Lua script that checks the current status, writes the new fields and
moves the id between the model's queued and running sets, so a transition is atomic and a stale
writer (a cancelled job's late result, say) is refused rather than overwriting.
"""

import enum
import importlib.resources
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.client import Pipeline

from workers import keys


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
        return self in FINISHED


FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

# which statuses each status may be entered from
ALLOWED_FROM: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING}),
    JobStatus.RUNNING: frozenset({JobStatus.QUEUED}),
    JobStatus.SUCCEEDED: frozenset({JobStatus.RUNNING}),
    JobStatus.FAILED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
    JobStatus.CANCELLED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
}

LUA = importlib.resources.files("workers") / "lua"


def script(client: redis.Redis, name: str) -> Any:
    """A Lua script of ``workers/lua``, registered with the client."""
    return client.register_script((LUA / f"{name}.lua").read_text())


class Reaped(enum.StrEnum):
    """What the reaper did with a job whose lease ran out."""

    REQUEUE = "REQUEUE"  # back to QUEUED: send its task again
    DEAD = "DEAD"  # out of attempts: FAILED and in the dead-letter list
    LIVE = "LIVE"  # renewed meanwhile
    GONE = "GONE"  # expired or deleted


@dataclass(frozen=True)
class JobError:
    """Why a job failed."""

    code: str
    message: str


@dataclass(frozen=True)
class Job:
    """A job as recorded in Redis."""

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
    owner: str = ""  # the API key (hash prefix) that submitted it
    worker: str = ""  # the worker (host:pid) that claimed it last
    commits: int = 0  # how many times an outcome was committed (1 once finished)
    requeued_at: float | None = None  # when the reaper last put it back after a lost worker

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> "Job":
        """Decode a job record."""
        error = json.loads(fields["error"]) if fields.get("error") else None
        return cls(
            id=fields["id"],
            model=fields["model"],
            status=JobStatus(fields["status"]),
            input=json.loads(fields["input"]),
            created_at=float(fields["created_at"]),
            output=json.loads(fields["output"]) if "output" in fields else None,
            error=JobError(**error) if error else None,
            started_at=_float(fields.get("started_at")),
            finished_at=_float(fields.get("finished_at")),
            replica=fields.get("replica") or None,
            attempts=int(fields.get("attempts", 0)),
            cancelled_while=JobStatus(fields["cancelled_while"]) if fields.get("cancelled_while") else None,
            owner=fields.get("owner", ""),
            worker=fields.get("worker", ""),
            commits=int(fields.get("commits", 0)),
            requeued_at=_float(fields.get("requeued_at")),
        )


def _float(value: str | None) -> float | None:
    return float(value) if value else None


class JobStore:
    """Job records in Redis; the source of truth for every job."""

    def __init__(self, client: redis.Redis, retention: float) -> None:
        self.redis = client
        self.retention = int(retention)
        self._transition = script(client, "transition")
        self._create = script(client, "create")
        self._claim = script(client, "claim")
        self._renew = script(client, "renew")
        self._expire = script(client, "expire_lease")
        self._resend = script(client, "resend")

    @staticmethod
    def new(model: str, payload: Any, owner: str = "") -> Job:
        """A new QUEUED job, not yet recorded."""
        return Job(id=uuid.uuid4().hex, model=model, status=JobStatus.QUEUED, input=payload, created_at=time.time(),
                   owner=owner)

    def create(self, job: Job) -> Job:
        """Record a new QUEUED job and count it in the model's queue."""
        self.record(job, max_queued=0)
        return job

    def record(self, job: Job, max_queued: int) -> bool:
        """Record a new QUEUED job unless ``max_queued`` (0: no limit) of its model's jobs already wait."""
        fields = ["id", job.id, "model", job.model, "status", job.status.value, "input", json.dumps(job.input),
                  "created_at", repr(job.created_at), "attempts", 0, "owner", job.owner]
        result = self._create(keys=[keys.job(job.id), keys.queued(job.model), keys.SCALE],
                              args=[max_queued, job.created_at, job.id, job.model, *fields])
        return bool(result == "OK")

    def discard(self, job: Job) -> None:
        """Forget a job recorded but never enqueued."""
        with self.redis.pipeline() as pipe:
            pipe.delete(keys.job(job.id))
            pipe.zrem(keys.queued(job.model), job.id)
            pipe.execute()

    def get(self, job_id: str) -> Job | None:
        """The job, or None if unknown or expired."""
        fields = cast(dict[str, str], self.redis.hgetall(keys.job(job_id)))
        return Job.from_hash(fields) if fields else None

    def transition(self, job: Job, to: JobStatus, claim: str = "", **fields: Any) -> bool:
        """Move the job to ``to`` if its status allows and ``claim`` (if given) is current; else False."""
        return bool(self._transition(**self._transition_call(job.id, job.model, to, claim, fields)) == "OK")

    def queue_transition(self, pipe: Pipeline, job_id: str, model: str, to: JobStatus, claim: str,
                         **fields: Any) -> None:
        """The same transition, sent when ``pipe`` executes: "OK" there if it took, else why not."""
        self._transition(client=pipe, **self._transition_call(job_id, model, to, claim, fields))

    def _transition_call(self, job_id: str, model: str, to: JobStatus, claim: str,
                         fields: dict[str, Any]) -> dict[str, Any]:
        allowed = ",".join(sorted(ALLOWED_FROM[to]))
        pairs: list[str] = []
        for name, value in fields.items():
            pairs += [name, value if isinstance(value, str) else json.dumps(value)]
        keys_ = [keys.job(job_id), keys.queued(model), keys.running(model), keys.done(job_id), keys.LEASES]
        return {"keys": keys_, "args": [to.value, allowed, self.retention, time.time(), claim, *pairs]}

    def claim(self, job_id: str, token: str, lease: float, worker: str) -> Job | str:
        """Claim a QUEUED job for one task run: the job, or why not (its status, CLAIMED, MISSING)."""
        return self.claimed(self.queue_claim(self.redis, job_id, token, lease, worker))

    def queue_claim(self, client: redis.Redis | Pipeline, job_id: str, token: str, lease: float, worker: str) -> Any:
        """The claim, on ``client`` (a pipeline sends it when it executes; read its result with ``claimed``)."""
        return self._claim(keys=[keys.job(job_id), keys.LEASES], args=[token, time.time(), lease, worker],
                           client=client)

    @staticmethod
    def claimed(result: Any) -> Job | str:
        """The claimed job from the claim script's result, or why it was not claimed."""
        if isinstance(result, list):
            return Job.from_hash(dict(zip(result[::2], result[1::2], strict=True)))
        return str(result)

    def renew(self, claims: dict[str, str], lease: float) -> int:
        """Extend the leases of the claims still held (job id → token); how many were renewed."""
        if not claims:
            return 0
        ids = list(claims)
        return int(self._renew(keys=[keys.LEASES, *map(keys.job, ids)], args=[time.time(), lease,
                                                                              *(claims[i] for i in ids)]))

    def expired_leases(self, now: float, limit: int = 1000) -> list[str]:
        """Ids of jobs whose lease ran out before ``now``."""
        return cast(list[str], self.redis.zrangebyscore(keys.LEASES, "-inf", now, start=0, num=limit))

    def expire_lease(self, job: Job, max_attempts: int, now: float) -> Reaped:
        """Requeue a job whose worker was lost, or fail it into the dead-letter list after its last attempt."""
        error = json.dumps({"code": "worker_lost",
                            "message": f"the worker running it was lost on all {max_attempts} attempts"})
        keys_ = [keys.job(job.id), keys.LEASES, keys.queued(job.model), keys.running(job.model), keys.done(job.id),
                 keys.DEAD, keys.wake(job.model)]
        args = [job.id, now, max_attempts, self.retention, error, keys.SLOTS_PREFIX]
        result = str(self._expire(keys=keys_, args=args))
        return Reaped(result) if result in Reaped.__members__ else Reaped.GONE

    def unclaimed_since(self, model: str, before: float, limit: int = 100) -> list[str]:
        """Ids of the model's QUEUED jobs last enqueued before ``before`` (candidates for a lost message)."""
        return cast(list[str], self.redis.zrangebyscore(keys.queued(model), "-inf", before, start=0, num=limit))

    def mark_resent(self, job: Job, now: float) -> bool:
        """Whether the job is QUEUED with no live claim; if so it counts as enqueued again ``now``."""
        return bool(self._resend(keys=[keys.job(job.id), keys.queued(job.model)], args=[job.id, now]))

    def bury(self, job: Job) -> None:
        """Put a job that failed after its last attempt in the dead-letter list."""
        with self.redis.pipeline() as pipe:
            pipe.lpush(keys.DEAD, job.id)
            pipe.ltrim(keys.DEAD, 0, 9999)
            pipe.execute()

    def dead_letters(self, limit: int = 100) -> list[str]:
        """Ids of the newest jobs that failed after their last attempt."""
        return cast(list[str], self.redis.lrange(keys.DEAD, 0, limit - 1))

    def cancel(self, job: Job) -> bool:
        """Cancel a queued job, or a running one best-effort (its result will be discarded)."""
        return self.transition(job, JobStatus.CANCELLED, cancelled_while=job.status.value,
                               finished_at=repr(time.time()))

    def wait(self, job_id: str, timeout: float) -> Job | None:
        """Block until the job finishes or ``timeout`` passes (no polling); the job as it then is.

        A finished job's done list holds a token. BLMOVE from the list to itself waits for it and leaves
        it there for other waiters; the HGETALL queued behind it on the same connection runs once it
        returns, so waiting and reading take one round trip (BLMOVE with a fractional timeout: Redis 6.2+).
        """
        if timeout <= 0:
            return self.get(job_id)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.blmove(keys.done(job_id), keys.done(job_id), timeout, "LEFT", "RIGHT")  # type: ignore[arg-type]
            pipe.hgetall(keys.job(job_id))
            fields = pipe.execute()[-1]
        return Job.from_hash(fields) if fields else None

    def queue_depth(self, model: str) -> int:
        """Jobs of the model waiting to run."""
        return int(self.redis.zcard(keys.queued(model)))

    def in_flight(self, model: str) -> int:
        """Jobs of the model running now."""
        return int(self.redis.scard(keys.running(model)))
