"""The Celery references: a bare round trip and the naive forward to a model server, with a result backend.

A worker runs them with ``celery -A bench.reference worker`` on the Redis of ``REDIS_URL`` (db 1 holds their
results); they take their own queue, so they never meet the platform's tasks. ``app_for`` makes the same app for
another Redis, to send them there.
"""

import os
from typing import Any

import requests
from celery import Celery

QUEUE = "bench.reference"
session = requests.Session()


def echo(payload: Any) -> Any:
    """Return the input: the cost of Celery alone."""
    return payload


def forward(url: str, payload: Any) -> Any:
    """POST the input to a model server and return its answer: what a user would write first."""
    response = session.post(url, json=payload, timeout=30)
    response.raise_for_status()
    return response.json()


def app_for(url: str) -> Celery:
    """The references' app on the Redis at ``url`` (its tasks: ``bench.echo``, ``bench.forward``)."""
    app = Celery("bench_reference", broker=url, backend=url.rsplit("/", 1)[0] + "/1", set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                    task_default_queue=QUEUE, worker_prefetch_multiplier=1, worker_hijack_root_logger=False,
                    result_expires=600)
    app.task(name="bench.echo")(echo)
    app.task(name="bench.forward")(forward)
    return app


app = app_for(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
