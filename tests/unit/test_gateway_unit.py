"""The gateway's submit on fakeredis: what a client is told when Redis fails after the job was recorded."""

from typing import Any

import fakeredis
import pytest
import redis

from gateway.service import Gateway
from workers.config import ModelConfig, Settings
from workers.job import JobStatus
from workers.store import Store

pytestmark = pytest.mark.unit
MODEL = ModelConfig(name="m", command=["x"])


def test_a_recorded_job_whose_wait_fails_is_accepted_not_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store.of(fakeredis.FakeRedis(decode_responses=True), retention=60)
    gateway = Gateway(Settings(), {"m": MODEL}, store)

    def redis_goes_away(*_: Any) -> None:
        raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(store.jobs, "wait", redis_goes_away)
    job = gateway.submit(MODEL, {"x": 1}, wait=5, owner="")
    assert job.status is JobStatus.QUEUED and store.jobs.get(job.id) is not None  # 202: it will run


def test_a_submit_that_never_reached_redis_is_refused_and_recorded_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway import errors

    store = Store.of(fakeredis.FakeRedis(decode_responses=True), retention=60)
    gateway = Gateway(Settings(), {"m": MODEL}, store)

    def refused(*_: Any) -> None:
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(store.jobs, "submit", refused)
    with pytest.raises(errors.Unavailable):
        gateway.submit(MODEL, {"x": 1}, wait=0, owner="")
    assert store.client.dbsize() == 0
