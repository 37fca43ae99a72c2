"""A job's Celery message, as kombu's Redis transport would push it, so a Lua script can push it itself.

The gateway records a job and pushes its message in one script (both or neither), and the scripts that free a
slot push a parked job's message; no Celery publish call is made on the hot path. Celery's own
``as_task_v2`` builds the headers and body, so they follow the installed Celery; the body is sent without a
body encoding (kombu then takes it as it is), and the script fills in the job id, the model and a delivery
tag. ``tests/integration/test_store.py`` checks it against a message that Celery itself published.
"""

import functools
import json

TASK_NAME = "workers.run_job"
JOB, MODEL, TAG = "@job@", "@model@", "@tag@"


@functools.cache
def template() -> str:
    """The message of job ``@job@`` of model ``@model@`` with delivery tag ``@tag@``, as JSON."""
    from celery import Celery

    app = Celery("serverless_model", set_as_current=False)
    task = app.amqp.as_task_v2(JOB, TASK_NAME, args=[JOB, MODEL], kwargs={}, origin="serverless-model")
    properties = {**task.properties, "delivery_mode": 2, "priority": 0, "delivery_tag": TAG,
                  "delivery_info": {"exchange": "", "routing_key": f"model.{MODEL}"}}
    message = {"body": json.dumps(task.body), "content-encoding": "utf-8", "content-type": "application/json",
               "headers": task.headers, "properties": properties}
    return json.dumps(message)
