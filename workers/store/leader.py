"""Leadership among autoscalers: a redis-py Lock whose token fences every leader write."""

import contextlib

import redis
from redis.exceptions import LockError

from workers.store import keys


class Lease:
    """The autoscaler lease. ``hold()`` takes it when free or renews it when ours; its token goes into every
    leader write, and the scripts refuse a write whose token is no longer the lock's."""

    def __init__(self, client: redis.Redis, ttl: float) -> None:
        self.ttl = ttl
        self.lock = client.lock(keys.LEADER, timeout=ttl, blocking=False, thread_local=False)

    def hold(self) -> str | None:
        """The lease's token if we hold it now (taken or renewed), else None."""
        if self.lock.local.token is not None:
            try:
                self.lock.reacquire()
                return self.token
            except LockError:
                self.lock.local.token = None
        return self.token if self.lock.acquire(blocking=False) else None

    @property
    def token(self) -> str | None:
        """The token we hold the lease with, if any."""
        token = self.lock.local.token
        return token.decode() if isinstance(token, bytes) else token

    def release(self) -> None:
        """Give the lease up if ours."""
        with contextlib.suppress(LockError):
            self.lock.release()
