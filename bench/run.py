"""Start everything the benchmark needs, measure each figure beside its reference, and stop it all again."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from celery import Celery

from bench import reference
from bench.measure import Call, Http, descendants
from workers import polling
from workers.config import ModelConfig
from workers.embedded import start_embedded_redis
from workers.scaling.backends import NAMESPACE_LABEL, ProcessBackend, ReplicaBackend, free_port
from workers.scaling.readiness import READY_POLL
from workers.scaling.spec import ReplicaSpec
from workers.store import Store

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "bench"
BARE = "bench-bare"  # the bare replicas' own namespace: in the platform's, its autoscaler would stop them as strays
PAYLOAD = {"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}
BODY = json.dumps(PAYLOAD).encode()
CONCURRENCY = 8  # slots of a replica, and threads of the bare model server
MODELS = """
[models.iris]  # the hot path: one warm replica
command = ["python", "-m", "model.server"]
image = "serverless-model/iris:latest"
concurrency = {concurrency}
min_replicas = 1
max_replicas = 1
idle_timeout = 600

[models.iris-cold]  # cold starts: back to zero a second after each job
command = ["python", "-m", "model.server"]
image = "serverless-model/iris:latest"
concurrency = {concurrency}
max_replicas = 1
idle_timeout = 1

[models.iris-burst]  # scale reaction: from zero to two replicas and back
command = ["python", "-m", "model.server"]
image = "serverless-model/iris:latest"
concurrency = {concurrency}
max_replicas = 2
idle_timeout = 2
"""


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.005) -> None:
    """Poll ``condition`` until it holds; RuntimeError naming ``what`` after ``timeout`` seconds."""
    if not polling.wait_until(condition, timeout, interval):
        raise RuntimeError(f"timed out waiting for {what}")


def answers(url: str) -> bool:
    """Whether GET ``url`` answers 200."""
    try:
        return Http(url, timeout=2).request("GET", urlsplit(url).path or "/")[0] == 200
    except OSError:
        return False


@dataclass
class Processes:
    """The processes the benchmark started, each stopped (with its group) at the end."""

    workdir: Path
    env: dict[str, str]
    started: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        """Run ``argv`` in its own session, its output in ``<workdir>/<name>.log``."""
        with open(self.workdir / f"{name}.log", "ab") as log:
            process = subprocess.Popen(argv, cwd=ROOT, env={**self.env, **env}, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.started[name] = process
        return process

    def stop(self, *names: str) -> None:
        """SIGTERM the named processes (all if none named), SIGKILL after 20 s."""
        for name in names or list(self.started):
            process = self.started.pop(name, None)
            if process is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def pid(self, name: str) -> int:
        """The pid of a started process."""
        return self.started[name].pid


class Platform:
    """The platform's gateway, worker and autoscaler on one backend."""

    def __init__(self, processes: Processes, backend: str, port: int, flower: bool = True) -> None:
        self.processes = processes
        self.backend = backend
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.flower = flower  # as ``up`` runs it: Flower watching, the worker sending task events from the start
        self.names = [f"{backend}-{p}" for p in ("gateway", "worker", "autoscaler", *(["flower"] if flower else []))]

    def __enter__(self) -> "Platform":
        me = [sys.executable, "-m", "workers.cli"]
        gateway, worker, autoscaler = self.names[:3]
        events = ["--task-events"] if self.flower else []
        self.processes.start(gateway, [*me, "gateway", "--port", str(self.port)], SM_BACKEND=self.backend)
        self.processes.start(worker, [*me, "worker", "--name", f"bench-{self.backend}@%h", *events],
                             SM_BACKEND=self.backend)
        self.processes.start(autoscaler, [*me, "autoscaler"], SM_BACKEND=self.backend)
        if self.flower:
            flower_port = free_port()
            self.processes.start(self.names[3], [*me, "flower", "--port", str(flower_port)])
            wait_until(lambda: answers(f"http://127.0.0.1:{flower_port}/healthcheck"), 60, "Flower")
        wait_until(lambda: answers(f"{self.url}/healthz"), 60, "the gateway")
        return self

    def __exit__(self, *_: object) -> None:
        self.processes.stop(*self.names)

    def model(self, name: str) -> dict[str, Any]:
        """GET /v1/models/<name>."""
        status, body = Http(self.url).request("GET", f"/v1/models/{name}")
        if status != 200:
            raise RuntimeError(f"GET /v1/models/{name}: {status} {body[:200]!r}")
        return dict(json.loads(body))

    def ready_replicas(self, name: str) -> int:
        """How many of the model's replicas are READY."""
        return sum(r["state"] == "READY" for r in self.model(name)["replicas"])

    def submit_call(self, name: str, wait: float = 60) -> Call:
        """A call that submits one job with ?wait= and checks that it succeeded."""
        return submit_call(self.url, name, wait)

    def replica_pids(self) -> list[int]:
        """The processes of its running replicas (each replica's tree)."""
        found = ProcessBackend(ROOT, self.processes.workdir / "data" / "logs", NAMESPACE).running()
        return [pid for replica in found.values() for pid in descendants(int(replica.handle))]

    def trees(self, replicas: list[int]) -> dict[str, list[int]]:
        """Each of its processes' trees by name (gateway, worker, autoscaler, flower), the ``replicas`` left out."""
        return {name.split("-", 1)[1]: [p for p in descendants(self.processes.pid(name)) if p not in replicas]
                for name in self.names}

    def events(self, client: redis.Redis, name: str, since: float) -> list[tuple[float, str]]:
        """(time, kind) of the model's events since ``since``, oldest first."""
        return sorted((e.at, e.kind) for e in Store.of(client).events.recent(name) if e.at >= since)


