"""The event log: scaling decisions and lifecycle events with their reasons, in a capped stream, each counted by
kind for ``/metrics``. An event's time is its stream entry's id: Redis time, the platform's one clock."""

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import cast

import redis

from workers.store import keys

MAX_EVENTS = 10_000


@dataclass(frozen=True)
class Event:
    """Something the autoscaler decided or saw. An event about a job names it and the key that owns it."""

    at: float
    model: str
    kind: str  # scale_up, scale_down, ready, start_failed, replica_failed, adopted, lost, stray_removed, job_* …
    replica: str = ""
    reason: str = ""
    job: str = ""
    owner: str = ""


class EventLog:
    """Append and read events."""

    def __init__(self, client: redis.Redis, clock: Callable[[], float] | None = None) -> None:
        self.redis = client
        self.clock = clock  # tests move time by hand (kept in the entry); None: the entry id's Redis time

    def record(self, model: str, kind: str, replica: str = "", reason: str = "", job: str = "",
               owner: str = "") -> None:
        """Append an event, counted by kind (keys.py: sm:counts, sm:platform_counts) in the same transaction; the
        stream keeps about the newest ``MAX_EVENTS``, the count is never reset."""
        event = Event(at=0.0, model=model, kind=kind, replica=replica, reason=reason, job=job, owner=owner)
        fields = {name: str(value) for name, value in asdict(event).items() if name != "at"}
        if self.clock is not None:
            fields["at"] = repr(self.clock())
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(keys.EVENTS, fields, maxlen=MAX_EVENTS, approximate=True)  # type: ignore[arg-type]
            pipe.hincrby(keys.COUNTS + model if model else keys.PLATFORM_COUNTS, f"event:{kind}", 1)
            pipe.execute()

    def recent(self, model: str | None = None, limit: int = 100, owner: str | None = None) -> list[Event]:
        """The newest events, newest first; of one model if given; with ``owner``, job events of that key only."""
        found: list[Event] = []
        last = "+"
        batch_size = max(limit, 100)
        while len(found) < limit:
            batch = cast(list[tuple[str, dict[str, str]]],
                         self.redis.xrevrange(keys.EVENTS, max=last, count=batch_size))
            for entry_id, fields in batch:
                at = float(fields["at"]) if "at" in fields else int(entry_id.split("-", 1)[0]) / 1000
                event = Event(at=at, model=fields["model"], kind=fields["kind"],
                              replica=fields.get("replica", ""), reason=fields.get("reason", ""),
                              job=fields.get("job", ""), owner=fields.get("owner", ""))
                if entry_id != last and (model is None or event.model == model) and \
                        (owner is None or not event.job or event.owner == owner):
                    found.append(event)
            if len(batch) < batch_size:
                break
            last = batch[-1][0]
        return found[:limit]
