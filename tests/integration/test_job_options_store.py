"""The job options in the scripts, on a real Redis: idempotency keys (submit.lua, withdraw.lua)."""

import pytest
import redis

from workers.job import Job, JobStatus
from workers.store import Store, keys
from workers.store.jobs import Existing, Idempotency, Refusal

pytestmark = pytest.mark.integration


def once(key: str, request: object) -> Idempotency:
    """An idempotency key for ``request``."""
    return Idempotency(key, Idempotency.digest_of(request), 60)


def test_one_key_makes_one_job_per_owner_and_another_request_is_a_conflict(store: Store, client: "redis.Redis") -> None:
    first = store.jobs.submit(store.jobs.new("m", {"x": 1}, "a"), idempotency=once("k", {"x": 1}))
    assert isinstance(first, Job)
    messages = client.llen(keys.celery_queue("m"))
    again = store.jobs.submit(store.jobs.new("m", {"x": 1}, "a"), idempotency=once("k", {"x": 1}))
    assert isinstance(again, Existing) and again.job.id == first.id and again.job.status is JobStatus.QUEUED
    assert client.llen(keys.celery_queue("m")) == messages  # the job was not sent again
    other = store.jobs.submit(store.jobs.new("m", {"x": 2}, "a"), idempotency=once("k", {"x": 2}))
    assert other is Refusal.CONFLICT
    theirs = store.jobs.submit(store.jobs.new("m", {"x": 2}, "b"), idempotency=once("k", {"x": 2}))
    assert isinstance(theirs, Job) and theirs.id != first.id  # another owner's key is another key
    assert store.replicas.snapshot("m", {}).waiting == 2
    assert 0 < client.ttl(keys.idempotency("a", "k")) <= 60


def test_a_key_whose_job_is_gone_or_withdrawn_makes_a_new_job(store: Store, client: "redis.Redis") -> None:
    job = store.jobs.new("m", {"x": 1})
    assert isinstance(store.jobs.submit(job, idempotency=once("k", {"x": 1})), Job)
    assert store.jobs.withdraw(job) == "WITHDRAWN"  # a submit whose answer was lost, taken back: its key goes too
    assert not client.exists(keys.idempotency("", "k"))
    made = store.jobs.submit(store.jobs.new("m", {"x": 1}), idempotency=once("k", {"x": 1}))
    assert isinstance(made, Job)
    client.delete(keys.job(made.id))  # expired after its retention
    later = store.jobs.submit(store.jobs.new("m", {"x": 1}), idempotency=once("k", {"x": 1}))
    assert isinstance(later, Job) and later.id != made.id


def test_a_submit_run_again_after_its_answer_was_lost_is_still_its_own_job(store: Store) -> None:
    job = store.jobs.new("m", {"x": 1})
    made = store.jobs.submit(job, idempotency=once("k", {"x": 1}))
    assert isinstance(made, Job)
    assert store.jobs.submit(job, idempotency=once("k", {"x": 1})) == made  # the same id: not a replay
