"""Faults found by review: the parts of a streamed job with a webhook, a stream whose retried job expires (the unit
tier: fakeredis)."""

import contextlib
import itertools
import json
from pathlib import Path

import fakeredis
import pytest
from flask.testing import FlaskClient

import gateway.app
from gateway.app import create_app
from gateway.service import Gateway
from tests.unit.test_jobapi_review import streamed_run
from workers.config import Settings
from workers.job import Job, JobError, JobStatus, Outcome
from workers.store import Store, keys

pytestmark = pytest.mark.unit


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FlaskClient, fakeredis.FakeRedis]:
    models = tmp_path / "models.toml"
    models.write_text('[models.m]\ncommand = ["x"]\n')
    fake = fakeredis.FakeRedis(decode_responses=True)
    monkeypatch.setattr(gateway.app, "gateway_client", lambda url, timeout, connections: fake)
    return create_app(Settings(models_file=models, max_wait=0.1)).test_client(), fake


def test_a_streamed_job_with_a_webhook_keeps_its_parts_no_longer_than_its_record() -> None:
    fake = fakeredis.FakeRedis(decode_responses=True)
    store = Store.of(fake, retention=60)
    token = store.leadership(30).hold() or ""
    store.replicas.add(token, "r1", "m", "fake")
    store.replicas.launched(token, "r1", "http://x", "h")
    store.replicas.ready(token, "r1", 1)
    store.webhooks.join()
    job = store.jobs.submit(store.jobs.new("m", {}, webhook="http://hook.invalid/"))
    assert isinstance(job, Job)
    streamed_run(store, job.id, "t1", ["a0", "a1"], Outcome(JobStatus.SUCCEEDED, output="[]"))
    [entry] = store.webhooks.read("d1", 10, 0.01)
    assert store.webhooks.attempted(entry, True, "", 1, 60) == "DELIVERED"
    assert 0 < fake.ttl(keys.job(job.id)) <= 60
    assert 0 < fake.ttl(keys.parts(job.id)) <= 60  # else the parts outlive the record for ever
    assert store.jobs.get(job.id) is not None and store.jobs.parts(job.id) == ['"a0"', '"a1"']


def test_a_redelivered_streamed_job_keeps_its_parts_with_its_record() -> None:
    fake = fakeredis.FakeRedis(decode_responses=True)
    store = Store.of(fake, retention=60)
    token = store.leadership(30).hold() or ""
    store.replicas.add(token, "r1", "m", "fake")
    store.replicas.launched(token, "r1", "http://x", "h")
    store.replicas.ready(token, "r1", 1)
    store.webhooks.join()
    job = store.jobs.submit(store.jobs.new("m", {}, webhook="http://hook.invalid/"))
    assert isinstance(job, Job)
    streamed_run(store, job.id, "t1", ["a0"], Outcome(JobStatus.SUCCEEDED, output="[]"))
    [entry] = store.webhooks.read("d1", 10, 0.01)
    assert store.webhooks.attempted(entry, False, "refused", 10, 0) == "FAILED"
    assert 0 < fake.ttl(keys.parts(job.id)) <= 60
    assert store.webhooks.redeliver(job.id, "") == "OK"
    assert fake.ttl(keys.job(job.id)) == -1 and fake.ttl(keys.parts(job.id)) == -1


def test_a_stream_whose_retried_job_expires_ends() -> None:
    fake = fakeredis.FakeRedis(decode_responses=True)
    store = Store.of(fake, retention=60)
    token = store.leadership(30).hold() or ""
    store.replicas.add(token, "r1", "m", "fake")
    store.replicas.launched(token, "r1", "http://x", "h")
    store.replicas.ready(token, "r1", 1)
    job = store.jobs.submit(store.jobs.new("m", {}))
    assert isinstance(job, Job)
    streamed_run(store, job.id, "t1", ["a0"], Outcome(JobStatus.FAILED, error=JobError("x", "y")))
    assert store.jobs.resubmit(job.id) == "OK"
    streamed_run(store, job.id, "t2", ["b0"], Outcome(JobStatus.SUCCEEDED, output="[]"))
    read = store.jobs.get(job.id)  # the stream reads the job just before its record expires
    assert read is not None and read.run == 1
    fake.delete(keys.job(job.id), keys.parts(job.id))
    gateway = object.__new__(Gateway)
    gateway.store = gateway.waits = store
    events = list(itertools.islice(gateway.events(read, -1, lambda j: "{}", contextlib.nullcontext(True)), 10))
    assert len(events) < 10 and "restart" not in events[-1]  # not restart after restart for ever


def test_a_stream_after_past_any_index_is_a_4xx_not_the_store_unavailable(
        client: tuple[FlaskClient, fakeredis.FakeRedis]) -> None:
    app, fake = client
    job_id = app.post("/v1/models/m/jobs", json={}).get_json()["id"]
    fake.rpush(keys.parts(job_id), json.dumps(0))
    answer = app.get(f"/v1/jobs/{job_id}/stream?after={10 ** 20}")
    assert 400 <= answer.status_code < 500 and answer.is_json and "error" in answer.get_json()
