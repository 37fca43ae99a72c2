"""Faults found by review: the parts of a streamed job with a webhook, a stream whose retried job expires (the unit
tier: fakeredis)."""

import contextlib
import itertools

import fakeredis

from gateway.service import Gateway
from tests.unit.test_jobapi_review import streamed_run
from workers.job import Job, JobError, JobStatus, Outcome
from workers.store import Store, keys


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
