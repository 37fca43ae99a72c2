"""The autoscaler process: its backend, clients and signals."""

import logging
import signal
import threading

from workers.config import Settings
from workers.execution.runner import http_pool
from workers.scaling.autoscaler import Autoscaler
from workers.scaling.backends import DockerBackend, ProcessBackend, ReplicaBackend
from workers.scaling.readiness import ReadinessProbe
from workers.store import Store, connect

log = logging.getLogger(__name__)


def make_backend(settings: Settings) -> ReplicaBackend:
    """The replica backend the settings name."""
    if settings.backend == "docker":
        import docker

        return DockerBackend(docker.from_env(timeout=settings.docker_timeout), settings.docker_network,
                             settings.namespace)
    return ProcessBackend(workdir=settings.models_file.resolve().parent, log_dir=settings.data_dir / "logs",
                          namespace=settings.namespace)


def run_autoscaler(settings: Settings, stop_replicas: bool = False) -> None:
    """Run the autoscaler until SIGINT or SIGTERM. Replicas keep serving after it leaves (the next leader adopts
    them), unless ``stop_replicas``: then the leader stops them on its way out (``serverless-model up``)."""
    store = Store.of(connect(settings.redis_url), settings.job_retention)
    models = settings.load_models()
    scaler = Autoscaler(models, store, make_backend(settings), ReadinessProbe(http_pool(8)),
                        orphan_after=settings.job_lease, removed_after=settings.removed_model_grace)
    lease = store.lease(settings.leader_lease)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    log.info("autoscaler up (%s backend) for %s", settings.backend, ", ".join(models))
    try:
        scaler.run(stopping, settings.scale_interval, lease)
    finally:
        if stop_replicas and (token := lease.hold()):
            scaler.stop_all(token)
        lease.release()
        log.info("autoscaler stopped")
