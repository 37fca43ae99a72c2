"""The Celery app: JSON only, one queue per model, early acks; ``workers.run_job`` is its one task.

Nothing happens at import: ``create_celery(settings)`` builds an app, and ``celery -A workers.execution.celery_app``
(a worker, or Flower) asks this module for ``app``, which builds one from the environment then. Start a worker with
``serverless-model worker`` (it names every model's queue).
"""

import functools
import logging
from typing import Any

from celery import Celery
from celery.signals import worker_init

from workers.config import Settings
from workers.execution import runner
from workers.execution.pool import ThreadPool
from workers.protocols import transport
from workers.store import Store, connect
from workers.store.envelope import TASK_NAME
from workers.store.records import JobStatus


class JobFailed(Exception):
    """The task's job FAILED: the task ends as a FAILURE (in Flower) with the job's error code and message."""


def create_celery(settings: Settings) -> Celery:
    """A Celery app on the settings' Redis, with the job task."""
    app = Celery("serverless_model", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # results live in the job store
        # Early acks and no ack emulation, on purpose. The job record is the source of truth: a task claims its
        # job with a lease that it renews, the autoscaler's reaper takes back a job whose lease ran out, and a
        # queued job whose message was lost is sent again. With late acks kombu's Redis transport kills the
        # worker when a task acks after a broker reconnect; its emulated acks would only bring a lost message
        # back after a visibility timeout, and cost two round trips per message.
        task_acks_late=False,
        worker_pool=f"{ThreadPool.__module__}:{ThreadPool.__name__}",  # threads: a task mostly waits on a replica
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=True,  # take a message only when a thread is free to run it at once
        worker_send_task_events=False,  # Flower turns them on while it runs
        broker_connection_retry_on_startup=True,
        broker_transport_options={"ack_emulation": False, "socket_timeout": 5, "socket_connect_timeout": 2},
        broker_connection_timeout=2,
        # not worker_cancel_long_running_tasks_on_connection_loss: with it the worker process dies while it
        # reconnects (celery #7185, #9250); a task that runs on through a reconnect is harmless, since only the
        # holder of a job's current claim can commit it
        worker_hijack_root_logger=False,
    )
    context = functools.cache(lambda: worker_context(settings))

    @app.task(name=TASK_NAME, throws=(JobFailed,))  # type: ignore[untyped-decorator]
    def run_job(job_id: str, model: str = "") -> dict[str, object]:
        """Run one job (a thin adapter over ``runner.run_job``)."""
        summary = runner.run_job(context(), job_id, model)
        if summary.status == JobStatus.FAILED:
            job = context().store.jobs.get(job_id)
            error = summary.error or (job.error if job else None)
            raise JobFailed(f"{error.code}: {error.message}" if error else "the job failed")
        return summary.as_result()

    worker_init.connect(quiet_task_logs, weak=False, dispatch_uid="serverless-model-quiet-logs")
    return app


def worker_context(settings: Settings) -> runner.WorkerContext:
    """The clients of this worker process."""
    store = Store.of(connect(settings.redis_url), settings.job_retention)
    return runner.WorkerContext(models=settings.load_models(), store=store, http=transport.http_pool(),
                                leases=runner.LeaseKeeper(store, settings.job_lease),
                                max_output_bytes=settings.max_output_bytes)


@functools.cache
def default_app() -> Celery:
    """The app of ``celery -A workers.execution.celery_app``, from the environment."""
    return create_celery(Settings())


def __getattr__(name: str) -> Any:
    """``app``, made when first asked for (PEP 562): importing this module does nothing."""
    if name == "app":
        return default_app()
    raise AttributeError(name)


def quiet_task_logs(**_: Any) -> None:
    """No log line per task received and done: the jobs API and Flower show them, for less CPU."""
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)
