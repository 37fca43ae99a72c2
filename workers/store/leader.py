"""Leadership among autoscalers: a redis-py Lock whose token fences every leader write (a job's claim has a
lease of its own: ``workers.store.jobs``)."""

import contextlib

import redis
from redis.exceptions import LockError

from workers.store import keys


class Leadership:
    """The autoscalers' leadership. ``hold()`` takes it when free or renews it when ours; its token goes into every
    leader write, and the scripts refuse a write whose token is no longer the lock's."""

    def __init__(self, client: redis.Redis, ttl: float) -> None:
        self.ttl = ttl
        self.lock = client.lock(keys.LEADER, timeout=ttl, blocking=False, thread_local=False)

    def hold(self) -> str | None:
        """The token if we lead now (taken or renewed), else None."""
        if self.lock.local.token is not None:
            try:
                self.lock.reacquire()
                return self.token
            except LockError:
                self.lock.local.token = None
        return self.token if self.lock.acquire(blocking=False) else None

    @property
    def token(self) -> str | None:
        """The token we lead with, if any."""
        token = self.lock.local.token
        return token.decode() if isinstance(token, bytes) else token

    def release(self) -> None:
        """Give the leadership up if ours."""
        with contextlib.suppress(LockError):
            self.lock.release()
