"""Faults found by review: the parts of a streamed job with a webhook (the unit tier: fakeredis)."""

import fakeredis

from tests.unit.test_jobapi_review import streamed_run
from workers.job import Job, JobStatus, Outcome
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
