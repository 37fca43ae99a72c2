"""What Flower makes of a job's deliveries, and a revoked task's job, without processes (issue 13: holes 11, 19)."""

import itertools
from typing import Any

import fakeredis
import pytest
from celery.events.state import State
from celery.exceptions import Ignore, Retry
from click.testing import CliRunner

from workers import cli
from workers.execution.celery_app import JobFailed, cancel_revoked, report
from workers.execution.runner import Summary
from workers.job import JobError, JobStatus
from workers.store import Store
from workers.store.envelope import TASK_NAME
from workers.store.replies import StartReply, word

BAD = JobError("bad_input", "expected 4 numbers")
CLOCK = itertools.count(1)


def fake_store() -> Store:
    """The store on fakeredis."""
    return Store.of(fakeredis.FakeRedis(decode_responses=True), retention=60)


def ending(summary: Summary, store: Store) -> tuple[str, dict[str, Any]] | None:
    """The event a worker sends once the task returns or raises (celery/worker/request.py): succeeded for a
    return, retried for a Retry, none for an Ignore (it only acknowledges), failed for any other exception."""
    try:
        return "task-succeeded", {"result": repr(report(summary, store))}
    except Retry as retry:
        return "task-retried", {"exception": repr(retry.exc)}
    except Ignore:
        return None
    except Exception as exc:
        return "task-failed", {"exception": repr(exc)}


def flower_state(job_id: str, deliveries: list[Summary], store: Store) -> dict[str, Any]:
    """The task as Celery's event state (Flower's) holds it after every delivery's events, in order."""
    state = State()
    for summary in deliveries:
        ended = ending(summary, store)
        events = [("task-received", {"name": TASK_NAME, "args": f"['{job_id}', 'm']"}), ("task-started", {})]
        for kind, fields in events + ([ended] if ended else []):
            state.event({"type": kind, "uuid": job_id, "hostname": "worker@h", "timestamp": float(next(CLOCK)),
                         "local_received": float(next(CLOCK)), "clock": next(CLOCK), **fields})
    task = state.tasks[job_id]
    return {"state": task.state, "retried": task.retried, "exception": task.exception, "result": task.result}


@pytest.mark.parametrize(("deliveries", "final"), [
    (["PARKED", "FAILED"], "FAILURE"),  # the first job after a quiet spell: it parks, then fails
    (["PARKED", "SUCCEEDED"], "SUCCESS"),
    (["PARKED", "PARKED", "FAILED"], "FAILURE"),
    (["FAILED", "CLAIMED"], "FAILURE"),  # a duplicate message that found the job taken
    (["SUCCEEDED", "STALE"], "SUCCESS"),  # a late task whose claim the reaper took back
    (["PARKED", "CANCELLED"], "FAILURE"),  # cancelled while it waited: never a success
])
def test_review2_hole19_a_job_that_parked_first_ends_in_flower_as_the_job_ended(deliveries: list[str],
                                                                                 final: str) -> None:
    store = fake_store()
    summaries = [Summary("j1", word(status, StartReply), error=BAD if status == "FAILED" else None)
                 for status in deliveries]
    seen = flower_state("j1", summaries, store)
    assert seen["state"] == final, seen
    assert bool(seen["retried"]) == ("PARKED" in deliveries)  # the wait shows, as a RETRY
    if final == "FAILURE" and "FAILED" in deliveries:
        assert "bad_input: expected 4 numbers" in seen["exception"]


def test_review2_hole19_a_failed_job_raises_its_error_and_a_parked_one_a_retry() -> None:
    store = fake_store()
    with pytest.raises(JobFailed, match="bad_input: expected 4 numbers"):
        report(Summary("j1", JobStatus.FAILED, error=BAD), store)
    with pytest.raises(Retry):
        report(Summary("j1", StartReply.PARKED), store)
    assert report(Summary("j1", JobStatus.SUCCEEDED, replica="r1"), store)["status"] == "SUCCEEDED"


def test_review2_hole19_the_worker_sends_task_events_from_its_first_job_when_asked(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    (tmp_path / "models.toml").write_text('[models.m]\ncommand = ["python", "-m", "model.server"]\n')
    monkeypatch.setenv("SM_MODELS_FILE", str(tmp_path / "models.toml"))
    started: list[list[str]] = []

    def execvp(_: str, argv: list[str]) -> None:
        started.append(argv)

    monkeypatch.setattr(cli.os, "execvp", execvp)
    assert CliRunner().invoke(cli.main, ["worker", "--task-events"]).exit_code == 0
    assert CliRunner().invoke(cli.main, ["worker", "--", "--max-tasks-per-child", "5"]).exit_code == 0
    assert "--task-events" in started[0] and "--task-events" not in started[1]
    assert started[1][-2:] == ["--max-tasks-per-child", "5"]  # the rest goes to celery worker


def test_review2_hole11_a_revoked_tasks_job_is_cancelled_saying_so() -> None:
    store = fake_store()
    job = store.jobs.submit(store.jobs.new("m", {"x": 1}))
    assert job is not None
    cancel_revoked(store, job.id)
    cancel_revoked(store, job.id)  # every worker that heard the revoke may discard a message of it
    cancelled = store.jobs.get(job.id)
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    assert cancelled.cancelled_while is JobStatus.QUEUED
    assert cancelled.error is not None and cancelled.error.code == "revoked"
    assert [e.kind for e in store.events.recent("m")] == ["job_cancelled"]
    cancel_revoked(store, "no-such-job")  # a task id of nothing we know: nothing happens
