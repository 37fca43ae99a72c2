"""Many hosts on a real Docker Swarm: three network-namespace hosts, each with its own engine and its own Celery
worker; Redis, the gateway and the autoscaler in the root namespace, driving the swarm's manager (host 1)."""

import contextlib
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
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
        self.left: dict[str, float] = {}  # replica id → when it was first seen out of routing (or gone)
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
            except (requests.RequestException, ValueError):
                self.stopping.wait(0.1)
                continue
            now, routed = time.time(), set()
            for replica in view.get("replicas", []):
                if replica["state"] in ("READY", "DRAINING"):
                    self.seen.setdefault(replica["id"], {}).update(replica)
                if replica["state"] == "READY":
                    routed.add(replica["id"])
            for replica_id in set(self.seen) - routed - set(self.left):
                self.left[replica_id] = now
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
    colds = requests.get(f"{platform.url}/v1/models/sleepy", timeout=5).json()["cold_starts"]
    assert colds and all(cold["host"] == hosts[cold["replica"]] for cold in colds), (colds, hosts)
    assert all({"placed", "process_up", "ready"} <= set(cold["stages"]) and cold["stages"]["placed"] > 0
               and abs(sum(cold["stages"].values()) - cold["total"]) < 1e-3 for cold in colds), colds
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


GPU = f"""
[models.sleepy]
image = "{TEST_IMAGE}"
gpus = 1
concurrency = 1
max_replicas = 4
idle_timeout = 30
start_timeout = 60
cpus = 0.1
memory = "256m"
on_start_failure = "wait"
cold_start_seed = 2.0
service_time_seed = 2.0
env = {{ MODEL_CLASS = "testmodels:Sleepy", SERVICE_TIME = "2" }}
"""


def containers(swarm: SwarmRig, namespace: str) -> dict[int, list[dict[str, Any]]]:
    """The running containers of the platform's replicas on each host, inspected."""
    found: dict[int, list[dict[str, Any]]] = {}
    for host in swarm.hosts:
        engine = swarm.engine(host)
        found[host] = [engine.api.inspect_container(c["Id"]) for c in engine.api.containers(
            filters={"label": f"serverless-model.namespace={namespace}"})]
    return found


def test_a_gpu_replica_lands_only_where_a_gpu_is_free_and_one_too_many_is_a_failed_start_with_swarms_reason(
        make_swarm_platform: Callable[..., Platform], swarm: SwarmRig) -> None:
    platform = make_swarm_platform(models=GPU)
    platform.start("gateway", "autoscaler")
    start_workers(platform, swarm)
    ids = submit(platform, 12)  # 24 s of work on replicas that each hold one of the swarm's three GPUs
    platform.wait_until(lambda: events(platform, "start_failed"), 90, "a fourth GPU replica did not fail to start")
    reason = events(platform, "start_failed")[0]["reason"]
    assert "no node can take it: no suitable node" in reason and "insufficient resources" in reason, reason
    platform.wait_until(lambda: sum(len(found) for found in containers(swarm, platform.namespace).values()) == 3,
                        60, "three GPU replicas did not run")
    placed = containers(swarm, platform.namespace)
    assert placed[1] == [] and len(placed[2]) == 1 and len(placed[3]) == 2, {h: len(c) for h, c in placed.items()}
    devices = [dict(v.split("=", 1) for v in c["Config"]["Env"]).get("DOCKER_RESOURCE_GPU") for h in placed
               for c in placed[h]]
    assert sorted(devices) == ["GPU-aaa", "GPU-bbb", "GPU-ccc"], devices  # each device given to one replica
    def hosts() -> dict[str, dict[str, Any]]:
        return {host["name"]: host for host in requests.get(f"{platform.url}/v1/hosts", timeout=5).json()["hosts"]}

    platform.wait_until(lambda: sum(len(h["replicas"]) for h in hosts().values()) == 3, 30,
                        "GET /v1/hosts does not show the three replicas")
    shown = hosts()
    assert {name: (h["state"], h["address"], h["gpus"], len(h["replicas"])) for name, h in shown.items()} == {
        swarm.name(1): ("ready", swarm.address(1), [], 0), swarm.name(2): ("ready", swarm.address(2), ["GPU-ccc"], 1),
        swarm.name(3): ("ready", swarm.address(3), ["GPU-aaa", "GPU-bbb"], 2)}
    jobs = finished(platform, ids, timeout=120)
    assert {job["status"] for job in jobs.values()} == {"SUCCEEDED"}


