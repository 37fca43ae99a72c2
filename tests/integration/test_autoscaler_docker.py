"""The autoscaler on a real Docker engine: a burst from zero, adoption after SIGKILL, failed starts."""

import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import docker.errors
import pytest
import redis
import requests

from tests.integration.platform import TEST_IMAGE, Platform
from workers.store import keys

pytestmark = [pytest.mark.docker, pytest.mark.integration]
STRAY = "57a7000000aa"  # a stray of the autoscaler's id scheme (only such containers are ever removed)

SLEEPY = f"""
[models.sleepy]
image = "{TEST_IMAGE}"
concurrency = 1
max_replicas = 4
idle_timeout = 3
start_timeout = 30
cold_start_seed = 1.0
service_time_seed = 0.2
env = {{ MODEL_CLASS = "testmodels:Sleepy", SERVICE_TIME = "@SERVICE_TIME@" }}
"""
BROKEN = f"""
[models.ghost]
image = "serverless-model/missing:latest"
start_timeout = 10

[models.broken]
image = "{TEST_IMAGE}"
start_timeout = 10
env = {{ MODEL_CLASS = "testmodels:CrashingSetup" }}

[models.patient]
image = "{TEST_IMAGE}"
start_timeout = 10
on_start_failure = "wait"
env = {{ MODEL_CLASS = "testmodels:CrashingSetup" }}
"""


def ours(client: Any) -> list[dict[str, Any]]:
    """Containers carrying our label (one listing call, so none vanishes between listing and reading)."""
    return list(client.api.containers(all=True, filters={"label": "serverless-model"}))


def replica_ids(client: Any) -> set[str]:
    """The replica ids on our containers."""
    return {c["Labels"]["serverless-model.replica"] for c in ours(client)}


def submit(platform: Platform, model: str, body: Any, wait: float = 0) -> dict[str, Any]:
    """POST a job and return the job as answered."""
    response = requests.post(f"{platform.url}/v1/models/{model}/jobs", json=body, params={"wait": wait},
                             timeout=wait + 30)
    assert response.status_code in (200, 202), response.text
    answer: dict[str, Any] = response.json()
    return answer


def model_view(platform: Platform, model: str) -> dict[str, Any]:
    """GET /v1/models/<model>."""
    answer: dict[str, Any] = requests.get(f"{platform.url}/v1/models/{model}", timeout=5).json()
    return answer


def events(platform: Platform, model: str) -> list[dict[str, Any]]:
    """The model's events, oldest first."""
    answer = requests.get(f"{platform.url}/v1/events", params={"model": model, "limit": 1000}, timeout=5).json()
    return list(reversed(answer["events"]))


