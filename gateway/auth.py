"""API keys (bearer tokens, accepted by their SHA-256 digest), the rate limit (per key, or per client address
without keys), the cap on failed authentications per client address, and the cap on requests blocked in
``?wait``."""

import contextlib
import hashlib
import threading
from collections.abc import Iterator

from gateway import errors
from workers.store.limits import Limits

ADDRESS = "from:"  # before a client address where a principal is expected (a principal is hex)


def digest(api_key: str) -> str:
    """The SHA-256 hex digest under which a key is configured (``serverless-model hash-key``)."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def parse_digests(configured: str) -> frozenset[str]:
    """The accepted digests from the comma-separated setting."""
    return frozenset(d.strip().lower() for d in configured.split(",") if d.strip())


def principal(authorization: str | None, accepted: frozenset[str], bare: bool = False) -> str:
    """Who is calling: "" when auth is off, else a prefix of their key's digest; 401 if not accepted. ``bare``:
    the key alone (``Authorization: <key>``, as RunPod's API takes it) is accepted too."""
    if not accepted:
        return ""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if bare and scheme and not token:
        scheme, token = "bearer", scheme
    if scheme.lower() != "bearer" or not token:
        raise errors.Unauthorized("send an API key as 'Authorization: Bearer <key>'")
    found = digest(token.strip())
    if found not in accepted:
        raise errors.Unauthorized("unknown API key")
    return found[:16]


class Guard:
    """Authenticates requests. A valid key is always served (within its rate limit): failures never count
    against it. A wrong or missing key is 401 until its client address has failed ``failures_per_minute`` times
    in the minute, then 429. Without API keys, the rate limit applies per client address. Only a failure costs a
    Redis write; a valid key costs none beyond its rate limit. The metrics token (``metrics``, digests as keys')
    is a key of ``/metrics`` alone: elsewhere it is an unknown key; set without API keys, ``/metrics`` wants it."""

    def __init__(self, limits: Limits, accepted: frozenset[str], failures_per_minute: int, per_second: float,
                 metrics: frozenset[str] = frozenset()) -> None:
        self.limits = limits
        self.accepted = accepted
        self.failures_per_minute = failures_per_minute
        self.per_second = per_second
        self.metrics = metrics

    def check(self, authorization: str | None, source: str, bare: bool = False, metrics: bool = False) -> str:
        """The caller's principal ("" without API keys), within its rate limit; 401 or 429 otherwise (``bare``:
        see ``principal``; ``metrics``: the route is ``/metrics``, which the metrics token opens too)."""
        accepted = self.accepted | self.metrics if metrics else self.accepted
        if not accepted:
            self.limit(ADDRESS + source, "from this address")
            return ""
        try:
            who = principal(authorization, accepted, bare)
        except errors.Unauthorized:
            if self.limits.auth_failed(source, self.failures_per_minute) > self.failures_per_minute:
                raise errors.TooManyFailures("too many failed authentications from this address; wait a "
                                             "minute (a valid key is still served)") from None
            raise
        self.limit(who, "with this key")
        return who

    def limit(self, who: str, whose: str) -> None:
        """RateLimited if ``who`` made more than ``per_second`` requests in this second."""
        if self.per_second > 0 and self.limits.request(who, self.per_second) > self.per_second:
            raise errors.RateLimited(f"more than {self.per_second:g} requests per second {whose}")


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
