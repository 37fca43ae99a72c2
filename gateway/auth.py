"""API keys (bearer tokens, accepted by their SHA-256 digest), the per-key rate limit, the cap on failed
authentications per client address, and the cap on requests blocked in ``?wait``."""

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator

from gateway import errors
from workers.store.limits import Limits

SUSPECT_FOR = 120.0  # seconds a client address is checked against the failure count after a failure here


def digest(api_key: str) -> str:
    """The SHA-256 hex digest under which a key is configured (``serverless-model hash-key``)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def parse_digests(configured: str) -> frozenset[str]:
    """The accepted digests from the comma-separated setting."""
    return frozenset(d.strip().lower() for d in configured.split(",") if d.strip())


def principal(authorization: str | None, accepted: frozenset[str]) -> str:
    """Who is calling: "" when auth is off, else a prefix of their key's digest; 401 if not accepted."""
    if not accepted:
        return ""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise errors.Unauthorized("send an API key as 'Authorization: Bearer <key>'")
    found = digest(token.strip())
    if found not in accepted:
        raise errors.Unauthorized("unknown API key")
    return found[:16]


class Guard:
    """Authenticates requests: a client address past ``failures_per_minute`` failed keys gets 429 for every key
    (right or wrong, so the answers tell a guesser nothing) until the minute passes. Only an address that failed
    recently in this process costs a Redis read."""

    def __init__(self, limits: Limits, accepted: frozenset[str], failures_per_minute: int, per_second: float) -> None:
        self.limits = limits
        self.accepted = accepted
        self.failures_per_minute = failures_per_minute
        self.per_second = per_second
        self.suspects: dict[str, float] = {}  # address → until when it is checked
        self.lock = threading.Lock()

    def check(self, authorization: str | None, source: str) -> str:
        """The caller's principal, within its rate limit; 401 or 429 otherwise."""
        if not self.accepted:
            return ""
        if self.suspect(source) and self.limits.auth_failures(source) >= self.failures_per_minute:
            raise errors.TooManyFailures("too many failed authentications from this address; wait a minute")
        try:
            who = principal(authorization, self.accepted)
        except errors.Unauthorized:
            with self.lock:
                now = time.monotonic()
                if len(self.suspects) > 10_000:
                    self.suspects = {k: until for k, until in self.suspects.items() if until > now}
                self.suspects[source] = now + SUSPECT_FOR
            self.limits.auth_failed(source)
            raise
        if self.per_second > 0 and self.limits.request(who) > self.per_second:
            raise errors.RateLimited(f"more than {self.per_second:g} requests per second with this key")
        return who

    def suspect(self, source: str) -> bool:
        """Whether the address failed here lately."""
        with self.lock:
            return self.suspects.get(source, 0.0) > time.monotonic()


class Waiters:
    """Requests of this process blocked in ``?wait``, overall and per key; past a cap a request does not wait."""

    def __init__(self, total: int, per_key: int) -> None:
        self.total = total
        self.per_key = per_key
        self.by_key: dict[str, int] = {}
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def admit(self, key: str) -> Iterator[bool]:
        """Whether the caller may wait now (key "": no API keys, only the overall cap); its place is held."""
        with self.lock:
            admitted = sum(self.by_key.values()) < self.total and (not key or self.by_key.get(key, 0) < self.per_key)
            if admitted:
                self.by_key[key] = self.by_key.get(key, 0) + 1
        try:
            yield admitted
        finally:
            if admitted:
                with self.lock:
                    self.by_key[key] -= 1
                    if not self.by_key[key]:
                        del self.by_key[key]
