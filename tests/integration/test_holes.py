"""Regression tests of the holes a review found, one per hole, named after it, on the platform's real processes.

Each of them failed on the code before the redesign.
"""

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from gateway.auth import digest
from tests.integration.platform import Platform
from tests.integration.proxy import DroppingProxy
from workers.scaling.backends import free_port
from workers.store import keys

pytestmark = pytest.mark.integration
SKEW = Path(__file__).resolve().parent / "skew"
KEY_A, KEY_B = "key-a-0123456789", "key-b-9876543210"
FLOWER_USER = ("watcher", "flower-secret")


def sleepy(name: str = "sleepy", **fields: Any) -> str:
    """A models-file table of a model that sleeps, then echoes its input."""
    table = {"command": '["python", "-m", "model.server"]', "concurrency": "4", "max_replicas": "2",
             "idle_timeout": "30", "env": '{ MODEL_CLASS = "testmodels:Sleepy" }'}
    table.update({key: str(value) for key, value in fields.items()})
    return f"\n[models.{name}]\n" + "".join(f"{key} = {value}\n" for key, value in table.items())


def post(platform: Platform, model: str, body: Any, wait: float = 0, key: str | None = None) -> requests.Response:
    """POST a job."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(f"{platform.url}/v1/models/{model}/jobs", json=body, params={"wait": wait},
                         headers=headers, timeout=wait + 60)


def job(platform: Platform, job_id: str, key: str | None = None) -> dict[str, Any]:
    """GET a job."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer: dict[str, Any] = requests.get(f"{platform.url}/v1/jobs/{job_id}", headers=headers, timeout=10).json()
    return answer


def model_view(platform: Platform, model: str) -> dict[str, Any]:
    """GET /v1/models/<model>."""
    answer: dict[str, Any] = requests.get(f"{platform.url}/v1/models/{model}", timeout=10).json()
    return answer


def running(platform: Platform, job_id: str) -> bool:
    """Whether the job runs now."""
    return job(platform, job_id)["status"] == "RUNNING"


def test_hole01_a_cancelled_running_job_whose_worker_died_frees_its_replica_slot(
        make_platform: Callable[..., Platform]) -> None:
    platform = make_platform(models=sleepy("single", concurrency=1, max_replicas=1, idle_timeout=3))
    platform.env["SM_JOB_LEASE"] = "2"
    platform.start("gateway", "worker", "autoscaler")
    first = post(platform, "single", {"sleep": 6}).json()
    platform.wait_until(lambda: running(platform, first["id"]), 30, "the first job did not start")
    platform.stop("worker", sig=signal.SIGKILL)
    cancelled = requests.delete(f"{platform.url}/v1/jobs/{first['id']}", timeout=10).json()
    assert cancelled["status"] == "CANCELLED" and cancelled["cancelled_while"] == "RUNNING"
    platform.start("worker")

    second = post(platform, "single", {"sleep": 0}, wait=40).json()
    assert second["status"] == "SUCCEEDED", second
    platform.wait_until(lambda: model_view(platform, "single")["replicas"] == [], 30,
                        "the model did not scale to zero")


def test_hole03_a_worker_whose_clock_runs_behind_keeps_its_jobs(make_platform: Callable[..., Platform]) -> None:
    platform = make_platform(models=sleepy(concurrency=4, max_replicas=1))
    platform.env["SM_JOB_LEASE"] = "3"
    platform.start("gateway", "autoscaler")
    platform.start("worker", env={"PYTHONPATH": f"{SKEW}{os.pathsep}{platform.env['PYTHONPATH']}",
                                  "CLOCK_SKEW": "-4"})
    with ThreadPoolExecutor(4) as pool:
        jobs = list(pool.map(lambda i: post(platform, "sleepy", {"i": i, "sleep": 2}, wait=60).json(), range(4)))

    assert [j["status"] for j in jobs] == ["SUCCEEDED"] * 4, jobs
    assert [j["attempts"] for j in jobs] == [1] * 4
    assert all(j["timings"]["queue_wait"] >= 0 for j in jobs)


def test_hole04_a_failing_backend_call_is_an_event_and_a_failed_start_not_a_crash(
        make_platform: Callable[..., Platform]) -> None:
    platform = make_platform(models=sleepy())
    (platform.workdir / "data").mkdir()
    (platform.workdir / "data" / "logs").write_text("a file where the replica logs should go")
    platform.start("gateway", "worker", "autoscaler")

    answer = post(platform, "sleepy", {"i": 1}, wait=20).json()
    assert answer["status"] == "FAILED" and answer["error"]["code"] == "replica_start_failed", answer
    assert "logs" in answer["error"]["message"]
    time.sleep(1)
    assert platform.processes["autoscaler"].poll() is None, platform.log("autoscaler")[-2000:]


