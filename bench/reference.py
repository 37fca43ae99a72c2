"""The Celery references: a bare round trip and the naive forward to a model server, with a result backend.

A worker runs them with ``celery -A bench.reference worker``; they share the benchmark's Redis (db 1 holds
their results) and take their own queue, so they never meet the platform's tasks.
"""

import os
from typing import Any

import requests
from celery import Celery

QUEUE = "bench.reference"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("bench_reference", broker=REDIS_URL, backend=REDIS_URL.rsplit("/", 1)[0] + "/1",
             set_as_current=False)
app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                task_default_queue=QUEUE, worker_prefetch_multiplier=1, worker_hijack_root_logger=False,
                result_expires=600)
session = requests.Session()


@app.task(name="bench.echo")  # type: ignore[untyped-decorator]
def echo(payload: Any) -> Any:
    """Return the input: the cost of Celery alone."""
    return payload


@app.task(name="bench.forward")  # type: ignore[untyped-decorator]
def forward(url: str, payload: Any) -> Any:
    """POST the input to a model server and return its answer: what a user would write first."""
    response = session.post(url, json=payload, timeout=30)
    response.raise_for_status()
    return response.json()
