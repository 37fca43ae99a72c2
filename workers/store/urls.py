"""Where Redis is: a ``redis://`` (or ``rediss://``, ``unix://``) URL, or Sentinels that name the primary.

``sentinel://[:password@]host:port[,host:port…][/db]?master=name`` names the Sentinels and the primary's name
among them; the password is the primary's (and its replicas'). Every client of the platform (the store, the lease,
Celery's broker) follows the primary the Sentinels name, through a failover.
"""

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

SCHEME = "sentinel"
ASKING = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}  # a Sentinel that does not answer at once is
# skipped for the next (redis-py tries each in turn): a frozen one must not hold every new connection


@dataclass(frozen=True)
class Sentinels:
    """What a ``sentinel://`` URL says."""

    addresses: tuple[tuple[str, int], ...]
    master: str
    password: str = ""
    db: int = 0
    username: str = ""  # an ACL user ("" = default)

    @classmethod
    def parse(cls, url: str) -> "Sentinels | None":
        """The Sentinels of a ``sentinel://`` URL; None for any other URL; ValueError if it is malformed."""
        if not url.startswith(f"{SCHEME}://"):
            return None
        rest = url[len(SCHEME) + 3:]
        credentials, _, rest = rest.rpartition("@")
        split = urlsplit(f"{SCHEME}://{rest}")
        addresses = []
        for address in split.netloc.split(","):
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"a Sentinel address is host:port, got {address!r}")
            addresses.append((host.strip("[]"), int(port)))
        master = parse_qs(split.query).get("master", [""])[0]
        if not master:
            raise ValueError("a sentinel:// URL needs ?master=<the name the Sentinels monitor>")
        db = split.path.strip("/") or "0"
        if not db.isdigit():
            raise ValueError(f"the database is a number, got {db!r}")
        user, _, password = credentials.partition(":")
        return cls(tuple(addresses), master, unquote(password), int(db), unquote(user))

    def celery_broker(self) -> tuple[str, dict[str, Any]]:
        """Celery's broker URL for these Sentinels, and the transport options it needs."""
        auth = f"{quote(self.username, safe='')}:{quote(self.password, safe='')}@" if self.password else ""
        where = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in self.addresses]
        return ";".join(f"{SCHEME}://{auth}{address}/{self.db}" for address in where), \
            {"master_name": self.master, "sentinel_kwargs": ASKING}


def client(url: str, **options: Any) -> redis.Redis:
    """A client of the Redis ``url`` names (the primary the Sentinels name, for a ``sentinel://`` URL)."""
    sentinels = Sentinels.parse(url)
    if sentinels is None:
        return redis.Redis.from_url(url, **options)
    found = Sentinel(list(sentinels.addresses),  # type: ignore[no-untyped-call, unused-ignore]
                     sentinel_kwargs={**ASKING, "retry": Retry(NoBackoff(), 0)})
    primary: redis.Redis = found.master_for(  # type: ignore[no-untyped-call, unused-ignore]
        sentinels.master, password=sentinels.password or None, username=sentinels.username or None,
        db=sentinels.db, **options)
    return primary

