"""Fault injection: no accepted job is lost and none is committed twice.

Each test prints submitted / succeeded / failed-with-reason / lost / committed twice, and asserts
lost = 0 and committed twice = 0.
"""

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.integration.faults import Submitter, tally, wait_finished
from tests.integration.platform import Platform
from workers.embedded import start_embedded_redis
from workers.job import JobStatus
from workers.store import Store, keys

pytestmark = [pytest.mark.faults, pytest.mark.integration]
LEASE = 3.0
TICK = 0.5
SLEEPY = """
[models.sleepy]
command = ["python", "-m", "model.server"]
concurrency = 4
max_replicas = 2
idle_timeout = 30
max_attempts = 3
env = { MODEL_CLASS = "testmodels:Sleepy", SERVICE_TIME = "0.3" }
"""


def jobs_url(platform: Platform) -> str:
    """Where sleepy jobs are submitted."""
    return f"{platform.url}/v1/models/sleepy/jobs"


def fault_platform(make_platform: Callable[..., Platform], **env: str) -> Platform:
    """A platform on the sleepy model with a short job lease."""
    platform = make_platform(models=SLEEPY)
    platform.env.update(SM_JOB_LEASE=str(LEASE), **env)
    return platform


def running(client: "redis.Redis") -> int:
    """Jobs running now."""
    return int(client.scard(keys.running("sleepy")))


def test_worker_killed_mid_job_its_jobs_resume_within_lease_and_tick(
        make_platform: Callable[..., Platform], client: "redis.Redis") -> None:
    platform = fault_platform(make_platform).start("gateway", "autoscaler", "worker", "worker2")
    submitter = Submitter(jobs_url(platform), 100, lambda i: {"i": i})
    submitter.thread.start()
    platform.wait_until(lambda: running(client) >= 6, 60, "jobs did not start running")
    victim = platform.processes["worker"].pid
    platform.stop("worker", sig=signal.SIGKILL)
    killed_at = time.time()
    platform.start("worker")
    submitter.thread.join()
    wait_finished(client, submitter.accepted, 120)

    result = tally(client, submitter.accepted)
    print(result.line("worker SIGKILL"))
    store = Store.of(client, 60).jobs
    orphans = [job for j in submitter.accepted if (job := store.get(j)) and job.requeued_at]
    resumed_after = [job.requeued_at - killed_at for job in orphans if job.requeued_at]
    print(f"orphans of worker pid {victim}: {len(orphans)}, requeued after {max(resumed_after, default=0):.2f} s "
          f"(lease {LEASE} s + tick {TICK} s)")
    assert result.lost == [] and result.committed_twice == []
    assert result.succeeded == 100
    assert orphans, "the killed worker held no job"
    assert max(resumed_after) <= LEASE + TICK + 0.5
    assert {job.attempts for job in orphans} <= {1, 2}  # 1: it was still waiting for a slot when killed


def test_poison_job_fails_after_the_attempt_limit_and_others_keep_flowing(
        make_platform: Callable[..., Platform], client: "redis.Redis") -> None:
    platform = fault_platform(make_platform).start("gateway", "autoscaler", "worker", "worker2")
    poison = requests.post(jobs_url(platform), json={"sleep": 3}, timeout=10).json()["id"]
    others = Submitter(jobs_url(platform), 40, lambda i: {"i": i})
    others.thread.start()
    store = Store.of(client, 60).jobs
    kills = 0
    deadline = time.monotonic() + 90
    while (job := store.get(poison)) and not job.status.finished and time.monotonic() < deadline:
        if job.status is JobStatus.RUNNING and job.attempts > kills:
            name = next(n for n, p in platform.processes.items() if job.worker.endswith(f":{p.pid}"))
            platform.stop(name, sig=signal.SIGKILL)  # the poison kills whichever worker runs it
            platform.start(name)
            kills += 1
        time.sleep(0.05)
    others.thread.join()
    wait_finished(client, others.accepted, 60)

    result = tally(client, [poison, *others.accepted])
    print(result.line("poison job") + f" workers_killed={kills}")
    assert result.lost == [] and result.committed_twice == []
    dead = store.get(poison)
    assert dead is not None and dead.status is JobStatus.FAILED and dead.error is not None
    assert dead.error.code == "worker_lost" and dead.attempts == 3 and kills == 3
    assert poison in store.dead_letters()
    # a job that ran beside the poison on each killed worker dies with it: only such collateral may fail
    collateral = [job for j in others.accepted if (job := store.get(j)) and job.status is JobStatus.FAILED]
    assert all(job.error and job.error.code == "worker_lost" and job.worker == dead.worker for job in collateral)
    assert result.succeeded == 40 - len(collateral) and len(collateral) <= 2


@pytest.fixture(params=["always", "everysec"])
def own_redis(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """A Redis of the test's own (append-only, fsync as the parameter says) that the test may kill and restart."""
    started: list[Any] = []

    def start(port: int | None = None) -> tuple[str, Any]:
        url, process = start_embedded_redis(tmp_path / "own-redis", port=port, fsync=request.param)
        started.append(process)
        return url, process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_redis_killed_under_load_and_restarted_loses_no_accepted_job(
        own_redis: Any, make_platform: Callable[..., Platform]) -> None:
    url, server = own_redis()
    platform = fault_platform(make_platform, REDIS_URL=url).start("gateway", "autoscaler", "worker", "worker2")
    client = redis.Redis.from_url(url, decode_responses=True)
    workers = {name: platform.processes[name].pid for name in ("worker", "worker2", "autoscaler")}
    submitter = Submitter(jobs_url(platform), 60, lambda i: {"i": i, "sleep": 0.1}, timeout=180)
    submitter.thread.start()
    platform.wait_until(lambda: len(submitter.accepted) >= 20, 60, "jobs were not accepted")
    server.send_signal(signal.SIGKILL)
    server.wait()
    time.sleep(1.5)
    own_redis(port=int(url.rsplit(":", 1)[1].split("/")[0]))
    submitter.thread.join()
    wait_finished(client, submitter.accepted, 120)

    result = tally(client, submitter.accepted)
    print(result.line(f"redis SIGKILL (appendfsync {client.config_get('appendfsync')['appendfsync']})")
          + f" refused_while_down={submitter.refused}")
    assert result.lost == [] and result.committed_twice == []
    assert result.succeeded == len(submitter.accepted) == 60
    assert {name: platform.processes[name].pid for name in workers} == workers  # none was restarted
    assert all(platform.processes[name].poll() is None for name in workers)


@pytest.mark.parametrize("own_redis", ["always"], indirect=True)
def test_redis_down_answers_503_everywhere_and_creates_nothing(
        own_redis: Any, make_platform: Callable[..., Platform]) -> None:
    url, server = own_redis()
    platform = fault_platform(make_platform, REDIS_URL=url).start("gateway")
    server.terminate()
    server.wait()
    ready = requests.get(f"{platform.url}/readyz", timeout=10)
    response = requests.post(jobs_url(platform), json={"i": 1}, timeout=30)
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "unavailable"
    assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "unavailable"
    own_redis(port=int(url.rsplit(":", 1)[1].split("/")[0]))
    client = redis.Redis.from_url(url, decode_responses=True)
    print(f"redis down at submit: status={response.status_code} keys_after_restart={client.dbsize()}")
    assert list(client.scan_iter(keys.job("*"))) == [] and client.llen(keys.celery_queue("sleepy")) == 0
