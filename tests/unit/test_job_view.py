"""A job read to be shown (``jobs.get``, ``jobs.wait``) carries every field of its record but the input."""

import dataclasses
import json
from typing import Any

import fakeredis
import pytest

from workers.job import VIEWED, Job, JobError, JobStatus, Outcome
from workers.store import Store, keys
from workers.store.records import Started

pytestmark = pytest.mark.unit


class Reads(dict[str, str]):
    """A record that notes each field read from it."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(fields)
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return super().__getitem__(name)

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(name)
        return super().get(name, default)

    def __contains__(self, name: object) -> bool:
        self.read.add(str(name))
        return super().__contains__(name)


def test_viewed_names_every_field_a_job_is_decoded_from_but_its_input() -> None:
    record = Reads({"id": "j", "model": "m", "status": "QUEUED", "input": "{}", "created_at": "1.0",
                    "webhook": "https://example.com/h"})  # with a webhook: its fields are read too
    Job.from_hash(record)
    assert record.read - {"input"} == set(VIEWED)
    assert len(VIEWED) == len(set(VIEWED))


def test_get_and_wait_read_the_whole_job_but_its_input() -> None:
    store = Store.of(fakeredis.FakeRedis(decode_responses=True), retention=60)
    token = store.leadership(30).hold() or ""
    assert store.replicas.add(token, "r1", "m", "fake")
    assert store.replicas.launched(token, "r1", "http://r1", "r1")
    assert store.replicas.ready(token, "r1", concurrency=1) is not None
    job = store.jobs.submit(store.jobs.new("m", {"x": "a large input" * 1000}, "owner",
                                           webhook="https://example.com/h"))
    assert isinstance(job, Job)
    assert isinstance(store.jobs.start(job.id, "t", 30, "w", True), Started)
    assert store.jobs.finish(job.id, "t", Outcome(JobStatus.FAILED, error=JobError("boom", "it broke"))) == "OK"
    whole = Job.from_hash(store.client.hgetall(keys.job(job.id)))
    assert json.loads(whole.input or "") == {"x": "a large input" * 1000}
    assert whole.error == JobError("boom", "it broke")
    assert whole.webhook is not None and whole.replica == "r1" and whole.owner == "owner"
    for read in (store.jobs.get(job.id), store.jobs.wait(job.id, 1)):
        assert read == dataclasses.replace(whole, input=None)
    assert store.jobs.get("nope") is None and store.jobs.wait("nope", 0.01) is None
