"""Regression tests of the second review's holes around Celery (issue 13: holes 5, 11, 19 and 20), on a real Redis,
a real worker, a real Flower and a real ``up``."""

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import urllib3

from gateway.app import create_app
from tests.integration.platform import MODELS_TOML, Platform, eventually
from workers.config import Settings
from workers.execution import runner
from workers.job import Job, JobStatus
from workers.protocols import transport
from workers.scaling.autoscaler import Autoscaler
from workers.scaling.backends import ProcessBackend, free_port
from workers.scaling.readiness import ReadinessProbe
from workers.store import Store, keys
from workers.store.records import Started

pytestmark = pytest.mark.integration
FLOWER_USER = ("watcher", "flower-secret")


def submit(store: Store, model: str, payload: Any = None) -> Job:
    """A recorded job of ``model``."""
    job = store.jobs.submit(store.jobs.new(model, payload or {"x": 1}))
    assert job is not None
    return job


def status(store: Store, job: Job) -> str:
    """The job's status now ('' if it is gone)."""
    found = store.jobs.get(job.id)
    return found.status.value if found else ""


def error_code(store: Store, job: Job) -> str:
    """The job's error code now ('' if none)."""
    found = store.jobs.get(job.id)
    return found.error.code if found and found.error else ""


def ready_replica(store: Store, model: str) -> str:
    """A READY replica of ``model`` with one slot; the leader's token."""
    token = store.leadership(30).hold()
    assert token and store.replicas.add(token, "r1", model, "process")
    assert store.replicas.launched(token, "r1", "http://127.0.0.1:9/", "1")
    assert store.replicas.ready(token, "r1", concurrency=1) is not None
    return token


def janitor(store: Store, tmp_path: Path, models_file: Path, grace: float = 0) -> Autoscaler:
    """The autoscaler of a platform whose models file is ``models_file`` (its reaper is the janitor)."""
    models = Settings(models_file=models_file).load_models()
    return Autoscaler(models, store, ProcessBackend(tmp_path, tmp_path), ReadinessProbe(urllib3.PoolManager()),
                      removed_after=grace)


def test_review2_hole05_jobs_of_a_removed_model_fail_model_removed_and_stay_readable(
        store: Store, client: "redis.Redis", redis_url: str, tmp_path: Path) -> None:
    token = ready_replica(store, "gone")
    running, queued, parked = submit(store, "gone"), submit(store, "gone"), submit(store, "gone")
    start = {"lease": 30, "worker": "w", "fail_on_start_failure": False}
    assert isinstance(store.jobs.start(running.id, "t1", **start), Started)
    assert store.jobs.start(parked.id, "t2", **start) == "PARKED"
    models_file = tmp_path / "models.toml"
    models_file.write_text(MODELS_TOML.format(idle_timeout=30))  # iris only: "gone" was removed
    kept = submit(store, "iris")

    janitor(store, tmp_path, models_file, grace=3600).reap_jobs()  # a rolling deploy may be adding the model
    assert [status(store, j) for j in (queued, parked, running, kept)] == ["QUEUED", "QUEUED", "RUNNING", "QUEUED"]
    janitor(store, tmp_path, models_file).reap_jobs()
    assert [status(store, j) for j in (queued, parked, running, kept)] == ["FAILED", "FAILED", "RUNNING", "QUEUED"]
    assert [error_code(store, j) for j in (queued, parked)] == ["model_removed"] * 2
    gateway = create_app(Settings(redis_url=redis_url, models_file=models_file)).test_client()
    shown = gateway.get(f"/v1/jobs/{queued.id}")
    assert shown.status_code == 200 and shown.json is not None
    assert shown.json["status"] == "FAILED" and shown.json["error"]["code"] == "model_removed"
    assert "gone" in shown.json["error"]["message"]

    client.zadd(keys.LEASES, {running.id: 0})  # its worker was lost: no retry on a model nobody serves
    janitor(store, tmp_path, models_file).reap_jobs()
    assert (status(store, running), error_code(store, running)) == ("FAILED", "model_removed")
    assert store.jobs.models_held() == {"gone", "iris"}  # its replica's record is left
    janitor(store, tmp_path, models_file).sweep(token, adopting=False)  # idle past the grace: stopped, forgotten
    assert store.replicas.of("gone") == []
    janitor(store, tmp_path, models_file).reap_jobs()
    assert store.jobs.models_held() == {"iris"}  # "gone" is forgotten, with its Celery queue
    assert client.llen(keys.celery_queue("gone")) == 0 and status(store, kept) == "QUEUED"


def test_review2_hole05_a_worker_that_does_not_serve_the_model_fails_the_job_saying_so(store: Store) -> None:
    job = submit(store, "gone")
    ctx = runner.WorkerContext(models={}, store=store, http=transport.http_pool(1),
                               leases=runner.LeaseKeeper(store, 3600))
    summary = runner.run_job(ctx, job.id, "gone")
    assert summary.status == "FAILED" and status(store, job) == "FAILED"
    found = store.jobs.get(job.id)
    assert found is not None and found.error is not None and found.error.code == "model_not_served"
    assert ctx.worker in found.error.message and "gone" in found.error.message
    assert store.jobs.resend_lost("gone", after=0) == {}  # nothing left to send again


