"""Rate limits in Redis: requests per API key per second, failed authentications per client per minute, both
in windows of the platform's one clock (Redis time)."""

from workers.store.scripts import Scripts


class Limits:
    """Counters that expire with their window."""

    def __init__(self, scripts: Scripts) -> None:
        self.scripts = scripts

    def request(self, principal: str) -> int:
        """Count a request of ``principal`` in this second; how many it made in it."""
        return int(self.scripts("count", "rate", principal, 1, 2))

    def auth_failed(self, source: str) -> int:
        """Count a failed authentication from ``source``; how many it made this minute."""
        return int(self.scripts("count", "auth_failures", source, 60, 120))
