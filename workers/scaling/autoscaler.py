"""The autoscaler process: observes each model, asks the policy, and reconciles replicas to its decision.

One autoscaler is active at a time (a lease in Redis; others stand by and take over when it lapses). On
taking the lease it adopts the replicas it finds by label and removes strays. It ticks every
``scale_interval`` seconds and also wakes at once on every submit. A replica not ready by its deadline is
killed, reported with the reason, and the next start backs off (see ``workers.policy``). Every decision
and lifecycle event goes to the event log with its reason.
"""

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable

import redis
import requests

from workers import keys
from workers.backends import DockerBackend, ProcessBackend, ReplicaBackend, StartFailed
from workers.celery_app import TASK_NAME, create_celery
from workers.config import ModelConfig, Settings
from workers.events import EventLog
from workers.jobs import Job, JobStore, Reaped
from workers.policy import Observation, Policy, ReplicaSnapshot, ScalingState, decide
from workers.registry import Replica, ReplicaRegistry, ReplicaState

log = logging.getLogger(__name__)

READY_POLL = 0.02  # seconds between GET /ok while a replica starts
WAKE_GAP = 0.05  # seconds at least between reconciles woken by submits
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    """Leadership among autoscalers: a Redis key holding the leader's token, renewed every tick."""

    def __init__(self, client: redis.Redis, ttl: float) -> None:
        self.redis = client
        self.ttl_ms = int(ttl * 1000)
        self.token = uuid.uuid4().hex
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)

    def hold(self) -> bool:
        """Take the lease if it is free, or renew it if ours; whether we hold it now."""
        if self.redis.set(keys.AUTOSCALER_LEASE, self.token, nx=True, px=self.ttl_ms):
            return True
        return bool(self._renew(keys=[keys.AUTOSCALER_LEASE], args=[self.token, self.ttl_ms]))

    def release(self) -> None:
        """Give the lease up if ours."""
        self._release(keys=[keys.AUTOSCALER_LEASE], args=[self.token])


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
    """Keeps each model's replicas where the policy wants them."""

    def __init__(self, models: dict[str, ModelConfig], registry: ReplicaRegistry, store: JobStore,
                 events: EventLog, backend: ReplicaBackend, enqueue: Callable[[Job], None],
                 clock: Callable[[], float] = time.time, orphan_after: float = 10.0) -> None:
        self.models = models
        self.orphan_after = orphan_after
        self.enqueue = enqueue
        self.registry = registry
        self.store = store
        self.events = events
        self.backend = backend
        self.clock = clock
        self.http = requests.Session()
        self.states = {name: ScalingState() for name in models}
        self.watched: set[str] = set()  # replicas whose readiness a thread of ours polls
        self.lock = threading.Lock()

    def run(self, stopping: threading.Event, interval: float, lease: Lease) -> None:
        """Tick while holding the lease, stand by otherwise, until ``stopping`` is set.

        A full tick (reaper, every model) runs every ``interval``; in between, a submit that names a model
        wakes us to reconcile that model alone. Wake-ups are coalesced: the names pushed while we work, and
        for ``WAKE_GAP`` after, wake us once, so a busy queue costs a few reconciles a second, not one a job.
        """
        leading = False
        woken: set[str] = set()
        last_full = 0.0
        while not stopping.is_set():
            try:
                if lease.hold():
                    if not leading:
                        log.info("active: adopting replicas")
                        self.adopt()
                    leading = True
                    if woken and time.monotonic() - last_full < interval:
                        for name in woken:
                            self.reconcile(self.models[name])
                        stopping.wait(WAKE_GAP)
                    else:
                        self.tick()
                        last_full = time.monotonic()
                elif leading:
                    log.warning("lease lost; standing by")
                    leading = False
                woken = self.wait_for_work(max(0.01, last_full + interval - time.monotonic()))
            except redis.RedisError as exc:
                log.error("redis unavailable: %s", exc)
                stopping.wait(interval)

    def wait_for_work(self, timeout: float) -> set[str]:
        """Sleep until ``timeout`` passes (an empty set) or submits wake us: the served models they named."""
        first = self.registry.redis.blpop([keys.SCALE], timeout=timeout)
        if first is None:
            return set()
        with self.registry.redis.pipeline() as pipe:
            pipe.lrange(keys.SCALE, 0, -1)
            pipe.delete(keys.SCALE)
            rest = pipe.execute()[0]
        return {first[1], *rest} & set(self.models)

    def adopt(self) -> None:
        """Match the registry against what runs: keep and watch the found, forget the lost, stop strays."""
        running = self.backend.running()
        known = set()
        for model in self.models.values():
            for replica in self.registry.list(model.name):
                known.add(replica.id)
                if replica.id not in running:
                    self.registry.remove(replica)
                    self.events.record(model.name, "lost", replica.id, "in the registry but not running")
                    continue
                self.events.record(model.name, "adopted", replica.id, replica.state.value)
                if replica.state is ReplicaState.STARTING:
                    self.watch(model, replica)
        for replica_id, handle in running.items():
            if replica_id not in known:
                self.backend.stop(handle)
                self.events.record("", "stray_removed", replica_id, f"running but not in the registry ({handle})")

    def tick(self) -> None:
        """Requeue the jobs of lost workers, then reconcile every model once."""
        self.reap_jobs()
        for model in self.models.values():
            self.reconcile(model)

    def reap_jobs(self) -> None:
        """Jobs whose lease ran out (their worker died or stalled) go back to the queue, or to dead letters."""
        now = self.clock()
        for job_id in self.store.expired_leases(now):
            job = self.store.get(job_id)
            if job is None:
                self.store.redis.zrem(keys.LEASES, job_id)
                continue
            model = self.models.get(job.model)
            outcome = self.store.expire_lease(job, model.max_attempts if model else 1, now)
            if outcome is Reaped.REQUEUE and model is not None:
                self.enqueue(job)
                self.events.record(job.model, "job_requeued", reason=f"job {job.id}: lease expired (worker lost)")
            elif outcome is Reaped.DEAD:
                self.events.record(job.model, "job_dead", reason=f"job {job.id}: worker lost on every attempt")
        for model in self.models.values():
            self.resend_orphans(model, now)

    def resend_orphans(self, model: ModelConfig, now: float) -> None:
        """Send again the QUEUED jobs that nobody holds while the model's Celery queue is empty.

        Their message was taken by a worker that died before it claimed the job (messages are not kept
        once taken), or their submit died between recording and sending. A duplicate is harmless: one
        task claims, the other returns.
        """
        if self.store.redis.llen(model.queue):
            return  # their messages may still be waiting there
        for job_id in self.store.unclaimed_since(model.name, now - self.orphan_after):
            job = self.store.get(job_id)
            if job is not None and self.store.mark_resent(job, now):
                self.enqueue(job)
                self.events.record(model.name, "job_requeued", reason=f"job {job.id}: its message was lost")

    def reconcile(self, model: ModelConfig) -> None:
        """Remove dead replicas, then start and stop what the policy decides."""
        replicas = [r for r in self.registry.list(model.name) if not self.reap(model, r)]
        now = self.clock()
        with self.lock:
            state = self.states[model.name]
        decision = decide(self.observe(model, replicas, now), Policy.of(model), state, now)
        if decision.start:
            self.events.record(model.name, "scale_up", reason=f"start {decision.start}: {decision.reason}")
            for _ in range(decision.start):
                self.start(model)
        by_id = {r.id: r for r in replicas}
        for replica_id in decision.stop:
            if self.registry.drain_if_idle(by_id[replica_id], now - model.idle_timeout):
                self.events.record(model.name, "scale_down", replica_id, f"idle: {decision.reason}")
                self.stop(by_id[replica_id])

    def observe(self, model: ModelConfig, replicas: list[Replica], now: float) -> Observation:
        """The model's load, replicas and averages now."""
        averages = self.registry.averages(model)
        return Observation(
            taken_at=now, queued=self.store.queue_depth(model.name), in_flight=self.store.in_flight(model.name),
            replicas=tuple(ReplicaSnapshot(r.id, r.state, r.in_flight, r.idle_since) for r in replicas),
            service_time=averages["service_time"].seconds, cold_start=averages["cold_start"].seconds,
        )

    def reap(self, model: ModelConfig, replica: Replica) -> bool:
        """Stop and forget a replica that failed, drained or died; True if it was removed."""
        if replica.state is ReplicaState.STARTING:
            if replica.id not in self.watched:
                self.watch(model, replica)
            return False
        if replica.state is ReplicaState.READY:
            if self.backend.alive(replica.handle):
                return False
            self.events.record(model.name, "replica_failed", replica.id, "exited while ready")
        elif replica.state is ReplicaState.FAILED:
            self.events.record(model.name, "replica_failed", replica.id, replica.reason)
        self.stop(replica)
        return True

    def start(self, model: ModelConfig) -> None:
        """Start one replica and watch it become ready."""
        replica_id = uuid.uuid4().hex[:12]
        started = self.clock()
        try:
            launched = self.backend.start(model, replica_id)
        except StartFailed as exc:
            self.start_failed(model, replica_id, str(exc))
            return
        replica = Replica(id=replica_id, model=model.name, backend=self.backend.name, endpoint=launched.endpoint,
                          handle=launched.handle, state=ReplicaState.STARTING, started_at=started)
        self.registry.add(replica)
        self.watch(model, replica)

    def watch(self, model: ModelConfig, replica: Replica) -> None:
        """Poll the replica's readiness in a thread of its own."""
        with self.lock:
            self.watched.add(replica.id)
        threading.Thread(target=self.await_ready, args=(model, replica), daemon=True).start()

    def await_ready(self, model: ModelConfig, replica: Replica) -> None:
        """Poll ``GET /ok`` until the replica is ready, fails, or misses its deadline."""
        try:
            reason = self.readiness(model, replica)
            if reason:
                self.registry.set_state(replica, ReplicaState.FAILED, reason)
                self.start_failed(model, replica.id, reason)
                return
            cold_start = self.clock() - replica.started_at
            self.registry.set_state(replica, ReplicaState.READY)
            self.registry.record(model.name, "cold_start", cold_start)
            with self.lock:
                self.states[model.name] = self.states[model.name].after_ready()
            self.events.record(model.name, "ready", replica.id, f"cold start {cold_start:.3f} s")
        finally:
            with self.lock:
                self.watched.discard(replica.id)

    def readiness(self, model: ModelConfig, replica: Replica) -> str:
        """Wait for the replica to answer ``GET /ok`` with 200: "" once it does, else why it never will."""
        deadline = replica.started_at + model.start_timeout
        while self.clock() < deadline:
            if not self.backend.alive(replica.handle):
                return "exited before it was ready"
            try:
                response = self.http.get(f"{replica.endpoint}/ok", timeout=1)
            except requests.RequestException:
                time.sleep(READY_POLL)
                continue
            if response.status_code == 200:
                return ""
            if reason := setup_failure(response):
                return reason
            time.sleep(READY_POLL)
        return f"not ready within the start timeout of {model.start_timeout:g} s"

    def start_failed(self, model: ModelConfig, replica_id: str, reason: str) -> None:
        """Record a failed start, back off, and let waiting jobs know."""
        with self.lock:
            self.states[model.name] = self.states[model.name].after_failure(Policy.of(model), self.clock())
        log.error("replica %s of %s failed to start: %s", replica_id, model.name, reason)
        self.registry.record_start_failure(model.name, reason)
        self.events.record(model.name, "start_failed", replica_id, reason)

    def stop(self, replica: Replica) -> None:
        """Stop the replica and forget it."""
        self.backend.stop(replica.handle)
        self.registry.remove(replica)

    def stop_all(self) -> None:
        """Stop every replica of every model (on shutdown)."""
        for model in self.models:
            for replica in self.registry.list(model):
                self.stop(replica)
                self.events.record(model, "scale_down", replica.id, "autoscaler shutting down")


