"""The job options through the real platform (gunicorn gateway, celery worker, autoscaler, process replicas):
idempotency keys, deadlines, priorities."""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.platform import Platform

pytestmark = pytest.mark.integration
COUNTING = """
[models.counting]
command = ["python", "-m", "model.server"]
env = {{ MODEL_CLASS = "testmodels:Counting", COUNT_FILE = "{count_file}" }}
concurrency = {concurrency}
max_replicas = 1
idle_timeout = 30
"""


def poll(platform: Platform, job_id: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The job once ``done`` says so (within 60 s)."""
    found: dict[str, Any] = {}

    def check() -> bool:
        found.update(requests.get(f"{platform.url}/v1/jobs/{job_id}", timeout=10).json())
        return done(found)

    platform.wait_until(check, 60, f"job {job_id} never got there: {found}")
    return found


def test_twenty_concurrent_submits_with_one_key_make_one_job_run_once(make_platform: Callable[..., Platform],
                                                                      tmp_path: Path) -> None:
    count_file = tmp_path / "runs.txt"
    platform = make_platform(models=COUNTING.format(count_file=count_file, concurrency=4))
    platform.start("gateway", "worker", "autoscaler")
    jobs = f"{platform.url}/v1/models/counting/jobs"
    body = {"mark": "once", "sleep": 0.5}

    def submit(_: int) -> requests.Response:
        return requests.post(jobs, json=body, headers={"Idempotency-Key": "order-42"}, timeout=30)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(submit, range(20)))
    assert {a.status_code for a in answers} <= {200, 202}, [a.text for a in answers]
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1, ids
    replayed = [a for a in answers if a.headers.get("Idempotent-Replayed") == "true"]
    assert len(replayed) == 19 and {a.status_code for a in replayed} == {200}
    job_id = ids.pop()
    done = poll(platform, job_id, lambda job: job["status"] == "SUCCEEDED")
    assert done["attempts"] == 1
    assert count_file.read_text().splitlines() == ["once"]  # the model ran it once
    late = submit(0)  # after it finished: the same job, with its output
    assert late.status_code == 200 and late.json()["id"] == job_id and late.json()["output"] == done["output"]
    conflict = requests.post(jobs, json={"mark": "other"}, headers={"Idempotency-Key": "order-42"}, timeout=10)
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "idempotency_conflict"
    for bad in ("", "x" * 256, "caf\u00e9"):
        refused = requests.post(jobs, json=body, headers={"Idempotency-Key": bad.encode("latin-1")}, timeout=10)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_idempotency_key", bad
    assert count_file.read_text().splitlines() == ["once"]
    waiting = requests.get(f"{platform.url}/v1/models/counting", timeout=10).json()["queue_depth"]
    assert waiting == 0  # nothing else was recorded


def test_a_job_past_its_ttl_never_runs_and_retried_it_does_and_a_run_past_its_timeout_fails(
        make_platform: Callable[..., Platform], tmp_path: Path) -> None:
    count_file = tmp_path / "runs.txt"
    platform = make_platform(models=COUNTING.format(count_file=count_file, concurrency=1))
    platform.start("gateway", "worker", "autoscaler")
    jobs = f"{platform.url}/v1/models/counting/jobs"
    blocker = requests.post(jobs, json={"mark": "blocker", "sleep": 4}, timeout=10).json()
    poll(platform, blocker["id"], lambda job: job["status"] == "RUNNING")
    late = requests.post(jobs, params={"ttl": 1}, json={"mark": "late"}, timeout=10).json()
    assert late["ttl"] == 1
    expired = poll(platform, late["id"], lambda job: job["status"] != "QUEUED")
    assert expired["status"] == "FAILED" and expired["error"]["code"] == "expired", expired
    assert poll(platform, blocker["id"], lambda job: job["status"] != "RUNNING")["status"] == "SUCCEEDED"
    assert "late" not in count_file.read_text().splitlines()
    assert requests.post(f"{platform.url}/v1/jobs/{late['id']}/retry", timeout=10).status_code == 200
    assert poll(platform, late["id"], lambda job: job["status"] != "QUEUED" and job["status"] != "RUNNING")[
        "status"] == "SUCCEEDED"
    assert count_file.read_text().splitlines() == ["blocker", "late"]
    slow = requests.post(jobs, params={"execution_timeout": 0.5, "wait": 30}, json={"mark": "slow", "sleep": 3},
                         timeout=40).json()
    assert slow["status"] == "FAILED" and slow["error"]["code"] == "timeout", slow
    assert slow["execution_timeout"] == 0.5
    door = requests.post(f"{platform.url}/runpod/v2/counting/runsync", params={"wait": 30000},
                         json={"input": {"mark": "door", "sleep": 3}, "policy": {"executionTimeout": 500}},
                         timeout=40).json()
    assert door["status"] == "TIMED_OUT", door


def test_a_high_job_submitted_behind_a_backlog_of_normal_ones_starts_next(make_platform: Callable[..., Platform],
                                                                          tmp_path: Path) -> None:
    count_file = tmp_path / "runs.txt"
    platform = make_platform(models=COUNTING.format(count_file=count_file, concurrency=1))
    platform.start("gateway", "worker", "autoscaler")
    jobs = f"{platform.url}/v1/models/counting/jobs"
    blocker = requests.post(jobs, json={"mark": "blocker", "sleep": 3}, timeout=10).json()
    poll(platform, blocker["id"], lambda job: job["status"] == "RUNNING")
    marks = [f"normal-{n}" for n in range(4)]
    backlog = [requests.post(jobs, json={"mark": mark}, timeout=10).json()["id"] for mark in marks]
    high = requests.post(jobs, params={"priority": "high"}, json={"mark": "high"}, timeout=10).json()
    assert high["priority"] == "high"
    assert requests.get(f"{platform.url}/v1/jobs/{blocker['id']}", timeout=10).json()["status"] == "RUNNING"
    held = poll(platform, backlog[0], lambda job: (job.get("waiting") or {}).get("reason") == "parked")
    assert held["waiting"]["age"] >= 0 and held["waiting"]["since"] and held["waiting"]["replica"] is None
    for job_id in [*backlog, high["id"]]:
        assert poll(platform, job_id, lambda job: job["status"] not in ("QUEUED", "RUNNING"))["status"] == "SUCCEEDED"
    assert count_file.read_text().splitlines() == ["blocker", "high", *marks]  # as the model ran them


def test_a_low_job_scales_nothing_from_zero_and_runs_once_a_normal_one_starts_a_replica(
        make_platform: Callable[..., Platform], tmp_path: Path) -> None:
    count_file = tmp_path / "runs.txt"
    platform = make_platform(models=COUNTING.format(count_file=count_file, concurrency=2))
    platform.start("gateway", "worker", "autoscaler")
    jobs = f"{platform.url}/v1/models/counting/jobs"
    low = requests.post(jobs, params={"priority": "low"}, json={"mark": "low"}, timeout=10).json()
    for n in range(3):  # each expires on a janitor's pass of the autoscaler, which reconciles every model after it
        probe = requests.post(jobs, params={"priority": "low", "ttl": 0.3}, json={"mark": f"probe-{n}"},
                              timeout=10).json()
        assert poll(platform, probe["id"], lambda job: job["status"] != "QUEUED")["error"]["code"] == "expired"
    events = requests.get(f"{platform.url}/v1/events", params={"model": "counting"}, timeout=10).json()["events"]
    assert [e for e in events if e["kind"] == "scale_up"] == [], events
    view = requests.get(f"{platform.url}/v1/models/counting", timeout=10).json()
    assert view["replicas"] == [] and view["queue_depth"] == 1
    held = requests.get(f"{platform.url}/v1/jobs/{low['id']}", timeout=10).json()
    assert held["status"] == "QUEUED" and held["priority"] == "low" and held["waiting"]["reason"] == "parked", held
    normal = requests.post(jobs, json={"mark": "normal"}, timeout=10).json()
    for job_id in (low["id"], normal["id"]):
        assert poll(platform, job_id, lambda job: job["status"] not in ("QUEUED", "RUNNING"))["status"] == "SUCCEEDED"
    events = requests.get(f"{platform.url}/v1/events", params={"model": "counting"}, timeout=10).json()["events"]
    assert len([e for e in events if e["kind"] == "scale_up"]) == 1
    assert sorted(count_file.read_text().splitlines()) == ["low", "normal"]