def submit_call(url: str, name: str, wait: float = 60) -> Call:
    """A call that submits one job of model ``name`` to the gateway at ``url`` with ?wait= and checks that it
    succeeded."""
    client = Http(url)
    path = f"/v1/models/{name}/jobs?wait={wait:g}"

    def call() -> None:
        status, body = client.request("POST", path, BODY)
        if status != 200 or b'"SUCCEEDED"' not in body:
            raise RuntimeError(f"job did not succeed: {status} {body[:300]!r}")

    return call


def direct_call(url: str) -> Call:
    """A call that POSTs straight to a model server."""
    client = Http(url)

    def call() -> None:
        status, body = client.request("POST", "/", BODY)
        if status != 200:
            raise RuntimeError(f"model server answered {status}: {body[:300]!r}")

    return call


def celery_call(app: Celery, task: str, *args: Any) -> Callable[[], Call]:
    """Calls of a reference task of ``app`` through ``.delay().get()``."""
    def make() -> Call:
        sent = app.tasks[task]

        def call() -> None:
            sent.delay(*args).get(timeout=30)

        return call

    return make


@contextlib.contextmanager
def environment(workdir: Path, fsync: str = "always") -> Iterator[tuple[Processes, str]]:
    """Redis and a process table for the run; everything started is stopped afterwards."""
    redis_url, redis_process = start_embedded_redis(workdir / "redis", fsync=fsync)
    models_file = workdir / "models.toml"
    models_file.write_text(MODELS.format(concurrency=CONCURRENCY))
    env = {**os.environ, "REDIS_URL": redis_url, "SM_MODELS_FILE": str(models_file),
           "SM_DATA_DIR": str(workdir / "data"), "SM_NAMESPACE": NAMESPACE, "PYTHONDONTWRITEBYTECODE": "",
           "PYTHONPATH": str(ROOT)}
    processes = Processes(workdir, env)
    processes.started["redis"] = redis_process
    try:
        yield processes, redis_url
    finally:
        processes.stop(*[n for n in processes.started if n != "redis"])
        for namespace in (NAMESPACE, BARE):
            for replica in ProcessBackend(ROOT, workdir / "data" / "logs", namespace).running().values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(replica.handle), signal.SIGKILL)
        remove_containers()
        processes.stop("redis")