class StartWatcher:
    """Sees each of our containers appear and times it from Docker's creation to its first 200 on GET /ok."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.cold_starts: dict[str, float] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def __enter__(self) -> "StartWatcher":
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join()

    def watch(self) -> None:
        pending: dict[str, tuple[float, str]] = {}
        while not self.stopping.is_set():
            for container in ours(self.client):
                replica = container["Labels"]["serverless-model.replica"]
                if replica not in pending and replica not in self.cold_starts:
                    try:
                        attrs = self.client.api.inspect_container(container["Id"])
                    except docker.errors.NotFound:
                        continue
                    env = dict(v.split("=", 1) for v in attrs["Config"]["Env"])
                    created = datetime.fromisoformat(attrs["Created"][:26].rstrip("Z") + "+00:00")
                    pending[replica] = (created.timestamp(), f"http://127.0.0.1:{env['PORT']}/ok")
            for replica, (created, url) in list(pending.items()):
                try:
                    if requests.get(url, timeout=0.5).status_code == 200:
                        self.cold_starts[replica] = time.time() - created
                        del pending[replica]
                except requests.RequestException:
                    pass
            time.sleep(0.01)


def test_burst_from_zero_scales_out_and_back_to_zero(make_platform: Callable[..., Platform],
                                                     docker_client: Any) -> None:
    platform = make_platform(backend="docker", models=SLEEPY.replace("@SERVICE_TIME@", "0.2"))
    platform.start("gateway", "worker", "autoscaler")
    assert model_view(platform, "sleepy")["replicas"] == []

    with StartWatcher(docker_client) as watcher, ThreadPoolExecutor(40) as pool:
        jobs = list(pool.map(lambda i: submit(platform, "sleepy", {"i": i}, wait=120), range(40)))
        time.sleep(0.5)

    assert [j["status"] for j in jobs] == ["SUCCEEDED"] * 40
    assert [j["output"]["echo"] for j in jobs] == [{"i": i} for i in range(40)]
    used = {j["replica"] for j in jobs}
    started = [e for e in events(platform, "sleepy") if e["kind"] == "ready"]
    print(f"replicas started: {len(started)}, used: {len(used)}, observed cold starts: {watcher.cold_starts}")
    assert 1 < len(started) <= 4 and len(used) > 1

    cold_start = model_view(platform, "sleepy")["averages"]["cold_start"]
    observed = [watcher.cold_starts[e["replica"]] for e in started]
    assert cold_start["samples"] == len(started)
    assert min(observed) - 0.25 <= cold_start["seconds"] <= max(observed) + 0.25, (cold_start, observed)

    platform.wait_until(lambda: model_view(platform, "sleepy")["replicas"] == [] and ours(docker_client) == [],
                        30, "replicas did not return to zero after the idle timeout")


@pytest.mark.parametrize("moment", ["replicas running", "mid scale-up"])
def test_autoscaler_killed_and_restarted_adopts_its_replicas(make_platform: Callable[..., Platform],
                                                            docker_client: Any, client: "redis.Redis",
                                                            moment: str) -> None:
    platform = make_platform(backend="docker", models=SLEEPY.replace("@SERVICE_TIME@", "0.5"))
    platform.start("gateway", "worker", "autoscaler")
    wanted = "READY" if moment == "replicas running" else "STARTING"
    with ThreadPoolExecutor(24) as pool:
        pending = [pool.submit(submit, platform, "sleepy", {"i": i}, 120) for i in range(24)]
        platform.wait_until(lambda: len([r for r in model_view(platform, "sleepy")["replicas"]
                                         if r["state"] == wanted]) >= (2 if wanted == "READY" else 1), 60,
                            f"no replica got {wanted}")
        platform.stop("autoscaler", sig=signal.SIGKILL)
        before = replica_ids(docker_client)
        stray = docker_client.containers.create(TEST_IMAGE, command=["sleep", "60"], labels={
            "serverless-model": "sleepy", "serverless-model.replica": STRAY,
            "serverless-model.namespace": platform.namespace})
        restarted = time.time()
        platform.start("autoscaler")
        jobs = [f.result() for f in pending]

    assert [j["status"] for j in jobs] == ["SUCCEEDED"] * 24
    assert len({j["replica"] for j in jobs}) >= 2  # the desired replicas were reached
    platform.wait_until(lambda: any(e["kind"] == "adopted" for e in events_of_all(platform)), 20,
                        "the new autoscaler adopted nothing (it leads once the killed one's lease lapsed)")
    ready_after_restart = [e for e in events(platform, "sleepy")
                           if e["kind"] == "ready" and datetime.fromisoformat(e["at"]).timestamp() >= restarted]
    if moment == "mid scale-up":
        assert ready_after_restart, "the replica that was starting at the kill never got ready"
    kinds = [(e["kind"], e["replica"]) for e in events(platform, "sleepy")] + \
            [(e["kind"], e["replica"]) for e in events_of_all(platform)]
    adopted = {replica for kind, replica in kinds if kind == "adopted"}
    strays = {replica for kind, replica in kinds if kind == "stray_removed"}
    assert adopted, kinds
    assert before <= adopted | strays  # a container created just before the kill was never registered
    assert ("stray_removed", STRAY) in kinds
    with pytest.raises(docker.errors.NotFound):
        stray.reload()
    registry = set(client.smembers(keys.replicas("sleepy")))
    assert replica_ids(docker_client) == registry
    assert len(registry) <= 4
    platform.wait_until(lambda: ours(docker_client) == [], 30, "replicas did not return to zero")


def events_of_all(platform: Platform) -> list[dict[str, Any]]:
    """Every event (strays belong to no model)."""
    answer = requests.get(f"{platform.url}/v1/events", params={"limit": 1000}, timeout=5).json()
    return list(answer["events"])


def test_failed_starts_fail_jobs_with_the_reason_and_the_autoscaler_keeps_running(
        make_platform: Callable[..., Platform], docker_client: Any) -> None:
    platform = make_platform(backend="docker", models=BROKEN)
    platform.start("gateway", "worker", "autoscaler")

    ghost = submit(platform, "ghost", {"x": 1}, wait=30)
    broken = submit(platform, "broken", {"x": 1}, wait=30)
    patient = submit(platform, "patient", {"x": 1})

    assert ghost["status"] == "FAILED" and ghost["error"]["code"] == "replica_start_failed"
    assert "not found locally" in ghost["error"]["message"]
    assert broken["status"] == "FAILED" and broken["error"]["code"] == "replica_start_failed"
    assert "setup failed: RuntimeError: cannot load weights" in broken["error"]["message"]
    platform.wait_until(lambda: any(e["kind"] == "start_failed" for e in events(platform, "patient")), 30,
                        "the patient model's start did not fail")
    time.sleep(1)
    assert requests.get(f"{platform.url}/v1/jobs/{patient['id']}", timeout=5).json()["status"] == "QUEUED"
    assert platform.processes["autoscaler"].poll() is None
    failures = [e for e in events(platform, "broken") if e["kind"] == "start_failed"]
    assert failures and "setup failed" in failures[0]["reason"]
    platform.wait_until(lambda: all(c["Labels"]["serverless-model"] == "patient" for c in ours(docker_client)), 20,
                        "failed replicas were left")
