"""Rate limits in Redis: requests per API key per second, failed authentications per client per minute."""

import time

import redis

from workers.store import keys


class Limits:
    """Counters that expire with their window. At Redis's memory bound nothing is counted (a count is a write it
    refuses): requests pass their limits while the store is full, rather than every one of them, reads included,
    being refused."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def request(self, principal: str) -> int:
        """Count a request of ``principal`` in this second; how many it made in it."""
        return self._count(keys.rate(principal, int(time.time())), 2)

    def auth_failed(self, source: str) -> int:
        """Count a failed authentication from ``source``; how many it made this minute."""
        return self._count(keys.auth_failures(source, int(time.time() // 60)), 120)

    def _count(self, key: str, ttl: int) -> int:
        try:
            with self.redis.pipeline() as pipe:
                pipe.incr(key)
                pipe.expire(key, ttl)
                return int(pipe.execute()[0])
        except redis.OutOfMemoryError:
            return 0
