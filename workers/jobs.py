"""The durable job store: job records in Redis with guarded status transitions.

Every status change is one Lua script that checks the current status, writes the new fields and
moves the id between the model's queued and running sets, so a transition is atomic and a stale
writer (a cancelled job's late result, say) is refused rather than overwriting.
"""

import enum
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.typing import EncodableT, FieldT

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

TRANSITION = """
-- KEYS: job, queued set, running set, done list
-- ARGV: new status, allowed old statuses (comma separated), retention seconds, now, field/value pairs
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return false end
if not string.find(',' .. ARGV[2] .. ',', ',' .. status .. ',', 1, true) then return status end
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('HSET', KEYS[1], 'status', ARGV[1])
if #ARGV > 4 then redis.call('HSET', KEYS[1], unpack(ARGV, 5)) end
if ARGV[1] == 'RUNNING' then
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('ZREM', KEYS[2], id)
  redis.call('SADD', KEYS[3], id)
elseif ARGV[1] == 'QUEUED' then
  redis.call('SREM', KEYS[3], id)
  redis.call('ZADD', KEYS[2], ARGV[4], id)
else
  redis.call('ZREM', KEYS[2], id)
  redis.call('SREM', KEYS[3], id)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('RPUSH', KEYS[4], 1)
  redis.call('EXPIRE', KEYS[4], ARGV[3])
end
return 'OK'
"""


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
        )


def _float(value: str | None) -> float | None:
    return float(value) if value else None


class JobStore:
    """Job records in Redis; the source of truth for every job."""

    def __init__(self, client: redis.Redis, retention: float) -> None:
        self.redis = client
        self.retention = int(retention)
        self._transition = client.register_script(TRANSITION)

    def create(self, model: str, payload: Any, now: float | None = None) -> Job:
        """Record a new QUEUED job and count it in the model's queue."""
        job = Job(id=uuid.uuid4().hex, model=model, status=JobStatus.QUEUED, input=payload,
                  created_at=now or time.time())
        record: dict[FieldT, EncodableT] = {"id": job.id, "model": model, "status": job.status.value,
                  "input": json.dumps(payload), "created_at": repr(job.created_at), "attempts": 0}
        with self.redis.pipeline() as pipe:
            pipe.hset(keys.job(job.id), mapping=record)
            pipe.zadd(keys.queued(model), {job.id: job.created_at})
            pipe.rpush(keys.SCALE, model)
            pipe.ltrim(keys.SCALE, -100, -1)
            pipe.execute()
        return job

    def discard(self, job: Job) -> None:
        """Remove a job that was never handed to a worker."""
        with self.redis.pipeline() as pipe:
            pipe.delete(keys.job(job.id))
            pipe.zrem(keys.queued(job.model), job.id)
            pipe.execute()

    def get(self, job_id: str) -> Job | None:
        """The job, or None if unknown or expired."""
        fields = cast(dict[str, str], self.redis.hgetall(keys.job(job_id)))
        return Job.from_hash(fields) if fields else None

    def transition(self, job: Job, to: JobStatus, **fields: Any) -> bool:
        """Move the job to ``to`` if its current status allows; False if it was refused."""
        allowed = ",".join(sorted(ALLOWED_FROM[to]))
        pairs: list[str] = []
        for name, value in fields.items():
            pairs += [name, value if isinstance(value, str) else json.dumps(value)]
        keys_ = [keys.job(job.id), keys.queued(job.model), keys.running(job.model), keys.done(job.id)]
        result = self._transition(keys=keys_, args=[to.value, allowed, self.retention, time.time(), *pairs])
        return bool(result == "OK")

    def cancel(self, job: Job) -> bool:
        """Cancel a queued job, or a running one best-effort (its result will be discarded)."""
        return self.transition(job, JobStatus.CANCELLED, cancelled_while=job.status.value,
                               finished_at=repr(time.time()))

    def wait(self, job_id: str, timeout: float) -> Job | None:
        """Block until the job finishes or ``timeout`` passes (no polling); the job as it then is."""
        job = self.get(job_id)
        if job is None or job.status.finished or timeout <= 0:
            return job
        token = self.redis.blpop([keys.done(job_id)], timeout=timeout)
        if token is not None:  # hand the token back for other waiters
            with self.redis.pipeline() as pipe:
                pipe.rpush(keys.done(job_id), 1)
                pipe.expire(keys.done(job_id), self.retention)
                pipe.execute()
        return self.get(job_id)

    def queue_depth(self, model: str) -> int:
        """Jobs of the model waiting to run."""
        return int(self.redis.zcard(keys.queued(model)))

    def in_flight(self, model: str) -> int:
        """Jobs of the model running now."""
        return int(self.redis.scard(keys.running(model)))
