"""The Celery app: JSON only, one queue per model, early acks; ``workers.run_job`` is its one task.

Nothing happens at import: ``create_celery(settings)`` builds an app, and ``celery -A workers.execution.celery_app``
(a worker, or Flower) asks this module for ``app``, which builds one from the environment then. Start a worker with
``serverless-model worker`` (it names every model's queue).
"""

import functools
import logging
import os
import socket
from typing import Any

from celery import Celery
from celery.exceptions import Ignore, Retry
from celery.signals import celeryd_init, setup_logging, task_revoked, worker_init
from celery.worker import state as worker_state

from workers import logs
from workers.config import Settings
from workers.execution import runner
from workers.execution.broker import transport_for
from workers.execution.pool import ThreadPool
from workers.job import JobError, JobStatus
from workers.protocols import transport
from workers.store import Store, connect, urls
from workers.store.envelope import TASK_NAME
from workers.store.replies import CancelReply, StartReply


class JobFailed(Exception):
    """The task's job FAILED: the task ends as a FAILURE (in Flower) with the job's error code and message."""


class JobCancelled(Exception):
    """The task's job was CANCELLED: a FAILURE in Flower that says so, never a success."""


class JobParked(Exception):
    """The job waits for a free replica slot and will be sent again: the task is a RETRY in Flower until the
    delivery that runs the job ends it."""


REVOKED = JobError("revoked", "its Celery task was revoked (in Flower, or with celery control revoke)")


def create_celery(settings: Settings) -> Celery:
    """A Celery app on the settings' Redis, with the job task."""
    sentinels = urls.Sentinels.parse(settings.redis_url)
    broker, sentinel_options = sentinels.celery_broker() if sentinels else (settings.redis_url, {})
    app = Celery("serverless_model", broker=broker, set_as_current=False)
    app.conf.update(
        broker_transport=transport_for(broker),  # kombu's, publishing through one client per channel
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
        worker_send_task_events=False,  # Flower turns them on while it runs; `worker --task-events` from the start
        broker_connection_retry_on_startup=True,
        broker_transport_options={"ack_emulation": False, "socket_timeout": 5, "socket_connect_timeout": 2,
                                  **sentinel_options},
        broker_connection_timeout=2,
        # not worker_cancel_long_running_tasks_on_connection_loss: with it the worker process dies while it
        # reconnects (celery #7185, #9250); a task that runs on through a reconnect is harmless, since only the
        # holder of a job's current claim can commit it
        worker_hijack_root_logger=False,
    )
    context = functools.cache(lambda: worker_context(settings))

    @app.task(name=TASK_NAME, throws=(JobFailed, JobCancelled))  # type: ignore[untyped-decorator]
    def run_job(job_id: str, model: str = "") -> dict[str, object]:
        """Run one job (a thin adapter over ``runner.run_job``)."""
        return report(runner.run_job(context(), job_id, model), context().store)

    def revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
        """A revoked task's message was discarded: its job does not run, and ends CANCELLED saying so."""
        if getattr(sender, "app", None) is app and sender.name == TASK_NAME and request is not None and request.id:
            cancel_revoked(context().store, str(request.id))

    worker_init.connect(quiet_task_logs, weak=False, dispatch_uid="serverless-model-quiet-logs")
    if settings.log_format == "json":  # from the worker's start (celeryd_init); setup_logging: Celery leaves it be
        for signal in (celeryd_init, setup_logging):
            signal.connect(functools.partial(json_logs, settings.host), weak=False,
                           dispatch_uid=f"serverless-model-json-logs-{signal.name}")
    task_revoked.connect(revoked, weak=False, dispatch_uid=f"serverless-model-revoked-{id(app)}")
    return app


def report(summary: runner.Summary, store: Store) -> dict[str, object]:
    """The task's end as Flower shows it, which is the job's: a SUCCESS with its summary, or a FAILURE with why.
    A parked job's delivery is a RETRY (a later event overrides it), and a delivery that did not run the job
    (another holds or held it) ends with no event, so it never overrides the job's own end."""
    if summary.status is JobStatus.SUCCEEDED:
        return summary.as_result()
    if summary.status is StartReply.PARKED:
        parked = JobParked("no free replica slot: the job waits and is sent again when one frees")
        raise Retry(str(parked), exc=parked)
    if summary.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise Ignore()
    job = store.jobs.get(summary.job_id)
    if summary.status is JobStatus.CANCELLED:
        during = job.cancelled_while if job and job.cancelled_while else JobStatus.QUEUED
        why = f" ({job.error.code}: {job.error.message})" if job and job.error else ""
        raise JobCancelled(f"the job was cancelled while {during}{why}")
    error = summary.error or (job.error if job else None)
    raise JobFailed(f"{error.code}: {error.message}" if error else "the job failed")


def cancel_revoked(store: Store, job_id: str) -> None:
    """Cancel the job of a revoked task (the task id is the job id), with an event that says so."""
    job = store.jobs.get(job_id)
    if job is not None and store.jobs.cancel(job_id, REVOKED) is CancelReply.OK:
        store.events.record(job.model, "job_cancelled", job=job_id, owner=job.owner, reason=REVOKED.message)


def cancel_revoked_running(store: Store, held: list[str]) -> None:
    """Cancel the running jobs whose task was revoked meanwhile (Celery keeps revokes in each worker's memory and
    does not stop a running task): they end CANCELLED within a renewal, like a cancel through the API."""
    for job_id in held:
        if job_id in worker_state.revoked:
            cancel_revoked(store, job_id)


def worker_context(settings: Settings) -> runner.WorkerContext:
    """The clients of this worker process."""
    store = Store.of(connect(settings.redis_url), settings.job_retention)
    leases = runner.LeaseKeeper(store, settings.job_lease, watch=functools.partial(cancel_revoked_running, store))
    host = settings.host or socket.gethostname()
    return runner.WorkerContext(models=settings.load_models(), store=store, http=transport.http_pool(),
                                leases=leases, max_output_bytes=settings.max_output_bytes,
                                max_parts=settings.max_parts, host=host,
                                worker=f"{host}:{os.getpid()}")


@functools.cache
def default_app() -> Celery:
    """The app of ``celery -A workers.execution.celery_app``, from the environment."""
    return create_celery(Settings())


def __getattr__(name: str) -> Any:
    """``app``, made when first asked for (PEP 562): importing this module does nothing."""
    if name == "app":
        return default_app()
    raise AttributeError(name)


def json_logs(host: str, **_: Any) -> None:
    """The worker's log as JSON lines (``SM_LOG_FORMAT=json``), Celery's own lines too, and the notices it would
    print beside them (``safe_say``: "worker: Warm shutdown") as lines of its log."""
    import celery.apps.worker

    logs.configure("json", "worker", host)
    celery.apps.worker.safe_say = lambda message, *_: logging.getLogger("celery.apps.worker").info(message)


def quiet_task_logs(**_: Any) -> None:
    """No log line per task received and done: the jobs API and Flower show them, for less CPU."""
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)
