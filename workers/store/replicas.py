"""The replica registry: replicas by model, their slots, moving averages, start failures, scaling state, and the
hosts they run on.

Every write here is the leading autoscaler's and is fenced: its script checks the caller's leader token in the same
step, so an autoscaler that lost the leadership mid-action (a slow Docker call, a paused process) changes nothing.
Workers take and give back slots through the job scripts (``workers.store.jobs``).
"""

import json
import math
import uuid
from collections.abc import Iterable
from dataclasses import asdict

import redis

from workers.store import keys, replies
from workers.store.records import ColdStart, Host, ModelSnapshot, Replica, ScaleBounds, SeenHosts
from workers.store.replies import ScaleReply, ScaleSet
from workers.store.scripts import Scripts

HOSTS_TTL = 30.0  # seconds the hosts a leader saved are kept (it saves them about every second)


class ReplicaRegistry:
    """Replicas and per-model scaling data in Redis."""

    def __init__(self, client: redis.Redis, scripts: Scripts, weight: float = 0.2) -> None:
        self.redis = client
        self.scripts = scripts
        self.weight = weight

    def snapshot(self, model: str, seeds: dict[str, float]) -> ModelSnapshot:
        """The model at one moment: load, replicas, averages (``seeds`` until measured), start failure, state."""
        return ModelSnapshot.decode(str(self.scripts("observe", model)), seeds)

    def get(self, replica_id: str) -> Replica | None:
        """One replica, or None."""
        fields = self.redis.hgetall(keys.replica(replica_id))
        return Replica.from_hash(fields) if fields else None  # type: ignore[arg-type]

    def of(self, model: str) -> list[Replica]:
        """The model's replicas, oldest first."""
        return list(self.snapshot(model, {}).replicas)

    def add(self, token: str, replica_id: str, model: str, backend: str) -> bool:
        """Record a replica about to start (STARTING); False if the caller no longer leads."""
        return bool(self.scripts("add_replica", token, replica_id, model, backend))

    def launched(self, token: str, replica_id: str, endpoint: str, handle: str, host: str = "",
                 placed: float | None = None, created: float | None = None) -> int:
        """Record where a started replica runs (``host``: the machine's hostname), and how many seconds ago it had
        its host (``placed``) and ran (``created``), if known: 1; 0 if the caller no longer leads; -1 if the
        record is gone."""
        return int(self.scripts("launched", token, replica_id, endpoint, handle, host, ago(placed), ago(created)))

    def ready(self, token: str, replica_id: str, concurrency: int, created: float | None = None,
              up: float | None = None) -> tuple[float, int] | None:
        """Mark a STARTING replica READY (``created``, ``up``: how many seconds ago it ran and its server first
        answered, if seen): its cold start (s) and the parked jobs sent to it; None if refused."""
        found = self.scripts("ready", token, replica_id, concurrency, self.weight, ago(created), ago(up))
        return (float(found[0]), int(found[1])) if found else None

    def cold_starts(self, model: str) -> list[ColdStart]:
        """The model's last cold starts, newest first."""
        return [ColdStart.decode(str(text)) for text in self.scripts("cold_starts", model)]

    def cold_start(self, replica_id: str) -> ColdStart | None:
        """A replica's cold start, while it is kept."""
        found = self.redis.get(keys.COLD_START + replica_id)
        return ColdStart.decode(str(found)) if found else None

    def start_failed(self, token: str, replica_id: str, model: str, reason: str, fail_waiting: bool) -> int | None:
        """Record a failed start; how many waiting jobs failed with it (None if the caller no longer leads)."""
        failed = int(self.scripts("start_failed", token, replica_id, model, reason, int(fail_waiting)))
        return None if failed < 0 else failed

    def failed(self, token: str, replica_id: str, reason: str) -> bool:
        """Take a broken or vanished replica out of routing (FAILED)."""
        return bool(self.scripts("replica_failed", token, replica_id, reason))

    def drain_if_idle(self, token: str, replica_id: str, idle_for: float) -> bool:
        """Mark the replica DRAINING if it is READY, holds no slot and was unused for ``idle_for`` seconds."""
        return bool(self.scripts("drain", token, replica_id, idle_for))

    def reindex(self, token: str) -> bool:
        """Rebuild the index of READY replicas from their records (a new leader does, before it routes)."""
        return int(self.scripts("reindex", token)) >= 0

    def remove(self, token: str, replica: Replica) -> bool:
        """Forget a stopped (or vanished) replica."""
        return bool(self.scripts("remove_replica", token, replica.id, replica.model))

    def note(self, token: str, replica_id: str, lines: list[str]) -> bool:
        """Keep the last lines a STARTING replica printed (the model's detail shows them), cut to size."""
        return bool(self.scripts("note", token, replica_id, "\n".join(cut(lines, 4000))))

    def ask_logs(self, replica_id: str, tail: int, timeout: float) -> list[str] | None:
        """The last ``tail`` lines of a replica's log, as the leading autoscaler reads them (it alone reaches
        the backend); None if no autoscaler answered within ``timeout``."""
        reply = keys.log_reply(uuid.uuid4().hex)
        with self.redis.pipeline() as pipe:
            pipe.set(keys.log_waiting(reply), 1, ex=max(1, math.ceil(timeout)))
            pipe.rpush(keys.LOGS, json.dumps({"replica": replica_id, "tail": tail, "reply": reply}))
            pipe.ltrim(keys.LOGS, -100, -1)
            pipe.execute()
        found = self.redis.blpop([reply], timeout=timeout)
        return [str(line) for line in json.loads(found[1])] if found else None

    def answer_logs(self, reply: str, lines: list[str]) -> None:
        """Answer a request for log lines (at most a megabyte of them)."""
        with self.redis.pipeline() as pipe:
            pipe.rpush(reply, json.dumps(cut(lines, 1_000_000)))
            pipe.expire(reply, 30)
            pipe.execute()

    def still_asked(self, reply: str) -> bool:
        """Whether whoever asked for log lines still waits for them."""
        return bool(self.redis.exists(keys.log_waiting(reply)))

    def namespace(self) -> str:
        """The deployment's namespace: an id made by the first caller and kept in this Redis."""
        self.redis.set(keys.NAMESPACE, uuid.uuid4().hex[:12], nx=True)
        return str(self.redis.get(keys.NAMESPACE))

    def save_scaling(self, token: str, model: str, state: dict[str, str]) -> bool:
        """Keep the policy's state of a model (it survives a failover)."""
        return bool(self.scripts("save_scaling", token, model, *[v for item in state.items() for v in item]))

    def set_scale(self, model: str, configured: ScaleBounds, by: str, min_replicas: int | None = None,
                  max_replicas: int | None = None) -> ScaleSet | ScaleReply:
        """An operator's replica bounds of the model, merged with those in effect (its override, else
        ``configured``), and the leader woken to apply them: the bounds set and those before, or INVALID (min over
        max; nothing set). ``by``: who set them."""
        given = ["" if bound is None else str(bound) for bound in (min_replicas, max_replicas)]
        return replies.scale_set(self.scripts("set_scale", model, *given, configured.min_replicas,
                                              configured.max_replicas, by))

    def clear_scale(self, model: str) -> ScaleBounds | None:
        """Remove an operator's replica bounds of the model (the models file's apply again) and wake the leader:
        the bounds removed, if any."""
        with self.redis.pipeline() as pipe:
            pipe.hgetall(keys.scale_bounds(model))
            pipe.delete(keys.scale_bounds(model))
            pipe.rpush(keys.SCALE, model)
            pipe.ltrim(keys.SCALE, -100, -1)
            removed = pipe.execute()[0]
        return ScaleBounds.override(removed)

    def save_hosts(self, token: str, hosts: Iterable[Host], ttl: float = HOSTS_TTL) -> bool:
        """Keep the hosts as the leader sees them now, for ``ttl`` seconds; False if the caller no longer leads."""
        found = json.dumps([asdict(host) for host in hosts])
        return bool(self.scripts("save_hosts", token, found, max(1, math.ceil(ttl))))

    def hosts(self) -> SeenHosts | None:
        """The hosts as a leader last saw them; None if none saved them within their ttl."""
        fields = self.redis.hgetall(keys.HOSTS)
        return SeenHosts.from_hash(fields) if fields else None  # type: ignore[arg-type]


def ago(seconds: float | None) -> str:
    """Seconds before now as a script takes them ('' = not known)."""
    return "" if seconds is None else repr(max(0.0, seconds))


def cut(lines: list[str], limit: int, line_limit: int = 2000) -> list[str]:
    """The last lines that fit in ``limit`` characters, each cut to ``line_limit`` (characters, never bytes)."""
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        line = line[:line_limit]
        size += len(line) + 1
        if size > limit:
            break
        kept.append(line)
    return kept[::-1]