def revoke(platform: Platform, job_id: str) -> bool:
    """``celery control revoke`` on the platform's broker; whether a worker acknowledged it."""
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "workers.execution.celery_app", "control",
                           "--timeout", "2", "revoke", job_id], env=platform.env, cwd=platform.workdir,
                          capture_output=True, text=True, timeout=60, check=False)
    return done.returncode == 0 and "revoked" in done.stdout


def test_review2_hole11_revoking_a_queued_jobs_task_cancels_the_job_saying_so(
        make_platform: Callable[..., Platform], store: Store, client: "redis.Redis") -> None:
    platform = make_platform().start("worker")
    job = store.jobs.new("iris", {"features": [[5.1, 3.5, 1.4, 0.2]]})
    eventually(lambda: revoke(platform, job.id), 60, "no worker acknowledged the revoke")
    assert store.jobs.submit(job) is not None  # its message reaches the worker after the revoke

    eventually(lambda: status(store, job) != "QUEUED", 30, f"the revoked job stays QUEUED: {store.jobs.get(job.id)}")
    cancelled = store.jobs.get(job.id)
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED, cancelled
    assert cancelled.cancelled_while is JobStatus.QUEUED and cancelled.attempts == 0
    assert cancelled.error is not None and cancelled.error.code == "revoked"
    assert client.llen(keys.celery_queue("iris")) == 0 and store.jobs.resend_lost("iris", after=0) == {}
    assert any(e.kind == "job_cancelled" and e.job == job.id for e in store.events.recent("iris"))


SLEEPY = """
[models.sleepy]
command = ["python", "-m", "model.server"]
concurrency = 2
idle_timeout = 60
env = { MODEL_CLASS = "testmodels:Sleepy" }
"""


def test_review2_hole11_revoking_a_running_jobs_task_cancels_the_job_within_a_lease_renewal(
        make_platform: Callable[..., Platform], store: Store) -> None:
    platform = make_platform(models=SLEEPY)
    platform.env.update(SM_JOB_LEASE="3")  # renewed, and so watched, every second
    platform.start("autoscaler", "worker")
    job = store.jobs.submit(store.jobs.new("sleepy", {"sleep": 60}))
    assert job is not None
    eventually(lambda: status(store, job) == "RUNNING", 90, f"the job never ran: {store.jobs.get(job.id)}")
    eventually(lambda: revoke(platform, job.id), 60, "no worker acknowledged the revoke")

    eventually(lambda: status(store, job) != "RUNNING", 30, f"the revoked job runs on: {store.jobs.get(job.id)}")
    cancelled = store.jobs.get(job.id)
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED, cancelled
    assert cancelled.cancelled_while is JobStatus.RUNNING and cancelled.attempts == 1
    assert cancelled.error is not None and cancelled.error.code == "revoked"
    assert [e.kind for e in store.events.recent("sleepy") if e.job == job.id].count("job_cancelled") == 1


@contextlib.contextmanager
def up(tmp_path: Path, env: dict[str, str]) -> Iterator[tuple[int, int]]:
    """``serverless-model up`` in ``tmp_path`` on its embedded Redis: the gateway's and Flower's ports; Ctrl-C
    afterwards (SIGKILL to the group if it hangs)."""
    environment = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SM_REDIS_URL")}
    environment.update(SM_MODELS_FILE=str(tmp_path / "models.toml"), SM_DATA_DIR=str(tmp_path / "data"),
                       SM_NAMESPACE=f"test-{tmp_path.name}", **env)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    port, flower_port = free_port(), free_port()
    with open(tmp_path / "up.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "workers.cli", "up", "--port", str(port),
                                    "--flower-port", str(flower_port)], env=environment, cwd=tmp_path,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield port, flower_port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def answers(url: str, **options: Any) -> Any:
    """The JSON at ``url``, or None while it cannot be read."""
    try:
        response = requests.get(url, timeout=5, **options)
        return response.json() if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None


def flower_task(flower: str, job_id: str) -> dict[str, Any]:
    """Flower's task of a job (its task id is the job id), or {}."""
    found: dict[str, Any] = (answers(f"{flower}/api/tasks", auth=FLOWER_USER) or {}).get(job_id) or {}
    return found


