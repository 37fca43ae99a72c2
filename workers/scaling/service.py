"""The autoscaler process: its backend, clients and signals."""

import logging
import signal
import threading

import redis

from workers.config import Settings
from workers.scaling.autoscaler import Autoscaler
from workers.scaling.backends import DockerBackend, ProcessBackend, ReplicaBackend
from workers.scaling.readiness import ReadinessProbe
from workers.store import Store, connect

log = logging.getLogger(__name__)


def make_backend(settings: Settings, namespace: str) -> ReplicaBackend:
    """The replica backend the settings name, marking and finding the replicas of ``namespace``."""
    if settings.backend == "swarm":
        import docker

        from workers.scaling.swarm import SwarmBackend, port_range

        return SwarmBackend(docker.from_env(timeout=settings.docker_timeout), namespace, settings.swarm_pull,
                            port_range(settings.swarm_ports))
    if settings.backend == "docker":
        import docker

        return DockerBackend(docker.from_env(timeout=settings.docker_timeout), settings.docker_network, namespace)
    return ProcessBackend(workdir=settings.models_file.resolve().parent, log_dir=settings.data_dir / "logs",
                          namespace=namespace)


def run_autoscaler(settings: Settings, stop_replicas: bool = False) -> None:
    """Run the autoscaler until SIGINT or SIGTERM. Replicas keep serving after it leaves (the next leader adopts
    them), unless ``stop_replicas``: then the leader stops them on its way out (``serverless-model up``)."""
    store = Store.of(connect(settings.redis_url), settings.job_retention)
    models = settings.load_models()
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    namespace = settings.namespace or namespace_of(store, stopping, settings.scale_interval)
    if namespace is None:
        return
    scaler = Autoscaler(models, store, make_backend(settings, namespace), ReadinessProbe(),
                        orphan_after=settings.job_lease, removed_after=settings.removed_model_grace)
    leadership = store.leadership(settings.leader_lease)
    log.info("autoscaler up (%s backend, namespace %s) for %s", settings.backend, namespace, ", ".join(models))
    try:
        scaler.run(stopping, settings.scale_interval, leadership)
    finally:
        if stop_replicas and (token := leadership.hold()):
            scaler.stop_all(token)
        leadership.release()
        log.info("autoscaler stopped")


def namespace_of(store: Store, stopping: threading.Event, interval: float) -> str | None:
    """The deployment's namespace, kept in its Redis (one per Redis: two platforms on one host never take each
    other's replicas); asked again until Redis answers, None if stopped first."""
    while not stopping.is_set():
        try:
            return store.replicas.namespace()
        except redis.RedisError as exc:
            log.warning("cannot read the namespace from Redis yet: %s", exc)
            stopping.wait(interval)
    return None