def test_hole04_stopping_the_autoscaler_leaves_busy_replicas_serving(make_platform: Callable[..., Platform]) -> None:
    platform = make_platform(models=sleepy()).start("gateway", "worker", "autoscaler")
    warm = post(platform, "sleepy", {"sleep": 0}, wait=30).json()
    assert warm["status"] == "SUCCEEDED"
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(lambda: post(platform, "sleepy", {"sleep": 3}, wait=40).json())
        platform.wait_until(lambda: model_view(platform, "sleepy")["running"] == 1, 20, "the job did not start")
        platform.stop("autoscaler")
        answer = pending.result()

    assert answer["status"] == "SUCCEEDED" and answer["replica"] == warm["replica"] and answer["attempts"] == 1
    assert [r["id"] for r in model_view(platform, "sleepy")["replicas"]] == [warm["replica"]]


@pytest.mark.parametrize("worker_meanwhile", [False, True], ids=["no worker meanwhile", "worker meanwhile"])
def test_hole05_a_503_answer_means_the_job_never_runs(make_platform: Callable[..., Platform], redis_url: str,
                                                      client: "redis.Redis", worker_meanwhile: bool) -> None:
    proxy = DroppingProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    try:
        platform = make_platform(models=sleepy())
        platform.env["SM_JOB_LEASE"] = "1"  # a message counts as lost after a second
        platform.start("gateway", env={"REDIS_URL": proxy.url})
        platform.start("worker", "autoscaler")
        warm = post(platform, "sleepy", {"sleep": 0}, wait=30).json()
        assert warm["status"] == "SUCCEEDED"
        if not worker_meanwhile:
            platform.stop("worker")
        proxy.arm(b"EVALSHA", outage=6)  # the submit's script runs, its answer is lost, Redis is gone for 6 s
        answer = post(platform, "sleepy", {"sleep": 0})
        assert proxy.dropped.is_set(), answer.text
        if not worker_meanwhile:
            platform.start("worker")
        time.sleep(6)  # a job that was kept is sent (again) and runs by now

        others = [k for k in client.scan_iter(keys.job("*")) if k != keys.job(warm["id"])]
        print(f"answer {answer.status_code} {answer.text[:200]}; other job records: "
              f"{[client.hget(k, 'status') for k in others]}")
        if answer.status_code == 503:
            assert others == [], "a job answered 503 was kept and ran"
        else:
            assert answer.status_code in (200, 202) and others == [keys.job(answer.json()["id"])], answer.text
            platform.wait_until(lambda: job(platform, answer.json()["id"])["status"] == "SUCCEEDED", 30,
                                "an accepted job did not run")
        assert answer.status_code == (200 if worker_meanwhile else 503)  # what the gateway can know in each case
    finally:
        proxy.close()


def test_hole07_a_failed_scale_up_leaves_jobs_to_the_busy_ready_replica(make_platform: Callable[..., Platform],
                                                                        tmp_path: Path) -> None:
    exclusive = sleepy("exclusive", concurrency=1, max_replicas=2, cold_start_seed=0.1,
                       env=f'{{ MODEL_CLASS = "testmodels:Exclusive", DEVICE_LOCK = "{tmp_path / "device"}" }}')
    platform = make_platform(models=exclusive).start("gateway", "worker", "autoscaler")
    for _ in range(3):  # a warm replica (its cold start may fail, device busy, if a second start raced it)
        first = post(platform, "exclusive", {"sleep": 2}, wait=30).json()
        if first["status"] == "SUCCEEDED":
            break
    assert first["status"] == "SUCCEEDED", first  # service time 2 s
    with ThreadPoolExecutor(3) as pool:
        busy = pool.submit(lambda: post(platform, "exclusive", {"sleep": 4}, wait=60).json())
        platform.wait_until(lambda: model_view(platform, "exclusive")["running"] == 1, 20, "no job started")
        queued = [pool.submit(lambda i=i: post(platform, "exclusive", {"i": i, "sleep": 0}, wait=60).json())
                  for i in range(2)]
        answers = [busy.result(), *(f.result() for f in queued)]

    events = requests.get(f"{platform.url}/v1/events", params={"model": "exclusive"}, timeout=10).json()["events"]
    assert any(e["kind"] == "start_failed" and "device busy" in e["reason"] for e in events), events
    assert [a["status"] for a in answers] == ["SUCCEEDED"] * 3, answers


