"""The broker's transport on a real Redis: kombu's, publishing through one client per channel."""

import base64
import json

import pytest
import redis
from kombu import Connection, Exchange

from workers.config import Settings
from workers.execution import broker
from workers.execution.celery_app import create_celery

pytestmark = pytest.mark.integration


def test_fanout_messages_arrive_and_share_one_client(redis_url: str) -> None:
    exchange = Exchange("sm-test-fanout", type="fanout", durable=False, auto_delete=True)
    listener = redis.Redis.from_url(redis_url).pubsub()
    listener.psubscribe("*sm-test-fanout*")  # kombu's topic of the exchange
    assert listener.get_message(timeout=5)["type"] == "psubscribe"
    with Connection(redis_url, transport=broker.transport_for(redis_url)) as connection:
        channel = connection.default_channel
        assert isinstance(channel, broker.Channel)
        producer = connection.Producer(channel)
        used = []
        for i in range(3):
            producer.publish({"i": i}, exchange=exchange, declare=[exchange])
            with channel.conn_or_acquire() as client:
                used.append(client)
        bodies = [json.loads(listener.get_message(timeout=5)["data"])["body"] for _ in range(3)]
        assert [json.loads(base64.b64decode(body)) for body in bodies] == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert all(client is used[0] for client in used)  # kombu's own channel makes one per call
        given = redis.Redis.from_url(redis_url)
        with channel.conn_or_acquire(given) as client:
            assert client is given
    listener.close()


def test_the_worker_app_uses_these_transports(redis_url: str) -> None:
    app = create_celery(Settings(redis_url=redis_url))
    with app.connection_for_write() as connection:
        assert isinstance(connection.default_channel, broker.Channel)
    assert broker.transport_for("sentinel://127.0.0.1:26379/0").endswith(":SentinelTransport")  # type: ignore[union-attr]
    tls = create_celery(Settings(redis_url="rediss://127.0.0.1:6380/0"))  # kombu's own: it turns TLS on
    assert tls.conf.broker_transport is None
    assert tls.connection_for_write().ssl
    assert broker.SentinelChannel.__mro__[1:3] == (broker.Channel, broker.kombu_redis.SentinelChannel)
