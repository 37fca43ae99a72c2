"""The replica registry and per-model moving averages, in Redis.

A task takes a concurrency slot on a READY replica with one atomic script (least loaded first) and
gives it back when the request ends; the autoscaler drains a replica only when it holds no slot, in
one script too, so a replica is never stopped under a request.
"""

import enum
import time
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.client import Pipeline
from redis.typing import EncodableT, FieldT

from workers import keys
from workers.config import ModelConfig


class ReplicaState(enum.StrEnum):
    """A replica's lifecycle."""

    STARTING = "STARTING"
    READY = "READY"
    DRAINING = "DRAINING"
    FAILED = "FAILED"


@dataclass(frozen=True)
class Replica:
    """A replica as recorded in Redis."""

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

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> "Replica":
        """Decode a replica record."""
        return cls(
            id=fields["id"], model=fields["model"], backend=fields["backend"], endpoint=fields["endpoint"],
            handle=fields["handle"], state=ReplicaState(fields["state"]),
            started_at=float(fields["started_at"]), in_flight=int(fields.get("in_flight", 0)),  # from its slot set
            ready_at=float(fields["ready_at"]) if fields.get("ready_at") else None,
            last_used=float(fields["last_used"]) if fields.get("last_used") else None,
            reason=fields.get("reason", ""),
        )

    @property
    def idle_since(self) -> float:
        """When the replica last finished a request (or became ready)."""
        return self.last_used or self.ready_at or self.started_at


@dataclass(frozen=True)
class MovingAverage:
    """A moving average in seconds and how many samples it has folded in (0: the configured seed)."""

    seconds: float
    samples: int


@dataclass(frozen=True)
class StartFailure:
    """The latest failed start of a model's replica."""

    at: float
    reason: str


@dataclass(frozen=True)
class Slot:
    """A concurrency slot held on a replica."""

    replica_id: str
    endpoint: str

    @classmethod
    def of(cls, found: Any) -> "Slot | None":
        """The slot from the acquire script's result (None: no slot was free)."""
        return cls(replica_id=found[0], endpoint=found[1]) if found else None


ACQUIRE = """
-- KEYS: the model's replica set, the job; ARGV: replica key prefix, slot set prefix, concurrency, job id,
-- the claim the job must be under ('' = any)
if ARGV[5] ~= '' and redis.call('HGET', KEYS[2], 'claim') ~= ARGV[5] then return false end
local best, best_load, best_endpoint = nil, nil, nil
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local r = redis.call('HMGET', ARGV[1] .. id, 'state', 'endpoint')
  local load = redis.call('SCARD', ARGV[2] .. id)
  if r[1] == 'READY' and load < tonumber(ARGV[3]) and (best_load == nil or load < best_load) then
    best, best_load, best_endpoint = id, load, r[2]
  end
end
if best == nil then return false end
redis.call('SADD', ARGV[2] .. best, ARGV[4])
redis.call('HSET', KEYS[2], 'slot', best)
return {best, best_endpoint}
"""

RELEASE = """
-- KEYS: the replica's slot set, the replica, the job, wake list; ARGV: job id, now
redis.call('SREM', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'last_used', ARGV[2]) end
redis.call('HDEL', KEYS[3], 'slot')
redis.call('RPUSH', KEYS[4], 1)
redis.call('LTRIM', KEYS[4], -1000, -1)
return 1
"""

DRAIN_IF_IDLE = """
-- KEYS: replica, its slot set; ARGV: idle since at most (timestamp)
local r = redis.call('HMGET', KEYS[1], 'state', 'last_used', 'ready_at')
local last = tonumber(r[2] or r[3] or '0')
if r[1] == 'READY' and redis.call('SCARD', KEYS[2]) == 0 and last <= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'state', 'DRAINING')
  return 1
end
return 0
"""

MOVING_AVERAGE = """
-- KEYS: stats hash; ARGV: metric, sample, weight of the new sample
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
local new = tonumber(ARGV[2])
if old then new = old + tonumber(ARGV[3]) * (new - old) end
redis.call('HSET', KEYS[1], ARGV[1], new)
redis.call('HINCRBY', KEYS[1], ARGV[1] .. '_samples', 1)
return tostring(new)
"""