@pytest.mark.parametrize(("answer", "code"), [
    ("extra_error", "bad_input"), ("nan_time", "bad_response"), ("inf_time", "bad_response"),
    ("negative_time", "bad_response"), ("not_json", "bad_response"), ("error_not_object", "model_error"),
])
def test_hole08_a_bad_replica_answer_fails_the_job_and_keeps_it_readable(
        make_platform: Callable[..., Platform], answer: str, code: str) -> None:
    liar = '\n[models.liar]\ncommand = ["python", "-m", "liar"]\nconcurrency = 4\nidle_timeout = 30\n'
    platform = make_platform(models=liar).start("gateway", "worker", "autoscaler")
    assert post(platform, "liar", {"answer": "fine"}, wait=30).json()["status"] == "SUCCEEDED"

    response = post(platform, "liar", {"answer": answer}, wait=30)
    assert response.status_code == 200, response.text
    finished = job(platform, response.json()["id"])
    assert finished["status"] == "FAILED" and finished["error"]["code"] == code, finished
    service_time = model_view(platform, "liar")["averages"]["service_time"]["seconds"]
    assert math.isfinite(service_time) and 0 <= service_time < 1


def test_hole09_a_standby_autoscaler_leaves_submit_wake_ups_to_the_leader(
        make_platform: Callable[..., Platform]) -> None:
    names = [f"m{i}" for i in range(6)]
    platform = make_platform(models="".join(sleepy(name, max_replicas=1) for name in names))
    platform.env["SM_SCALE_INTERVAL"] = "30"  # only wake-ups make it act in time
    platform.start("gateway", "worker", "autoscaler")
    time.sleep(1)
    platform.start("autoscaler2")
    time.sleep(2)
    for first, second in zip(names[::2], names[1::2], strict=True):
        with ThreadPoolExecutor(2) as pool:
            a = pool.submit(lambda m=first: post(platform, m, {"sleep": 0}, wait=12).json())
            time.sleep(0.01)
            b = pool.submit(lambda m=second: post(platform, m, {"sleep": 0}, wait=12).json())
            assert [a.result()["status"], b.result()["status"]] == ["SUCCEEDED"] * 2


def test_hole10_a_model_that_cannot_start_does_not_block_other_models(
        make_platform: Callable[..., Platform], client: "redis.Redis") -> None:
    broken = sleepy("broken", max_replicas=1, start_timeout=10, on_start_failure='"wait"',
                    env='{ MODEL_CLASS = "testmodels:CrashingSetup" }')
    platform = make_platform(models=broken).start("gateway", "autoscaler")
    platform.start("worker", concurrency=4)
    waiting = [post(platform, "broken", {"i": i}).json()["id"] for i in range(40)]
    platform.wait_until(lambda: client.llen(keys.celery_queue("broken")) <= 36, 20, "the worker took no broken job")
    time.sleep(1)  # the worker has taken all the broken jobs it can

    answer = post(platform, "iris", {"features": [[5.1, 3.5, 1.4, 0.2]]}, wait=30).json()
    assert answer["status"] == "SUCCEEDED", answer
    assert {job(platform, j)["status"] for j in waiting[:5]} == {"QUEUED"}


@pytest.fixture
def secured_env() -> dict[str, str]:
    """Keys A and B, and secrets a replica must never see."""
    return {"SM_API_KEYS": f"{digest(KEY_A)},{digest(KEY_B)}", "FLOWER_BASIC_AUTH": "admin:secret",
            "AWS_SECRET_ACCESS_KEY": "not-for-models"}


def test_hole12_a_process_replica_gets_a_clean_environment(make_platform: Callable[..., Platform],
                                                           secured_env: dict[str, str]) -> None:
    platform = make_platform(models=sleepy("environment", env='{ MODEL_CLASS = "testmodels:Environment" }'))
    platform.env.update(secured_env)
    platform.start("gateway", "worker", "autoscaler")
    answer = post(platform, "environment", {}, wait=30, key=KEY_A).json()
    names = set(answer["output"]["names"])
    assert {"PORT", "PATH", "MODEL_CLASS"} <= names
    assert not names & {"REDIS_URL", "SM_API_KEYS", "SM_MODELS_FILE", "FLOWER_BASIC_AUTH", "AWS_SECRET_ACCESS_KEY"}


