"""kombu's Redis transports, with one publishing client per channel.

kombu makes a new redis-py client (and its table of response callbacks) for every command it sends without one: each
batch of task events the worker sends Flower, each revoke it broadcasts. These channels make that client once and
keep it while their connection pool lives; its connections still come from the pool, as kombu's do.
"""

import contextlib
from collections.abc import Iterator

import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, publishing through one client over the channel's pool."""

    _publisher: tuple[redis.ConnectionPool, redis.Redis] | None = None

    @contextlib.contextmanager
    def conn_or_acquire(self, client: redis.Redis | None = None) -> Iterator[redis.Redis]:
        """``client`` if given, else the channel's publishing client (made again if its pool was replaced)."""
        if client:
            yield client
            return
        pool = self.pool
        if self._publisher is None or self._publisher[0] is not pool:
            self._publisher = (pool, self._create_client())  # type: ignore[no-untyped-call]
        yield self._publisher[1]


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel, publishing through one client."""


class Transport(kombu_redis.Transport):
    """``redis://`` with ``Channel``."""

    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    """``sentinel://`` with ``SentinelChannel``."""

    Channel = SentinelChannel


def transport_for(url: str) -> str | None:
    """The transport class for a broker URL, as Celery's ``broker_transport`` names it; None (kombu's own) for
    ``rediss://``, whose TLS kombu turns on only under its own transport's name. kombu goes back to its own
    transports after it switches to another of several Sentinels (a failover): that costs a client per
    publish again, nothing more."""
    if url.startswith("sentinel://"):
        return f"{__name__}:SentinelTransport"
    return f"{__name__}:Transport" if url.startswith("redis://") else None


__all__ = ["Channel", "SentinelChannel", "SentinelTransport", "Transport", "transport_for"]
