"""The event log: every scaling decision and replica lifecycle event, with its reason, in a capped stream."""

import time
from dataclasses import asdict, dataclass
from typing import cast

import redis

from workers import keys

MAX_EVENTS = 10_000


@dataclass(frozen=True)
class Event:
    """Something the autoscaler decided or saw."""

    at: float
    model: str
    kind: str  # scale_up, scale_down, ready, start_failed, replica_failed, adopted, lost, stray_removed
    replica: str = ""
    reason: str = ""


class EventLog:
    """Append and read events."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def record(self, model: str, kind: str, replica: str = "", reason: str = "") -> None:
        """Append an event; the stream keeps about the newest ``MAX_EVENTS``."""
        event = Event(at=time.time(), model=model, kind=kind, replica=replica, reason=reason)
        fields = {name: str(value) for name, value in asdict(event).items()}
        self.redis.xadd(keys.EVENTS, fields, maxlen=MAX_EVENTS, approximate=True)  # type: ignore[arg-type]

    def recent(self, model: str | None = None, limit: int = 100) -> list[Event]:
        """The newest events, newest first, optionally of one model."""
        found: list[Event] = []
        last = "+"
        while len(found) < limit:
            batch = cast(list[tuple[str, dict[str, str]]],
                         self.redis.xrevrange(keys.EVENTS, max=last, count=max(limit, 100)))
            for entry_id, fields in batch:
                if entry_id == last:
                    continue
                if model is None or fields["model"] == model:
                    found.append(Event(at=float(fields["at"]), model=fields["model"], kind=fields["kind"],
                                       replica=fields["replica"], reason=fields["reason"]))
            if len(batch) < max(limit, 100):
                break
            last = batch[-1][0]
        return found[:limit]
