"""The Celery app: JSON only, one queue per model, events on for Flower; ``run_job`` is its one task.

Start a worker with ``serverless-model worker`` (it names the queues of every declared model).
"""

import functools
import logging
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_init

from workers import runner
from workers.config import Settings
from workers.jobs import JobStore
from workers.registry import ReplicaRegistry

TASK_NAME = "workers.run_job"


def create_celery(settings: Settings) -> Celery:
    """A Celery app on the settings' Redis."""
    app = Celery("serverless_model", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # results live in our job store
        # Early acks and no ack emulation, on purpose. The job record is the source of truth: a task claims
        # its job with a lease that it renews, and the autoscaler's reaper sends the job again when a lease
        # runs out or when a queued job has no live claim and no waiting message. With late acks kombu's
        # Redis transport kills the worker when a task acks after a broker reconnect ('NoneType' object has
        # no attribute 'client'); its emulated acks would only bring a lost message back after a visibility
        # timeout, and cost two round trips per message.
        task_acks_late=False,
        worker_pool="workers.pool:ThreadPool",  # threads: a task mostly waits on its replica
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=True,  # take a message only when a thread is free to run it at once
        worker_send_task_events=False,
        # no task-sent events: they would cost the gateway a second publish per job (Flower shows a task
        # from its task-received event on)
        broker_connection_retry_on_startup=True,
        broker_transport_options={"ack_emulation": False, "socket_timeout": 5, "socket_connect_timeout": 2},
        broker_connection_timeout=2,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2,
                                   "interval_max": 0.5},
        # not worker_cancel_long_running_tasks_on_connection_loss: with it the worker process dies while it
        # reconnects (celery #7185, #9250); a task that runs on through a reconnect is harmless, since only
        # the holder of a job's current claim can commit it
        worker_hijack_root_logger=False,
    )
    return app


@functools.cache
def worker_context() -> runner.WorkerContext:
    """The clients of this worker process, made once."""
    settings = Settings()
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    store = JobStore(client, settings.job_retention)
    return runner.WorkerContext(
        models=settings.load_models(),
        store=store,
        registry=ReplicaRegistry(client),
        http=runner.http_pool(),
        leases=runner.LeaseKeeper(store, settings.job_lease),
    )


app = create_celery(Settings())


@worker_init.connect  # type: ignore[untyped-decorator]
def quiet_task_logs(**_: Any) -> None:
    """No log line per task received and per task done: the jobs API and Flower show them, for less CPU."""
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)


@app.task(name=TASK_NAME)  # type: ignore[untyped-decorator]
def run_job(job_id: str, model: str = "") -> None:
    """Run one job (a thin adapter over ``runner.run_job``)."""
    runner.run_job(job_id, worker_context(), model)
