"""Rate limits in Redis: requests per API key per second, failed authentications per client per minute, both
in windows of the platform's one clock (Redis time)."""

import redis

from workers.store.scripts import Scripts


class Limits:
    """Counters that expire with their window. At Redis's memory bound nothing is counted (a count is a write it
    refuses): requests pass their limits while the store is full, rather than every one of them, reads included,
    being refused."""

    def __init__(self, scripts: Scripts) -> None:
        self.scripts = scripts

    def request(self, principal: str) -> int:
        """Count a request of ``principal`` in this second; how many it made in it."""
        return self.count("rate", principal, 1, 2)

    def auth_failed(self, source: str) -> int:
        """Count a failed authentication from ``source``; how many it made this minute."""
        return self.count("auth_failures", source, 60, 120)

    def count(self, what: str, who: str, window: int, ttl: int) -> int:
        """One more of ``what`` by ``who`` in this window of ``window`` seconds (0 while the store is full)."""
        try:
            return int(self.scripts("count", what, who, window, ttl))
        except redis.OutOfMemoryError:
            return 0
