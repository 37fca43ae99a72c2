"""The scaling loop: start replicas when jobs wait, stop them when they have idled.

The policy here is deliberately minimal (enough replicas for the work at hand, within the model's
bounds; scale to zero after ``idle_timeout``). Each tick reconciles the registry against the policy;
a submit wakes the loop at once, so a job never waits a whole tick for its first replica.
"""

import logging
import math
import signal
import threading
import time
import uuid
from collections.abc import Callable

import redis
import requests

from workers import keys
from workers.backends import DockerBackend, ProcessBackend, ReplicaBackend, StartFailed
from workers.config import ModelConfig, Settings
from workers.jobs import JobStore
from workers.registry import Replica, ReplicaRegistry, ReplicaState

log = logging.getLogger(__name__)

READY_POLL = 0.02  # seconds between GET /ok while a replica starts
LIVE = (ReplicaState.STARTING, ReplicaState.READY)


def desired_replicas(work: int, concurrency: int, low: int, high: int) -> int:
    """Enough replicas for ``work`` jobs at ``concurrency`` each, within [low, high]."""
    return max(low, min(high, math.ceil(work / concurrency)))


def setup_failure(response: requests.Response) -> str:
    """The reason in a replica's ``GET /ok`` answer if its setup failed, else ""."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict) and body.get("status") == "SETUP_FAILED":
        return f"setup failed: {body.get('error')}"
    return ""


class Autoscaler:
    """Keeps each model's replicas in line with its work."""

    def __init__(self, models: dict[str, ModelConfig], registry: ReplicaRegistry, store: JobStore,
                 backend: ReplicaBackend, clock: Callable[[], float] = time.time) -> None:
        self.models = models
        self.registry = registry
        self.store = store
        self.backend = backend
        self.clock = clock
        self.http = requests.Session()

    def run(self, stopping: threading.Event, interval: float) -> None:
        """Tick until ``stopping`` is set; a submit wakes the loop early."""
        while not stopping.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("autoscaler tick failed")
            if self.registry.redis.blpop([keys.SCALE], timeout=interval):
                self.registry.redis.delete(keys.SCALE)

    def tick(self) -> None:
        """Reconcile every model once."""
        for model in self.models.values():
            self.reconcile(model)

    def reconcile(self, model: ModelConfig) -> None:
        """Remove dead replicas, start missing ones, stop idle surplus ones."""
        replicas = [r for r in self.registry.list(model.name) if not self.reap(r)]
        live = [r for r in replicas if r.state in LIVE]
        work = self.store.queue_depth(model.name) + self.store.in_flight(model.name)
        want = desired_replicas(work, model.concurrency, model.min_replicas, model.max_replicas)
        for _ in range(want - len(live)):
            self.start(model)
        surplus = len(live) - want
        idle_before = self.clock() - model.idle_timeout
        for replica in sorted(live, key=lambda r: r.idle_since):
            if surplus > 0 and self.registry.drain_if_idle(replica, idle_before):
                log.info("stopping idle replica %s of %s", replica.id, model.name)
                self.stop(replica)
                surplus -= 1

    def reap(self, replica: Replica) -> bool:
        """Stop and forget a replica that failed or whose process died; True if it was removed."""
        if replica.state is ReplicaState.STARTING:
            return False  # its readiness watcher decides
        if replica.state is ReplicaState.READY and self.backend.alive(replica.handle):
            return False
        log.warning("removing replica %s of %s (%s): %s", replica.id, replica.model, replica.state,
                    replica.reason or "process exited")
        self.stop(replica)
        return True

    def start(self, model: ModelConfig) -> None:
        """Start one replica and watch it become ready."""
        replica_id = uuid.uuid4().hex[:12]
        started = self.clock()
        try:
            launched = self.backend.start(model, replica_id)
        except StartFailed as exc:
            log.error("cannot start a replica of %s: %s", model.name, exc)
            return
        replica = Replica(id=replica_id, model=model.name, backend=self.backend.name, endpoint=launched.endpoint,
                          handle=launched.handle, state=ReplicaState.STARTING, started_at=started)
        self.registry.add(replica)
        log.info("started replica %s of %s at %s", replica_id, model.name, launched.endpoint)
        threading.Thread(target=self.await_ready, args=(model, replica), daemon=True).start()

    def await_ready(self, model: ModelConfig, replica: Replica) -> None:
        """Poll ``GET /ok`` until the replica is ready, fails, or misses its deadline."""
        deadline = replica.started_at + model.start_timeout
        reason = f"not ready within {model.start_timeout:g} s"
        while self.clock() < deadline:
            if not self.backend.alive(replica.handle):
                reason = "exited before it was ready"
                break
            try:
                response = self.http.get(f"{replica.endpoint}/ok", timeout=1)
            except requests.RequestException:
                time.sleep(READY_POLL)
                continue
            if response.status_code == 200:
                self.registry.set_state(replica, ReplicaState.READY)
                self.registry.record(model.name, "cold_start", self.clock() - replica.started_at)
                return
            if setup_failed := setup_failure(response):
                reason = setup_failed
                break
            time.sleep(READY_POLL)
        log.error("replica %s of %s failed: %s", replica.id, model.name, reason)
        self.registry.set_state(replica, ReplicaState.FAILED, reason)

    def stop(self, replica: Replica) -> None:
        """Stop the replica and forget it."""
        self.backend.stop(replica.handle)
        self.registry.remove(replica)

    def stop_all(self) -> None:
        """Stop every replica of every model (on shutdown)."""
        for model in self.models:
            for replica in self.registry.list(model):
                self.stop(replica)


def make_backend(settings: Settings) -> ReplicaBackend:
    """The replica backend the settings name."""
    if settings.backend == "docker":
        import docker

        return DockerBackend(docker.from_env(), settings.docker_network)
    return ProcessBackend(workdir=settings.models_file.resolve().parent, log_dir=settings.data_dir / "logs")


def run_autoscaler(settings: Settings) -> None:
    """Run the scaling loop until SIGINT or SIGTERM, then stop every replica."""
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    scaler = Autoscaler(settings.load_models(), ReplicaRegistry(client),
                        JobStore(client, settings.job_retention), make_backend(settings))
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    log.info("autoscaler running (%s backend) for %s", settings.backend, ", ".join(scaler.models))
    try:
        scaler.run(stopping, settings.scale_interval)
    finally:
        try:
            scaler.stop_all()
        finally:
            scaler.backend.shutdown()
        log.info("autoscaler stopped; replicas removed")
