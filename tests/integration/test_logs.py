"""JSON logs on the real platform (``SM_LOG_FORMAT=json``: gunicorn gateway, celery worker, autoscaler, a process
replica): every line each process writes, start to stop, is a JSON object, and the worker's line about a failed job
names its job, model, replica and host."""

import json
import socket
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.integration.platform import Platform

pytestmark = pytest.mark.integration
GOOD = {"features": [[5.1, 3.5, 1.4, 0.2]]}
BAD = {"features": [[1, 2, 3]]}  # iris wants 4 numbers: the job fails bad_input


def submit(platform: Platform, body: Any) -> dict[str, Any]:
    """A job of iris, waited for."""
    found = requests.post(f"{platform.url}/v1/models/iris/jobs", json=body, params={"wait": 60}, timeout=90).json()
    assert isinstance(found, dict)
    return found


def lines(platform: Platform, name: str) -> list[dict[str, Any]]:
    """Every line a process wrote, each parsed as a JSON object with a time, level, logger and message."""
    parsed = []
    for text in platform.log(name).splitlines():
        if text.strip():
            found = json.loads(text)  # a line that is not JSON fails the test here, naming it
            assert isinstance(found, dict) and {"time", "level", "logger", "message"} <= found.keys(), text
            assert found["process"] == name and found["host"] == socket.gethostname(), text
            parsed.append(found)
    assert parsed, f"{name} wrote nothing"
    return parsed


def test_every_line_is_json_and_the_worker_names_the_failed_jobs_job_model_replica_and_host(
        make_platform: Callable[..., Platform]) -> None:
    platform = make_platform().start("gateway", "worker", "autoscaler", env={"SM_LOG_FORMAT": "json"})
    bad, good = submit(platform, BAD), submit(platform, GOOD)
    assert (bad["status"], bad["error"]["code"], good["status"]) == ("FAILED", "bad_input", "SUCCEEDED"), bad
    platform.stop()  # their lines on the way out are JSON too
    worker = lines(platform, "worker")
    about = [found for found in worker if found.get("job") == bad["id"]]
    assert about, worker
    assert all((found.get("model"), found.get("replica")) == ("iris", bad["replica"]) for found in about), about
    assert any("bad_input" in found["message"] for found in about), about
    gateway = lines(platform, "gateway")
    assert any(found["logger"] == "gunicorn.error" and "Listening at" in found["message"] for found in gateway)
    assert any(found["logger"] == "gunicorn.access" and "POST /v1/models/iris/jobs" in found["message"]
               for found in gateway), gateway
    assert any("autoscaler up" in found["message"] for found in lines(platform, "autoscaler"))
