"""Many hosts on a real Docker Swarm: three network-namespace hosts, each with its own engine and its own Celery
worker; Redis, the gateway and the autoscaler in the root namespace, driving the swarm's manager (host 1)."""

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import requests

from tests.integration.platform import TEST_IMAGE, Platform
from tests.integration.swarm_rig import SwarmRig
from workers.store import keys

pytestmark = [pytest.mark.docker, pytest.mark.swarm, pytest.mark.integration]

SLEEPY = f"""
[models.sleepy]
image = "{TEST_IMAGE}"
concurrency = 1
max_replicas = 6
min_replicas = @MIN@
idle_timeout = 4
start_timeout = 60
cpus = 0.1
memory = "256m"
cold_start_seed = 2.0
service_time_seed = 0.3
env = {{ MODEL_CLASS = "testmodels:Sleepy", SERVICE_TIME = "0.3" }}
"""


def start_workers(platform: Platform, swarm: SwarmRig, concurrency: int = 6) -> None:
    """A Celery worker inside each host, telling its host's name."""
    for host in swarm.hosts:
        name = f"worker{host}"
        platform.processes[name] = swarm.spawn(
            host, [sys.executable, "-m", "workers.cli", "worker", "--concurrency", str(concurrency), "--name",
                   f"{name}@%h"], {**platform.env, "SM_HOST": swarm.name(host)}, platform.workdir / f"{name}.log")


def submit(platform: Platform, count: int, body: dict[str, Any] | None = None) -> list[str]:
    """POST ``count`` jobs of sleepy (no wait): their ids."""
    ids = []
    for _ in range(count):
        response = requests.post(f"{platform.url}/v1/models/sleepy/jobs", json=body or {"x": 1}, timeout=10)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def finished(platform: Platform, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Each job once it finished (the test fails if one did not in time)."""
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(ids) and time.monotonic() < deadline:
        for job_id in set(ids) - set(done):
            job = requests.get(f"{platform.url}/v1/jobs/{job_id}", timeout=10).json()
            if job["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
                done[job_id] = job
        time.sleep(0.2)
    assert len(done) == len(ids), f"{len(ids) - len(done)} job(s) unfinished after {timeout} s:\n" + \
        platform.log("autoscaler")[-3000:]
    return done


def events(platform: Platform, kind: str) -> list[dict[str, Any]]:
    """The model's events of one kind, oldest first."""
    answer = requests.get(f"{platform.url}/v1/events", params={"model": "sleepy", "limit": 1000}, timeout=5).json()
    return [event for event in reversed(answer["events"]) if event["kind"] == kind]


class ReplicaWatcher:
    """Keeps the last view of every replica of sleepy while it exists (its host, its last use)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.seen: dict[str, dict[str, Any]] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def __enter__(self) -> "ReplicaWatcher":
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join()

    def watch(self) -> None:
        while not self.stopping.is_set():
            try:
                view = requests.get(f"{self.platform.url}/v1/models/sleepy", timeout=5).json()
            except requests.RequestException:
                continue
            for replica in view.get("replicas", []):
                if replica["state"] in ("READY", "DRAINING"):
                    self.seen.setdefault(replica["id"], {}).update(replica)
            self.stopping.wait(0.1)

    def hosts(self) -> dict[str, str]:
        """Replica id → host."""
        return {replica_id: replica["host"] for replica_id, replica in self.seen.items()}


def test_a_burst_from_zero_spreads_over_the_hosts_and_the_idlest_replica_stops_first(
        make_swarm_platform: Callable[..., Platform], swarm: SwarmRig) -> None:
    platform = make_swarm_platform(models=SLEEPY.replace("@MIN@", "0"))
    platform.start("gateway", "autoscaler")
    start_workers(platform, swarm)
    with ReplicaWatcher(platform) as watcher:
        ids = submit(platform, 48)
        jobs = finished(platform, ids, timeout=180)
        assert {job["status"] for job in jobs.values()} == {"SUCCEEDED"}, [j for j in jobs.values()
                                                                           if j["status"] != "SUCCEEDED"][:3]
        platform.wait_until(lambda: requests.get(f"{platform.url}/v1/models/sleepy", timeout=5).json()["replicas"]
                            == [], 60, "not back to zero after idle")
    hosts = watcher.hosts()
    assert set(hosts.values()) == {swarm.name(host) for host in swarm.hosts}, hosts  # replicas on every host
    ran_on = {hosts[job["replica"]] for job in jobs.values()}
    assert ran_on == set(hosts.values()), f"jobs ran on replicas of {ran_on} only"
    stopped = [event["replica"] for event in events(platform, "scale_down")]
    assert sorted(stopped) == sorted(hosts), (stopped, hosts)
    idle_since = {replica_id: replica["last_used"] or replica["ready_at"]
                  for replica_id, replica in watcher.seen.items()}
    assert stopped == sorted(stopped, key=lambda replica_id: idle_since[replica_id]), (stopped, idle_since)
    assert swarm.engine(1).services.list(filters={"label": f"serverless-model.namespace={platform.namespace}"}) == []


def test_a_worker_runs_its_jobs_on_a_replica_of_its_own_host(make_swarm_platform: Callable[..., Platform],
                                                              swarm: SwarmRig) -> None:
    platform = make_swarm_platform(models=SLEEPY.replace("@MIN@", "3"))
    platform.start("gateway", "autoscaler")
    platform.wait_until(lambda: len({r["host"] for r in requests.get(f"{platform.url}/v1/models/sleepy", timeout=5)
                                     .json()["replicas"] if r["state"] == "READY"}) == 3, 90,
                        "three replicas on three hosts did not become ready")
    start_workers(platform, swarm)
    client = redis.Redis.from_url(platform.env["REDIS_URL"], decode_responses=True)
    replicas = {r["id"]: r["host"] for r in requests.get(f"{platform.url}/v1/models/sleepy", timeout=5).json()
                ["replicas"]}
    for _ in range(12):  # one at a time: the worker that takes it always has a free replica on its own host
        [job_id] = submit(platform, 1)
        job = finished(platform, [job_id], timeout=60)[job_id]
        assert job["status"] == "SUCCEEDED"
        worker = client.hget(keys.job(job_id), "worker") or ""
        assert worker.startswith(f"{replicas[job['replica']]}:"), (worker, replicas[job["replica"]])
