"""The hook seam: hooks are no-ops by default, run in reverse order, and a failing one is logged and never raised
(the others still run); the runner calls ``after_finish`` once a job's end is committed, the autoscaler
``after_decision`` after each decision."""

import logging

import fakeredis
import pytest
import urllib3

from tests.unit.test_autoscaler import MODEL, FakeBackend, FakeProbe, Inline
from workers.config import ModelConfig
from workers.execution import runner
from workers.hooks import Hook, Hooks
from workers.job import Job, JobError, JobStatus, Outcome
from workers.scaling.autoscaler import Autoscaler
from workers.scaling.policy import Decision, Observation
from workers.store import Store

pytestmark = pytest.mark.unit


class Recording(Hook):
    """Notes what it was called with, in a list shared by every hook of a test."""

    def __init__(self, name: str, calls: list[tuple[str, str, object]]) -> None:
        self.name = name
        self.calls = calls

    def after_finish(self, job: Job, status: JobStatus, error: JobError | None, seconds: float) -> None:
        self.calls.append((self.name, job.id, status))

    def after_decision(self, model: str, decision: Decision, observation: Observation) -> None:
        self.calls.append((self.name, model, decision.start))


class Failing(Hook):
    """Raises from every hook."""

    def after_finish(self, job: Job, status: JobStatus, error: JobError | None, seconds: float) -> None:
        raise RuntimeError("finish hook broke")

    def after_decision(self, model: str, decision: Decision, observation: Observation) -> None:
        raise RuntimeError("decision hook broke")


JOB = Job(id="j1", model="m", status=JobStatus.RUNNING, input={}, created_at=1.0)
SEEN = Observation(taken_at=1.0, waiting=0, running=0, replicas=(), service_time=1.0, cold_start=1.0,
                   start_failed_at=None)


def test_a_bare_hook_does_nothing() -> None:
    Hook().after_finish(JOB, JobStatus.SUCCEEDED, None, 0.1)
    Hook().after_decision("m", Decision(), SEEN)


def test_a_failing_hook_is_logged_and_the_others_still_run_in_reverse_order(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[str, str, object]] = []
    hooks = Hooks([Recording("first", calls), Failing(), Recording("last", calls)])
    with caplog.at_level(logging.ERROR, logger="workers.hooks"):
        hooks.after_finish(JOB, JobStatus.SUCCEEDED, None, 0.1)
        hooks.after_decision("m", Decision(start=2), SEEN)
    assert calls == [("last", "j1", JobStatus.SUCCEEDED), ("first", "j1", JobStatus.SUCCEEDED),
                     ("last", "m", 2), ("first", "m", 2)]
    logged = [record for record in caplog.records if record.exc_info]
    assert [str(record.exc_info[1]) for record in logged if record.exc_info] == ["finish hook broke",
                                                                                  "decision hook broke"]
    assert "Failing" in logged[0].getMessage() and "j1" in logged[0].getMessage()


def test_the_runner_calls_after_finish_once_the_outcome_is_committed(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store.of(fakeredis.FakeRedis(decode_responses=True), retention=60)
    token = store.leadership(30).hold() or ""
    assert store.replicas.add(token, "r1", "m", "fake")
    assert store.replicas.launched(token, "r1", "http://127.0.0.1:1", "r1")
    assert store.replicas.ready(token, "r1", concurrency=1) is not None
    calls: list[tuple[str, str, object]] = []
    committed: list[JobStatus | None] = []

    def answer(ctx: runner.WorkerContext, model: ModelConfig, started: object, token: str = "") -> Outcome:
        assert calls == []  # not before the commit
        return Outcome(JobStatus.SUCCEEDED, output='{"y": 1}')

    real_finish = store.jobs.finish

    def finish(*args: object, **kwargs: object) -> object:
        found = real_finish(*args, **kwargs)  # type: ignore[arg-type]
        job = store.jobs.get(str(args[0]))
        committed.append(job.status if job else None)
        assert calls == []  # the hook comes after the commit
        return found

    monkeypatch.setattr(runner, "call", answer)
    monkeypatch.setattr(store.jobs, "finish", finish)
    ctx = runner.WorkerContext(models={"m": MODEL}, store=store, http=urllib3.PoolManager(),
                               leases=runner.LeaseKeeper(store, 5.0, renewing=False),
                               hooks=Hooks([Failing(), Recording("metrics", calls)]))
    job = store.jobs.submit(store.jobs.new("m", {"x": 1}))
    assert isinstance(job, Job)
    summary = runner.run_job(ctx, job.id, "m")
    assert summary.status is JobStatus.SUCCEEDED and committed == [JobStatus.SUCCEEDED]
    assert calls == [("metrics", job.id, JobStatus.SUCCEEDED)]
    assert runner.run_job(ctx, job.id, "m").status is JobStatus.SUCCEEDED  # a duplicate delivery commits nothing
    assert calls == [("metrics", job.id, JobStatus.SUCCEEDED)]


def test_the_autoscaler_calls_after_decision_for_each_decision() -> None:
    store = Store.of(fakeredis.FakeRedis(decode_responses=True), retention=60)
    calls: list[tuple[str, str, object]] = []
    scaler = Autoscaler({"m": MODEL}, store, FakeBackend(), FakeProbe(), Inline(), sweep_every=0,
                        hooks=Hooks([Failing(), Recording("metrics", calls)]))
    token = store.leadership(30).hold() or ""
    store.jobs.submit(store.jobs.new("m", {"x": 1}))
    scaler.lead(token, full=True)
    assert calls == [("metrics", "m", 1)]  # the decision to start one replica, despite the failing hook
    assert len(store.replicas.of("m")) == 1