def test_hole12_waits_are_capped_per_key_and_overall(make_platform: Callable[..., Platform],
                                                     secured_env: dict[str, str]) -> None:
    platform = make_platform()
    platform.env.update(secured_env, SM_MAX_WAITERS="3", SM_MAX_WAITERS_PER_KEY="2")
    platform.start("gateway")  # no worker: every wait lasts its full length
    finished: list[tuple[str, int]] = []

    def wait_with(key: str, name: str) -> None:
        response = post(platform, "iris", {"features": [[5.1, 3.5, 1.4, 0.2]]}, wait=5, key=key)
        finished.append((name, response.status_code))

    waiters = [threading.Thread(target=wait_with, args=(key, name))
               for key, name in ((KEY_A, "a1"), (KEY_A, "a2"), (KEY_B, "b1"))]
    for thread in waiters:
        thread.start()
    time.sleep(1)
    wait_with(KEY_A, "a3")  # key A already waits twice
    wait_with(KEY_B, "b2")  # three wait overall
    for thread in waiters:
        thread.join()
    assert finished[:2] == [("a3", 202), ("b2", 202)], finished
    assert sorted(finished[2:]) == [("a1", 202), ("a2", 202), ("b1", 202)]


def test_hole12_failed_authentications_are_rate_limited(make_platform: Callable[..., Platform],
                                                        secured_env: dict[str, str]) -> None:
    platform = make_platform()
    platform.env.update(secured_env, SM_AUTH_FAILURES_PER_MINUTE="10")
    platform.start("gateway")
    codes = [post(platform, "iris", {}, key=f"guess-{i}").status_code for i in range(15)]
    assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}, codes


def test_hole12_events_show_a_key_only_its_own_jobs(make_platform: Callable[..., Platform],
                                                    secured_env: dict[str, str], client: "redis.Redis") -> None:
    platform = make_platform(models=sleepy())
    platform.env.update(secured_env, SM_JOB_LEASE="1")
    platform.start("gateway", "autoscaler")  # no worker yet
    mine = post(platform, "sleepy", {"i": 1}, key=KEY_A).json()["id"]
    assert client.lpop(keys.celery_queue("sleepy"))  # its message is lost: the autoscaler sends it again and says so

    def events(key: str) -> str:
        return requests.get(f"{platform.url}/v1/events", headers={"Authorization": f"Bearer {key}"},
                            timeout=10).text

    platform.wait_until(lambda: mine in events(KEY_A), 20, "the resend was not reported")
    assert mine not in events(KEY_B)


def flower_tasks(port: int) -> dict[str, Any]:
    """Flower's task list."""
    try:
        answer: dict[str, Any] = requests.get(f"http://127.0.0.1:{port}/api/tasks", auth=FLOWER_USER, timeout=5).json()
        return answer
    except (requests.RequestException, ValueError):
        return {}


def task_of(tasks: dict[str, Any], job_id: str) -> dict[str, Any]:
    """Flower's latest task of a job, or {}."""
    found = [t for t in tasks.values() if job_id in str(t.get("args"))]
    return max(found, key=lambda t: t.get("timestamp") or 0, default={})


def test_hole14_flower_shows_a_failed_job_as_failure_and_a_summary_of_a_success(
        make_platform: Callable[..., Platform]) -> None:
    platform = make_platform().start("gateway", "worker", "autoscaler")
    port = free_port()
    log = open(platform.workdir / "flower.log", "ab")  # noqa: SIM115 - kept open for the child
    flower = subprocess.Popen([sys.executable, "-m", "workers.cli", "flower", "--port", str(port)],
                              env={**platform.env, "FLOWER_BASIC_AUTH": ":".join(FLOWER_USER)},
                              cwd=platform.workdir, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    platform.processes["flower"] = flower
    good_body = {"features": [[5.1, 3.5, 1.4, 0.2]]}

    def seen() -> bool:  # Flower turns the worker's events on; a job shows once they flow
        warm = post(platform, "iris", good_body, wait=30).json()["id"]
        return task_of(flower_tasks(port), warm).get("state") == "SUCCESS"

    platform.wait_until(seen, 60, "Flower never showed a task")
    bad = post(platform, "iris", {"features": [[1, 2, 3]]}, wait=30).json()
    good = post(platform, "iris", good_body, wait=30).json()
    assert (bad["status"], good["status"]) == ("FAILED", "SUCCEEDED")
    platform.wait_until(lambda: task_of(flower_tasks(port), bad["id"]).get("state") == "FAILURE", 20,
                        f"the failed job is not a FAILURE in Flower: {task_of(flower_tasks(port), bad['id'])}")
    failure = task_of(flower_tasks(port), bad["id"])
    assert "bad_input" in failure["exception"] and "4 numbers" in failure["exception"]
    success = task_of(flower_tasks(port), good["id"])
    assert "SUCCEEDED" in success["result"] and good["replica"] in success["result"]
