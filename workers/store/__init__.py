"""The Redis protocol of the platform, in one package: the key schema (``keys``), the Lua scripts (``workers/lua``,
loaded by ``scripts``), and the operations on jobs, replicas, events, limits and the autoscalers' leadership.

Nothing outside this package names a Redis key or holds Lua.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from workers.store import keys, urls
from workers.store.events import EventLog
from workers.store.jobs import JobStore
from workers.store.leader import Leadership
from workers.store.limits import Limits
from workers.store.replicas import ReplicaRegistry
from workers.store.scripts import Scripts
from workers.store.webhooks import WebhookQueue


def connect(url: str, socket_timeout: float | None = 10.0) -> redis.Redis:
    """A decoding client of the Redis at ``url`` (Sentinels too: ``workers.store.urls``). It retries a command
    whose connection broke a few times within about a second (every script is safe to run twice); past that, the
    error is the caller's to handle."""
    return urls.client(url, decode_responses=True, encoding_errors="replace", socket_timeout=socket_timeout,
                       socket_connect_timeout=2, retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
                       health_check_interval=30)


@dataclass(frozen=True)
class LogRequest:
    """Somebody asks for the last ``tail`` lines of a replica's log, to be answered on ``reply``."""

    replica: str
    tail: int
    reply: str

    @classmethod
    def decode(cls, text: str) -> "LogRequest | None":
        """The request, or None if it cannot be read."""
        try:
            found = json.loads(text)
            return cls(str(found["replica"]), max(1, min(int(found["tail"]), 10_000)), str(found["reply"]))
        except (ValueError, TypeError, KeyError, OverflowError):
            return None


@dataclass(frozen=True)
class WakeUps:
    """What woke the leader: models that may need capacity, and requests of log lines."""

    models: set[str] = field(default_factory=set)
    logs: list[LogRequest] = field(default_factory=list)


@dataclass(frozen=True)
class Store:
    """Everything the platform keeps in Redis."""

    client: redis.Redis
    jobs: JobStore
    replicas: ReplicaRegistry
    events: EventLog
    limits: Limits
    webhooks: WebhookQueue
    clock: Callable[[], float] | None = None  # tests move time by hand; None: Redis TIME

    @classmethod
    def of(cls, client: redis.Redis, retention: float = 24 * 3600, clock: Callable[[], float] | None = None,
           replicas: int = 0, replicas_within: float = 1.0) -> "Store":
        """The store on a client; ``clock`` replaces Redis TIME (for tests). A submit is accepted once ``replicas``
        Redis replicas hold it too (within ``replicas_within`` seconds)."""
        scripts = Scripts(client, retention, clock)
        return cls(client=client, jobs=JobStore(client, scripts, replicas=replicas, replicas_within=replicas_within),
                   replicas=ReplicaRegistry(client, scripts),
                   events=EventLog(client, clock), limits=Limits(scripts), webhooks=WebhookQueue(client, scripts),
                   clock=clock)

    def now(self) -> float:
        """The platform's one clock: Redis time (or the test's)."""
        if self.clock is not None:
            return self.clock()
        seconds, micros = self.client.time()
        return float(seconds) + micros / 1e6

    def leadership(self, ttl: float) -> Leadership:
        """The autoscalers' leadership, held ``ttl`` seconds unless renewed."""
        return Leadership(self.client, ttl)

    def wake_ups(self, timeout: float) -> WakeUps:
        """Block up to ``timeout`` for submits and parked jobs naming models, and for requests of log lines (only
        the leader asks)."""
        first = self.client.blpop([keys.SCALE, keys.LOGS], timeout=timeout)
        if first is None:
            return WakeUps()
        with self.client.pipeline() as pipe:
            pipe.lrange(keys.SCALE, 0, -1)
            pipe.lrange(keys.LOGS, 0, -1)
            pipe.delete(keys.SCALE, keys.LOGS)
            models, requests, _ = pipe.execute()
        (models if first[0] == keys.SCALE else requests).append(first[1])
        return WakeUps(models=set(models), logs=[r for text in requests if (r := LogRequest.decode(text))])

    def platform_counts(self) -> dict[str, str]:
        """The counters for ``/metrics`` of no one model (keys.py: sm:platform_counts), as stored."""
        return cast(dict[str, str], self.client.hgetall(keys.PLATFORM_COUNTS))

    def ping(self) -> None:
        """Raise if Redis cannot be reached."""
        self.client.ping()


__all__ = ["EventLog", "JobStore", "Leadership", "Limits", "LogRequest", "ReplicaRegistry", "Store", "WakeUps",
           "WebhookQueue", "connect", "keys"]
