"""The Celery app: JSON only, one queue per model, events on for Flower; ``run_job`` is its one task.

Start a worker with ``serverless-model worker`` (it names the queues of every declared model).
"""

import functools
from typing import Any

import redis
from celery import Celery

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
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,
        task_send_sent_event=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600},
        worker_hijack_root_logger=False,
    )
    return app


@functools.cache
def worker_context() -> runner.WorkerContext:
    """The clients of this worker process, made once."""
    settings = Settings()
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    return runner.WorkerContext(
        models=settings.load_models(),
        store=JobStore(client, settings.job_retention),
        registry=ReplicaRegistry(client),
        http=runner.http_session(),
    )


app = create_celery(Settings())


@app.task(name=TASK_NAME, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
def run_job(self: Any, job_id: str) -> None:
    """Run one job (a thin adapter over ``runner.run_job``)."""
    delay = runner.run_job(job_id, worker_context())
    if delay is not None:
        raise self.retry(countdown=delay)
