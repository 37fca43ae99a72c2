"""Streamed outputs through the real platform (gunicorn gateway, celery worker, autoscaler, a process replica):
``GET /v1/jobs/<id>/stream`` sends every part once, in order, also across a reconnect; the ``runpod`` SDK's
``Job.stream()`` (its base URL set, nothing else) yields every part once, in order."""

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
import requests
import runpod

from tests.integration.platform import Platform, events

pytestmark = pytest.mark.integration
STREAMING = """
[models.streaming]
command = ["python", "-m", "model.server"]
env = { MODEL_CLASS = "testmodels:Streaming" }
concurrency = 1
max_replicas = 1
idle_timeout = 30
"""


def test_fifty_parts_arrive_in_order_also_across_a_reconnect(make_platform: Callable[..., Platform]) -> None:
    platform = make_platform(models=STREAMING).start("gateway", "worker", "autoscaler")
    job = requests.post(f"{platform.url}/v1/models/streaming/jobs", json={"n": 50, "every": 0.05}, timeout=10).json()
    stream = f"{platform.url}/v1/jobs/{job['id']}/stream"
    seen: list[Any] = []
    with requests.get(stream, stream=True, timeout=60) as first:
        for event in events(first):
            if event["event"] == "waiting":  # while its replica starts
                continue
            assert event["event"] == "part" and int(event["id"]) == len(seen)
            seen.append(json.loads(event["data"]))
            if len(seen) == 10:
                break  # the client goes after 10 parts
    with requests.get(stream, headers={"Last-Event-ID": "9"}, stream=True, timeout=60) as resumed:
        got = [event for event in events(resumed) if event["event"] != "waiting"]
    assert [int(e["id"]) for e in got[:-1]] == list(range(10, 50))
    seen += [json.loads(e["data"]) for e in got[:-1]]
    assert seen == [{"i": i} for i in range(50)]
    assert got[-1]["event"] == "done" and json.loads(got[-1]["data"])["output"] == seen
    final = requests.get(f"{platform.url}/v1/jobs/{job['id']}", timeout=10).json()
    assert final["status"] == "SUCCEEDED" and final["output"] == seen


def test_a_waiting_jobs_stream_says_what_it_waits_for_until_it_ends(make_platform: Callable[..., Platform]) -> None:
    platform = make_platform(models=STREAMING).start("gateway", "worker", "autoscaler")
    job = requests.post(f"{platform.url}/v1/models/streaming/jobs", params={"priority": "low"},
                        json={"n": 5}, timeout=10).json()  # low: it starts no replica, so it waits until cancelled
    with requests.get(f"{platform.url}/v1/jobs/{job['id']}/stream", stream=True, timeout=60) as stream:
        got = events(stream)
        first = next(got)
        assert first["event"] == "waiting" and "id" not in first, first
        waiting = json.loads(first["data"])
        assert waiting["reason"] in ("sent", "parked") and waiting["age"] >= 0, waiting
        cancelled = requests.delete(f"{platform.url}/v1/jobs/{job['id']}", timeout=10)
        assert cancelled.status_code == 200, cancelled.text
        rest = list(got)
    assert [e["event"] for e in rest if e["event"] != "waiting"] == ["done"]
    assert json.loads(rest[-1]["data"])["status"] == "CANCELLED"


def test_the_runpod_sdk_streams_every_part_once_in_order(make_platform: Callable[..., Platform]) -> None:
    platform = make_platform(models=STREAMING).start("gateway", "worker", "autoscaler")
    base, key = runpod.endpoint_url_base, runpod.api_key
    runpod.endpoint_url_base, runpod.api_key = f"{platform.url}/runpod/v2", "unused"  # API keys are off
    try:
        job = runpod.Endpoint("streaming").run({"n": 50, "every": 0.05})
        parts: list[Any] = []
        reader = threading.Thread(target=lambda: parts.extend(job.stream()), daemon=True)  # polls once a second
        reader.start()
        reader.join(120)
        assert not reader.is_alive(), "the SDK's stream did not end"
        assert parts == [{"i": i} for i in range(50)]
        assert job.status() == "COMPLETED" and job.output() == parts
    finally:
        runpod.endpoint_url_base, runpod.api_key = base, key