def make_backend(settings: Settings) -> ReplicaBackend:
    """The replica backend the settings name."""
    if settings.backend == "docker":
        import docker

        return DockerBackend(docker.from_env(), settings.docker_network, settings.namespace)
    return ProcessBackend(workdir=settings.models_file.resolve().parent, log_dir=settings.data_dir / "logs",
                          namespace=settings.namespace)


def run_autoscaler(settings: Settings) -> None:
    """Run the autoscaler until SIGINT or SIGTERM; the active one then stops every replica."""
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    models = settings.load_models()
    celery = create_celery(settings)

    def enqueue(job: Job) -> None:
        celery.send_task(TASK_NAME, args=[job.id, job.model], queue=models[job.model].queue, declare=[])

    scaler = Autoscaler(models, ReplicaRegistry(client), JobStore(client, settings.job_retention),
                        EventLog(client), make_backend(settings), enqueue, orphan_after=settings.job_lease)
    lease = Lease(client, ttl=max(2.0, 4 * settings.scale_interval))
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    log.info("autoscaler up (%s backend) for %s", settings.backend, ", ".join(scaler.models))
    try:
        scaler.run(stopping, settings.scale_interval, lease)
    finally:
        if lease.hold():
            try:
                scaler.stop_all()
            finally:
                lease.release()
        scaler.backend.shutdown()
        log.info("autoscaler stopped")