class ReplicaRegistry:
    """Replicas by model, their slots, and the model's moving averages."""

    def __init__(self, client: redis.Redis, weight: float = 0.2) -> None:
        self.redis = client
        self.weight = weight
        self._acquire = client.register_script(ACQUIRE)
        self._release = client.register_script(RELEASE)
        self._drain = client.register_script(DRAIN_IF_IDLE)
        self._average = client.register_script(MOVING_AVERAGE)

    def add(self, replica: Replica) -> None:
        """Record a replica."""
        record: dict[FieldT, EncodableT] = {
            "id": replica.id, "model": replica.model, "backend": replica.backend,
            "endpoint": replica.endpoint, "handle": replica.handle, "state": replica.state.value,
            "started_at": repr(replica.started_at), "reason": replica.reason,
        }
        with self.redis.pipeline() as pipe:
            pipe.hset(keys.replica(replica.id), mapping=record)
            pipe.sadd(keys.replicas(replica.model), replica.id)
            pipe.execute()

    def get(self, replica_id: str) -> Replica | None:
        """The replica, or None."""
        with self.redis.pipeline() as pipe:
            pipe.hgetall(keys.replica(replica_id))
            pipe.scard(keys.slots(replica_id))
            fields, in_flight = pipe.execute()
        return Replica.from_hash({**fields, "in_flight": in_flight}) if fields else None

    def list(self, model: str) -> list[Replica]:
        """The model's replicas, oldest first."""
        ids = sorted(cast(set[str], self.redis.smembers(keys.replicas(model))))
        with self.redis.pipeline() as pipe:
            for replica_id in ids:
                pipe.hgetall(keys.replica(replica_id))
                pipe.scard(keys.slots(replica_id))
            answers = pipe.execute()
        found = [Replica.from_hash({**fields, "in_flight": in_flight})
                 for fields, in_flight in zip(answers[::2], answers[1::2], strict=True) if fields]
        return sorted(found, key=lambda r: r.started_at)

    def set_state(self, replica: Replica, state: ReplicaState, reason: str = "") -> None:
        """Record a state change (READY also records when)."""
        fields: dict[FieldT, EncodableT] = {"state": state.value, "reason": reason}
        if state is ReplicaState.READY:
            fields["ready_at"] = repr(time.time())
        with self.redis.pipeline() as pipe:
            pipe.hset(keys.replica(replica.id), mapping=fields)
            if state is ReplicaState.READY:
                pipe.delete(keys.start_failure(replica.model))
                pipe.rpush(keys.wake(replica.model), *[1] * 8)
            pipe.execute()

    def record_start_failure(self, model: str, reason: str) -> None:
        """Remember that a replica of the model failed to start, and wake the tasks waiting for one."""
        with self.redis.pipeline() as pipe:
            pipe.hset(keys.start_failure(model), mapping={"at": repr(time.time()), "reason": reason})
            pipe.rpush(keys.wake(model), *[1] * 8)
            pipe.execute()

    def start_failure(self, model: str) -> StartFailure | None:
        """The model's latest failed start, if no replica became ready since."""
        fields = cast(dict[str, str], self.redis.hgetall(keys.start_failure(model)))
        return StartFailure(at=float(fields["at"]), reason=fields["reason"]) if fields else None

    def remove(self, replica: Replica) -> None:
        """Forget a stopped replica."""
        with self.redis.pipeline() as pipe:
            pipe.srem(keys.replicas(replica.model), replica.id)
            pipe.delete(keys.replica(replica.id), keys.slots(replica.id))
            pipe.execute()

    def acquire(self, model: str, concurrency: int, job_id: str, claim: str = "") -> Slot | None:
        """Take a free slot for the job (if under ``claim``) on the least-loaded READY replica, or None."""
        return Slot.of(self.queue_acquire(self.redis, model, concurrency, job_id, claim))

    def queue_acquire(self, client: redis.Redis | Pipeline, model: str, concurrency: int, job_id: str,
                      claim: str = "") -> Any:
        """The same, on ``client`` (a pipeline sends it when it executes; read its result with ``Slot.of``)."""
        return self._acquire(keys=[keys.replicas(model), keys.job(job_id)],
                             args=[keys.REPLICA_PREFIX, keys.SLOTS_PREFIX, concurrency, job_id, claim], client=client)

    def wait_for_slot(self, model: str, timeout: float) -> None:
        """Block until a slot may have freed on the model's replicas, or ``timeout`` passes."""
        self.redis.blpop([keys.wake(model)], timeout=timeout)

    def release(self, model: str, slot: Slot, job_id: str, pipe: Pipeline | None = None) -> None:
        """Give the job's slot back and wake one waiting task (on ``pipe``, if given, when it executes)."""
        self._release(keys=[keys.slots(slot.replica_id), keys.replica(slot.replica_id), keys.job(job_id),
                            keys.wake(model)], args=[job_id, time.time()], client=pipe)

    def drain_if_idle(self, replica: Replica, idle_before: float) -> bool:
        """Mark the replica DRAINING if it holds no slot and was idle since ``idle_before``."""
        return bool(self._drain(keys=[keys.replica(replica.id), keys.slots(replica.id)], args=[idle_before]))

    def record(self, model: str, metric: str, seconds: float, pipe: Pipeline | None = None) -> None:
        """Fold a sample into the model's moving average of ``metric`` (on ``pipe``, if given)."""
        self._average(keys=[keys.stats(model)], args=[metric, seconds, self.weight], client=pipe)

    def averages(self, model: ModelConfig) -> dict[str, MovingAverage]:
        """The model's moving averages of service time and cold start; the configured seeds until measured."""
        stored = cast(dict[str, str], self.redis.hgetall(keys.stats(model.name)))
        seeds = {"service_time": model.service_time_seed, "cold_start": model.cold_start_seed}
        return {metric: MovingAverage(seconds=float(stored.get(metric, seed)),
                                      samples=int(stored.get(f"{metric}_samples", 0)))
                for metric, seed in seeds.items()}