def remove_containers() -> None:
    """Remove the benchmark's containers (found by their namespace label)."""
    if not shutil.which("docker"):
        return
    found = [c for namespace in (NAMESPACE, BARE) for c in subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={NAMESPACE_LABEL}={namespace}"], capture_output=True, text=True,
        check=False).stdout.split()]
    if found:
        subprocess.run(["docker", "rm", "-f", *found], capture_output=True, check=False)


def bare_start(backend: ReplicaBackend, model: ModelConfig) -> float:
    """Seconds from the backend starting a replica, with no platform around it, to ``GET /ok`` answering 200.

    It polls as often as the autoscaler does: polling faster slows the starting replica down.
    """
    started = time.perf_counter()
    launched = backend.start(ReplicaSpec.of(model, uuid.uuid4().hex[:12]))
    try:
        wait_until(lambda: answers(f"{launched.endpoint}/ok"), 60, "the bare replica", interval=READY_POLL)
        return time.perf_counter() - started
    finally:
        backend.stop(launched.handle)


def from_zero(platform: Platform, model: str) -> float:
    """Seconds from submitting a job to a model at zero replicas to its result."""
    wait_until(lambda: not platform.model(model)["replicas"], 60, f"{model} to scale to zero", interval=0.1)
    call = platform.submit_call(model)
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def start_reference_worker(processes: Processes, app: Celery, name: str = "reference-worker") -> None:
    """A plain Celery worker of ``app``'s Redis on the reference tasks' queue, with the platform worker's pool and
    concurrency."""
    processes.start(name, [sys.executable, "-m", "celery", "-A", "bench.reference", "worker", "-Q", reference.QUEUE,
                           "--pool", "threads", "--concurrency", "16", "--without-gossip", "--without-mingle",
                           "--loglevel", "WARNING"], REDIS_URL=str(app.conf.broker_url))
    wait_until(lambda: app.tasks["bench.echo"].delay(1).get(timeout=60) == 1, 60, f"the {name}")


def burst(platform: Platform, client: redis.Redis, jobs: int, senders: int = 8) -> dict[str, Any]:
    """Submit ``jobs`` at once to a model at zero; sample its queue and replicas until it is back at zero."""
    model = "iris-burst"
    wait_until(lambda: not platform.model(model)["replicas"], 60, f"{model} at zero", interval=0.1)
    samples: list[tuple[float, int, int, int, int]] = []
    ids: list[str] = []
    began = time.time()

    def send(count: int) -> None:
        http = Http(platform.url)
        for _ in range(count):
            status, body = http.request("POST", f"/v1/models/{model}/jobs", BODY)
            if status != 202:
                raise RuntimeError(f"submit answered {status}: {body[:200]!r}")
            ids.append(json.loads(body)["id"])

    shares = [jobs // senders + (i < jobs % senders) for i in range(senders)]
    threads = [threading.Thread(target=send, args=(share,), daemon=True) for share in shares]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        view = platform.model(model)
        ready = sum(r["state"] == "READY" for r in view["replicas"])
        samples.append((time.time() - began, view["queue_depth"], view["running"], ready, len(view["replicas"])))
        if not any(t.is_alive() for t in threads) and not view["replicas"]:
            break
        time.sleep(0.05)
    store = Store.of(client)
    succeeded = sum((found := store.jobs.get(i)) is not None and found.status == "SUCCEEDED" for i in ids)
    events = platform.events(client, model, began)
    first = {kind: next((at - began for at, k in events if k == kind), None) for kind in ("scale_up", "ready")}
    ready_times = [at - began for at, k in events if k == "ready"]
    return {"jobs": len(ids), "succeeded": succeeded, "first_scale_up_s": first["scale_up"],
            "first_ready_s": first["ready"], "all_ready_s": max(ready_times) if ready_times else None,
            "replicas_started": len(ready_times), "samples": samples}