def test_review2_hole19_flower_shows_a_job_that_parked_first_as_the_job_ended(tmp_path: Path) -> None:
    (tmp_path / "models.toml").write_text(MODELS_TOML.format(idle_timeout=30))
    # Flower never switches events on here: what it shows, the worker `up` started sent from its first job
    with up(tmp_path, {"FLOWER_BASIC_AUTH": ":".join(FLOWER_USER), "FLOWER_ENABLE_EVENTS": "false"}) as ports:
        gateway, flower = (f"http://127.0.0.1:{port}" for port in ports)
        eventually(lambda: answers(f"{gateway}/readyz"), 90, "up did not come up")
        eventually(lambda: (answers(f"{flower}/workers?json=1", auth=FLOWER_USER) or {}).get("data"), 60,
                   "Flower never heard from the worker")
        assert answers(f"{gateway}/v1/models/iris")["replicas"] == []  # from zero: the first job parks

        bad = requests.post(f"{gateway}/v1/models/iris/jobs?wait=60", json={"features": [[1, 2, 3]]},
                            timeout=70).json()
        assert bad["status"] == "FAILED" and bad["error"]["code"] == "bad_input", bad
        eventually(lambda: flower_task(flower, bad["id"]).get("state") == "FAILURE", 30,
                   f"the failed job is not a FAILURE in Flower: {flower_task(flower, bad['id'])}")
        failure = flower_task(flower, bad["id"])
        assert failure["retried"], failure  # its parked delivery showed as a RETRY, not a success
        assert "bad_input" in failure["exception"] and "4 numbers" in failure["exception"]

        good = requests.post(f"{gateway}/v1/models/iris/jobs?wait=60", json={"features": [[5.1, 3.5, 1.4, 0.2]]},
                             timeout=70).json()
        assert good["status"] == "SUCCEEDED", good
        eventually(lambda: flower_task(flower, good["id"]).get("state") == "SUCCESS", 30,
                   f"the job is not a SUCCESS in Flower: {flower_task(flower, good['id'])}")
        assert "SUCCEEDED" in flower_task(flower, good["id"])["result"]


def test_review2_hole20_a_lost_message_is_sent_again_behind_a_backlog_over_1000(
        store: Store, client: "redis.Redis") -> None:
    jobs = [submit(store, "m", {"i": i}) for i in range(1500)]
    assert client.llen(keys.celery_queue("m")) == 1500
    assert store.jobs.resend_lost("m", after=0) == {}  # every message still waits: none is sent twice

    for _ in range(3):  # the three oldest messages were taken by workers that died at once
        client.rpop(keys.celery_queue("m"))
    assert set(store.jobs.resend_lost("m", after=0)) == {job.id for job in jobs[:3]}
    assert client.llen(keys.celery_queue("m")) == 1500
    assert store.jobs.resend_lost("m", after=0) == {}  # their new messages wait behind the backlog

    for _ in range(1497):  # workers took the other 1,497 and died: only the three resent wait
        client.rpop(keys.celery_queue("m"))
    resent: list[str] = []
    for _ in range(20):  # at most 100 a pass, the oldest sends first
        found = store.jobs.resend_lost("m", after=0)
        assert len(found) <= 100
        resent += found
    assert sorted(resent) == sorted(job.id for job in jobs[3:])  # each lost one once, none of those waiting


def test_review2_hole20_lost_messages_are_found_exactly_whatever_the_backlog(
        store: Store, client: "redis.Redis") -> None:
    """Random submits, takes (a fifth by workers that die), withdrawals and resend passes: a resent job's message
    had always left the queue, and after the last passes no QUEUED job is without a waiting message."""
    queue = keys.celery_queue("m")
    token = store.leadership(30).hold()
    assert token and store.replicas.add(token, "r1", "m", "process")
    assert store.replicas.launched(token, "r1", "http://127.0.0.1:9/", "1")
    assert store.replicas.ready(token, "r1", concurrency=10**6) is not None

    def waiting() -> set[str]:
        return {json.loads(message)["headers"]["id"] for message in client.lrange(queue, 0, -1)}

    for seed in range(3):
        rng = random.Random(seed)
        for step in range(150):
            roll = rng.random()
            if roll < 0.35:
                for _ in range(rng.randint(1, 40)):
                    submit(store, "m")
            elif roll < 0.7:
                for message in filter(None, (client.rpop(queue) for _ in range(rng.randint(1, 30)))):
                    if rng.random() >= 0.2:  # else its worker died with it
                        store.jobs.start(json.loads(message)["headers"]["id"], f"t{seed}.{step}", 30, "w", False)
            elif roll < 0.75 and (queued := client.zrange(keys.sent("m"), 0, -1)):
                found = store.jobs.get(rng.choice(queued))
                if found is not None:
                    store.jobs.withdraw(found)
            else:
                still = waiting()
                resent = store.jobs.resend_lost("m", after=0, limit=rng.choice([5, 100]))
                assert not still & set(resent), f"seed {seed} step {step}: sent again while its message waits"
        for _ in range(200):
            if not store.jobs.resend_lost("m", after=0):
                break
        still = waiting()
        stranded = [job_id for job_id in client.zrange(keys.sent("m"), 0, -1)
                    if client.hget(keys.job(job_id), "status") == "QUEUED" and job_id not in still]
        assert stranded == [], f"seed {seed}: {len(stranded)} queued job(s) with no message"
