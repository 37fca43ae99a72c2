"""API keys (bearer tokens, accepted by their SHA-256 digest) and the per-key rate limit."""

import hashlib
import time

import redis

from gateway import errors
from workers import keys


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


def check_rate(client: redis.Redis, who: str, per_second: float) -> None:
    """429 once ``who`` has made more than ``per_second`` requests in the current second."""
    if per_second <= 0 or not who:
        return
    key = keys.rate(who, int(time.time()))
    with client.pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, 2)
        count = int(pipe.execute()[0])
    if count > per_second:
        raise errors.RateLimited(f"more than {per_second:g} requests per second with this key")
