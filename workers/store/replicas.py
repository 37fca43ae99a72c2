"""The replica registry: replicas by model, their slots, moving averages, start failures and scaling state.

Every write here is the leading autoscaler's and is fenced: its script checks the caller's lease token in the same
step, so an autoscaler that lost the lease mid-action (a slow Docker call, a paused process) changes nothing.
Workers take and give back slots through the job scripts (``workers.store.jobs``).
"""

import redis

from workers.store.records import ModelSnapshot, Replica
from workers.store.scripts import Scripts


class ReplicaRegistry:
    """Replicas and per-model scaling data in Redis."""

    def __init__(self, client: redis.Redis, scripts: Scripts, weight: float = 0.2) -> None:
        self.redis = client
        self.scripts = scripts
        self.weight = weight

    def snapshot(self, model: str, seeds: dict[str, float]) -> ModelSnapshot:
        """The model at one moment: load, replicas, averages (``seeds`` until measured), start failure, state."""
        return ModelSnapshot.decode(str(self.scripts("observe", model)), seeds)

    def list(self, model: str) -> list[Replica]:
        """The model's replicas, oldest first."""
        return list(self.snapshot(model, {}).replicas)

    def add(self, token: str, replica_id: str, model: str, backend: str) -> bool:
        """Record a replica about to start (STARTING); False if the caller no longer leads."""
        return bool(self.scripts("add_replica", token, replica_id, model, backend))

    def launched(self, token: str, replica_id: str, endpoint: str, handle: str) -> int:
        """Record where a started replica runs: 1; 0 if the caller no longer leads; -1 if the record is gone."""
        return int(self.scripts("launched", token, replica_id, endpoint, handle))

    def ready(self, token: str, replica_id: str, concurrency: int) -> tuple[float, int] | None:
        """Mark a STARTING replica READY: its cold start (s) and the parked jobs sent to it; None if refused."""
        found = self.scripts("ready", token, replica_id, concurrency, self.weight)
        return (float(found[0]), int(found[1])) if found else None

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

    def remove(self, token: str, replica: Replica) -> bool:
        """Forget a stopped (or vanished) replica."""
        return bool(self.scripts("remove_replica", token, replica.id, replica.model))

    def save_scaling(self, token: str, model: str, state: dict[str, str]) -> bool:
        """Keep the policy's state of a model (it survives a failover)."""
        return bool(self.scripts("save_scaling", token, model, *[v for item in state.items() for v in item]))
