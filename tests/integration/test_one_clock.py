"""Every time the platform keeps is Redis time: events and the rate-limit windows too, whatever a host's clock
says (a host's clock is put off by an hour here)."""

import time
from unittest import mock

import pytest
import redis

from workers.store import Store, keys

pytestmark = pytest.mark.integration


def redis_now(client: "redis.Redis") -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


def test_events_and_rate_windows_are_on_the_redis_clock_not_the_hosts(store: Store, client: "redis.Redis") -> None:
    skewed = time.time() + 3600
    with mock.patch("time.time", return_value=skewed):
        store.events.record("m", "scale_up", reason="one queued job")
        assert store.limits.request("key", 5) == 1 and store.limits.request("key", 5) in (1, 2)  # (2: the same second)
        assert store.limits.auth_failed("10.0.0.1", 20) == 1
    [event] = store.events.recent("m")
    assert abs(event.at - redis_now(client)) < 5, event
    second, minute = int(redis_now(client)), int(redis_now(client) // 60)
    assert {k for k in client.scan_iter(f"{keys.RATE}*")} <= {keys.rate("key", s) for s in (second - 1, second)}
    assert {k for k in client.scan_iter(f"{keys.AUTH_FAILURES}*")} <= {
        keys.auth_failures("10.0.0.1", m) for m in (minute - 1, minute)}
    assert all(0 < client.ttl(k) <= 120 for k in client.scan_iter("sm:*:*")
               if not k.startswith(keys.COUNTS))  # (the counters of /metrics are kept)
