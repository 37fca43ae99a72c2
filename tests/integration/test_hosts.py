"""The hosts on a real Redis: only the leader saves them, and they expire."""

import pytest
import redis

from workers.store import Store, keys
from workers.store.records import Host

pytestmark = pytest.mark.integration


def test_only_the_leader_saves_the_hosts_and_they_expire(store: Store, client: "redis.Redis") -> None:
    host = Host("node-a", "ready", "10.0.0.1", 8.0, 32 << 30, ("GPU-aaa", "GPU-bbb"), "manager", "active")
    assert not store.replicas.save_hosts("not-the-leader", [host])
    assert store.replicas.hosts() is None
    assert store.replicas.save_hosts(store.lease(30).hold() or "", [host], ttl=30)
    seen = store.replicas.hosts()
    assert seen is not None and seen.hosts == (host,) and abs(seen.at - store.now()) < 5
    assert 0 < client.ttl(keys.HOSTS) <= 30