def test_a_hosts_engine_killed_mid_burst_loses_nothing_and_its_replicas_are_replaced_elsewhere(
        make_swarm_platform: Callable[..., Platform], swarm: SwarmRig) -> None:
    platform = make_swarm_platform(models=SLEEPY.replace("@MIN@", "0").replace('SERVICE_TIME = "0.3"',
                                                                               'SERVICE_TIME = "0.5"'))
    platform.start("gateway", "autoscaler")
    start_workers(platform, swarm)
    victim = swarm.name(2)
    try:
        with ReplicaWatcher(platform) as watcher:
            ids = submit(platform, 100)  # about 50 s of work for one replica
            platform.wait_until(lambda: any(r["host"] == victim and r["in_flight"] for r in watcher.seen.values()),
                                90, f"no replica on {victim} ran a job")
            killed_at = time.time()
            swarm.kill_engine(2)  # its containers keep answering: only the manager's view of the node tells
            jobs = finished(platform, ids, timeout=240)
            orphans = {replica_id for replica_id, replica in watcher.seen.items() if replica["host"] == victim}
        assert {job["status"] for job in jobs.values()} == {"SUCCEEDED"}, "a job was lost"
        failed = {event["replica"]: event["at"] for event in events(platform, "replica_failed")}
        assert orphans <= set(failed), f"replicas of {victim} not taken out of routing: {orphans - set(failed)}"
        out_after = max(watcher.left[replica_id] - killed_at for replica_id in orphans)
        print(f"the replicas of {victim} left routing {out_after:.1f} s after its engine was killed")
        assert out_after < 30, out_after  # Swarm sees the node down in 2-3 s (1 s heartbeat), the sweep in 1 s more
        reasons = [event["reason"] for event in events(platform, "replica_failed") if event["replica"] in orphans]
        assert all(f"its node {victim} is down" in reason for reason in reasons), reasons
        late = [job for job in jobs.values() if job["replica"] in orphans and
                started_at(job) > watcher.left[job["replica"]]]
        assert late == [], f"{len(late)} job(s) started on {victim}'s replicas after they left routing"
        replacements = {replica_id: replica for replica_id, replica in watcher.seen.items()
                        if iso_seconds(replica["started_at"]) > killed_at}
        assert replacements and {r["host"] for r in replacements.values()} <= {swarm.name(1), swarm.name(3)}, \
            replacements
    finally:
        swarm.start_engine(2)
    platform.wait_until(lambda: victim in swarm.ready_nodes(), 60, f"{victim} did not come back")
    platform.wait_until(lambda: containers(swarm, platform.namespace)[2] == [], 60,
                        f"{victim} kept its orphaned replicas")
    services = swarm.engine(1).services.list(filters={"label": f"serverless-model.namespace={platform.namespace}"})
    replica_ids = [service.attrs["Spec"]["Labels"]["serverless-model.replica"] for service in services]
    assert len(replica_ids) == len(set(replica_ids))
    assert [requests.get(f"{platform.url}/v1/jobs/{job_id}", timeout=5).json()["status"] for job_id in ids] == \
        ["SUCCEEDED"] * len(ids)


def iso_seconds(text: str) -> float:
    """An ISO time of the API as epoch seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def started_at(job: dict[str, Any]) -> float:
    """When a job started on its replica (its creation plus its queue wait)."""
    return iso_seconds(job["created_at"]) + job["timings"]["queue_wait"]


def test_build_copies_each_models_image_onto_every_node_keeping_its_id(swarm: SwarmRig, docker_client: Any,
                                                                       tmp_path: Path) -> None:
    image = f"serverless-model/copied:{secrets.token_hex(4)}"
    docker_client.images.get(TEST_IMAGE).tag(image)
    (tmp_path / "models.toml").write_text(f'[models.copied]\nimage = "{image}"\n')
    env = {**os.environ, "SM_MODELS_FILE": str(tmp_path / "models.toml"),
           "SM_ENGINES": ",".join(swarm.socket(host) for host in swarm.hosts)}
    try:
        for _ in range(2):  # the second time, every node has it already
            build = subprocess.run([sys.executable, "-m", "workers.cli", "build"], env=env, capture_output=True,
                                   text=True, timeout=600, check=False)
            assert build.returncode == 0, build.stdout + build.stderr
        assert build.stdout.count(" has ") == len(swarm.hosts), build.stdout
        local = docker_client.images.get(image).id
        assert [swarm.engine(host).images.get(image).id for host in swarm.hosts] == [local] * len(swarm.hosts)
    finally:
        for engine in [docker_client, *(swarm.engine(host) for host in swarm.hosts)]:
            with contextlib.suppress(Exception):
                engine.images.remove(image)
