"""Webhook deliveries in Redis: the stream of ended jobs whose webhook is to be delivered (written by the script
that ends a job, read by the consumer group of the deliverers), the retry set, and each owner's given-up
deliveries (``keys``). Every change of a delivery is one script, so an entry is never lost between two of them."""

from dataclasses import dataclass
from typing import Any

import redis

from workers.store import keys, replies
from workers.store.records import FailedDelivery
from workers.store.replies import AttemptReply, RedeliverReply
from workers.store.scripts import Scripts


@dataclass(frozen=True)
class Entry:
    """A job whose webhook a deliverer is to deliver now: the stream entry and the job's id."""

    entry_id: str
    job_id: str


class WebhookQueue:
    """The deliveries of job webhooks, at least once: an entry read but never recorded (its deliverer died) is
    claimed by another deliverer once it has been idle long enough."""

    def __init__(self, client: redis.Redis, scripts: Scripts) -> None:
        self.redis = client
        self.scripts = scripts
        self.cursor = "0-0"  # where the next claim of idle entries goes on

    def join(self) -> None:
        """Make the deliverers' consumer group (and the stream) unless they exist."""
        try:
            self.redis.xgroup_create(keys.WEBHOOKS, keys.DELIVERERS, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read(self, consumer: str, count: int, block: float) -> list[Entry]:
        """New entries for ``consumer``, waiting up to ``block`` seconds for one."""
        try:
            found: Any = self.redis.xreadgroup(keys.DELIVERERS, consumer, {keys.WEBHOOKS: ">"}, count=count,
                                          block=max(1, int(block * 1000)))
        except redis.ResponseError as exc:  # the group is gone (a Redis that lost its data): make it again
            if "NOGROUP" not in str(exc):
                raise
            self.join()
            return []
        return [entry for _, messages in found or [] for entry in entries(messages)]

    def claim(self, consumer: str, idle: float, count: int = 100) -> list[Entry]:
        """Entries read by any deliverer over ``idle`` seconds ago and never recorded: now ``consumer``'s."""
        try:
            found: Any = self.redis.xautoclaim(keys.WEBHOOKS, keys.DELIVERERS, consumer, int(idle * 1000),
                                               self.cursor, count=count)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.join()
            return []
        self.cursor = str(found[0])
        return entries(found[1])

    def forget(self, idle: float) -> int:
        """Forget the consumers idle over ``idle`` seconds that hold no entry (of gateway processes gone); how
        many."""
        try:
            return int(self.scripts("webhook_forget", keys.DELIVERERS, int(idle * 1000)))
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc) and "no such key" not in str(exc).lower():
                raise
            return 0

    def due(self, limit: int = 100) -> int:
        """Move the deliveries whose next attempt is due back onto the stream; how many."""
        return int(self.scripts("webhook_due", limit))

    def attempted(self, entry: Entry, delivered: bool, error: str, delay: float, retry_for: float,
                  ended: float | None = None) -> AttemptReply:
        """Record an attempt at the end of the job at ``ended`` (its finished_at) and take its entry off the
        stream: DELIVERED; RETRY (in ``delay`` seconds); FAILED (given up: the next attempt would come past
        ``retry_for`` seconds from the start of the delivery); or DROPPED (the job is gone, no longer waits for a
        delivery, or ended again since: that end is delivered by its own entry)."""
        return replies.word_of(self.scripts("webhook_attempt", entry.entry_id, entry.job_id, int(delivered),
                                            error[:1000], delay, retry_for, "" if ended is None else repr(ended)),
                               AttemptReply)

    def failed(self, owner: str, limit: int = 100) -> list[FailedDelivery]:
        """The owner's given-up deliveries, newest first."""
        return replies.failed_deliveries(self.scripts("webhook_failed", owner, limit))

    def redeliver(self, job_id: str, owner: str) -> RedeliverReply:
        """Deliver one of the owner's given-up deliveries again, with a new window of retries: OK or MISSING."""
        return replies.word_of(self.scripts("webhook_redeliver", job_id, owner), RedeliverReply)

    def backlog(self) -> tuple[int, int]:
        """Deliveries on the stream, and waiting for a retry."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(keys.WEBHOOKS)
            pipe.zcard(keys.WEBHOOK_RETRY)
            stream, retry = pipe.execute()
        return int(stream), int(retry)


def entries(messages: Any) -> list[Entry]:
    """Stream messages as entries (one deleted meanwhile, with no fields, is left out)."""
    return [Entry(str(entry_id), str(fields["job"])) for entry_id, fields in messages or [] if fields and
            "job" in fields]
