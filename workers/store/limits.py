"""Rate limits in Redis: requests per API key per second, failed authentications per client per minute, both
in windows of the platform's one clock (Redis time). The script that counts also counts what the count refuses
(keys.py: sm:platform_counts), in the same step: a refusal costs no second Redis call."""

import redis

from workers.store.scripts import Scripts


class Limits:
    """Counters that expire with their window. At Redis's memory bound nothing is counted (a count is a write it
    refuses): requests pass their limits while the store is full, rather than every one of them, reads included,
    being refused."""

    def __init__(self, scripts: Scripts) -> None:
        self.scripts = scripts

    def request(self, principal: str, limit: float) -> int:
        """Count a request of ``principal`` in this second (refused rate_limited past ``limit``); how many it made
        in it."""
        return self.count("rate", principal, 1, 2, limit, "", "rate_limited")

    def auth_failed(self, source: str, limit: int) -> int:
        """Count a failed authentication from ``source`` (refused unauthorized, past ``limit`` in the minute
        too_many_failed_authentications); how many it made this minute."""
        return self.count("auth_failures", source, 60, 120, limit, "unauthorized", "too_many_failed_authentications")

    def count(self, what: str, who: str, window: int, ttl: int, limit: float, within: str, over: str) -> int:
        """One more of ``what`` by ``who`` in this window of ``window`` seconds (0 while the store is full), counted
        as refused ``within`` (if any) up to ``limit``, ``over`` past it."""
        try:
            return int(self.scripts("count", what, who, window, ttl, repr(float(limit)), within, over))
        except redis.OutOfMemoryError:
            return 0
