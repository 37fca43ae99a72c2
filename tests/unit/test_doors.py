"""The front doors in the pure tier (the app on fakeredis): each door's error body, also for paths no route
matches; V2 bodies without a Content-Type; RunPod's names for statuses and timings."""

import json
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient

import gateway.app
from gateway.app import create_app
from gateway.runpod import JobState
from workers.config import Settings
from workers.job import Job, JobError, JobStatus

pytestmark = pytest.mark.unit
MODELS = """
[models.m]
command = ["x"]
[models.v]
protocol = "kserve"
command = ["x"]
"""
V2 = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FlaskClient, fakeredis.FakeRedis]:
    """The app on fakeredis, its waits short."""
    models = tmp_path / "models.toml"
    models.write_text(MODELS)
    fake = fakeredis.FakeRedis(decode_responses=True)
    monkeypatch.setattr(gateway.app, "gateway_client", lambda url, timeout, connections: fake)
    return create_app(Settings(models_file=models, max_wait=0.1)).test_client(), fake


def jobs(fake: fakeredis.FakeRedis) -> list[Any]:
    """Every job record."""
    return list(fake.scan_iter("sm:job:*"))


@pytest.mark.parametrize(("method", "path", "kwargs", "status"), [
    ("GET", "/runpod/v2/m/nowhere", {}, 404),
    ("GET", "/runpod/v2/m/run", {}, 405),
    ("POST", "/runpod/v2/nope/run", {"json": {"input": {}}}, 404),
    ("POST", "/runpod/v2/m/run", {"json": {"input": "text"}}, 422),
    ("POST", "/runpod/v2/m/run", {"data": b"{", "content_type": "application/json"}, 400),
    ("POST", "/runpod/v2/m/run", {"json": {"input": {}, "webhook": "http://x"}}, 400),
    ("GET", "/runpod/v2/m/status/" + "0" * 32, {}, 404),
    ("POST", "/runpod/v2/m/run", {"json": {"input": {}, "policy": {"ttl": 10**400}}}, 400),
    ("POST", "/runpod/v2/m/run", {"json": {"input": {}, "policy": {"ttl": 10**300}}}, 422),
    ("POST", "/runpod/v2/m/run", {"json": {"input": {}, "policy": {"executionTimeout": 10**12}}}, 422),
    ("GET", "/v2/nowhere", {}, 404),
    ("POST", "/v2/models/m/infer", {"json": V2}, 404),
    ("POST", "/v2/models/v/infer", {"json": {"inputs": [{"name": "x"}]}}, 422),
    ("POST", "/v2/models/v/infer", {"data": b"x=1", "content_type": "text/plain"}, 415),
    *[("POST", "/v2/models/v/infer", {"json": {"inputs": [{"name": "x", **tensor}]}}, 422) for tensor in (
        {"shape": [-5], "datatype": "FP32", "data": []},
        {"shape": [3, 3], "datatype": "FP32", "data": [1.0]},
        {"shape": [True], "datatype": "FP32", "data": [1.0]},
        {"shape": [10**18], "datatype": "BOOL", "data": [{"a": 1}]},
        {"shape": [2], "datatype": "BOOL", "data": [True, 1]},
        {"shape": [1], "datatype": "INT32", "data": [True]},
        {"shape": [1], "datatype": "INT32", "data": [1.5]},
        {"shape": [1], "datatype": "BYTES", "data": [1]},
        {"shape": [1], "datatype": "FP32", "data": ["1"]},
    )],
    ("POST", "/v2/models/v/infer", {"data": json.dumps(V2), "headers": {"Inference-Header-Content-Length": "9"}},
     400),
])
def test_each_door_answers_in_its_own_error_body_and_records_nothing(
        client: tuple[FlaskClient, fakeredis.FakeRedis], method: str, path: str, kwargs: dict[str, Any],
        status: int) -> None:
    app, fake = client
    answer = app.open(path, method=method, **kwargs)
    assert answer.status_code == status and isinstance(answer.json["error"], str), answer.json
    assert jobs(fake) == []


@pytest.mark.parametrize(("query", "headers", "status"), [
    ("ttl=inf", {}, 422), ("ttl=nan", {}, 422), ("ttl=1e308", {}, 422), ("execution_timeout=inf", {}, 422),
    ("", {"Idempotency-Key": " "}, 400), ("", {"Idempotency-Key": "a\tb"}, 400),
])
def test_bad_job_options_are_refused_and_record_nothing(client: tuple[FlaskClient, fakeredis.FakeRedis], query: str,
                                                        headers: dict[str, str], status: int) -> None:
    app, fake = client
    answer = app.post(f"/v1/models/m/jobs?{query}", json={}, headers=headers)
    assert answer.status_code == status and answer.json["error"]["code"], answer.json
    assert jobs(fake) == []


def test_an_idempotency_key_used_for_another_model_is_a_conflict(
        client: tuple[FlaskClient, fakeredis.FakeRedis]) -> None:
    app, fake = client
    first = app.post("/v1/models/m/jobs", json={"a": 1}, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 202
    other = app.post("/v1/models/v/jobs", json={"a": 1}, headers={"Idempotency-Key": "k1"})
    assert other.status_code == 409 and other.json["error"]["code"] == "idempotency_conflict"
    assert len(jobs(fake)) == 1


def test_the_native_door_keeps_its_error_body(client: tuple[FlaskClient, fakeredis.FakeRedis]) -> None:
    app, _ = client
    for path in ("/v1/models/nope", "/v3/nowhere", "/v2x"):
        assert set(app.get(path).json["error"]) == {"code", "message"}, path


def test_a_v2_body_without_content_type_is_json_and_becomes_the_jobs_input(
        client: tuple[FlaskClient, fakeredis.FakeRedis]) -> None:
    app, fake = client
    answer = app.post("/v2/models/v/infer", data=json.dumps(V2))  # no Content-Type, as tritonclient sends it
    assert answer.status_code == 504 and "GET /v1/jobs/" in answer.json["error"]  # no worker: it waits, then says so
    [key] = jobs(fake)
    assert json.loads(fake.hget(key, "input") or "null") == V2
    assert app.post("/v1/models/m/jobs", data=json.dumps({"a": 1})).status_code == 415  # only on the V2 door


def test_a_runpod_job_is_queued_read_and_cancelled(client: tuple[FlaskClient, fakeredis.FakeRedis]) -> None:
    app, _ = client
    queued = app.post("/runpod/v2/m/run", json={"input": {"a": 1}}).json
    assert queued == {"id": queued["id"], "status": "IN_QUEUE"}
    assert app.get(f"/runpod/v2/m/status/{queued['id']}").json["status"] == "IN_QUEUE"
    assert app.get(f"/runpod/v2/v/status/{queued['id']}").status_code == 404  # another endpoint's job
    assert app.post(f"/runpod/v2/m/cancel/{queued['id']}").json["status"] == "CANCELLED"  # no body, as the SDK
    assert app.post(f"/runpod/v2/m/cancel/{queued['id']}").status_code == 409
    health = app.get("/runpod/v2/m/health").json
    assert health["jobs"]["inQueue"] == 0 and health["workers"]["ready"] == 0


@pytest.mark.parametrize(("status", "error", "shown"), [
    (JobStatus.QUEUED, None, "IN_QUEUE"), (JobStatus.RUNNING, None, "IN_PROGRESS"),
    (JobStatus.SUCCEEDED, None, "COMPLETED"), (JobStatus.FAILED, JobError("model_error", "boom"), "FAILED"),
    (JobStatus.FAILED, JobError("timeout", "too slow"), "TIMED_OUT"), (JobStatus.CANCELLED, None, "CANCELLED"),
])
def test_runpods_names_for_statuses_and_timings(status: JobStatus, error: JobError | None, shown: str) -> None:
    job = Job(id="j", model="m", status=status, input={}, created_at=100.0, started_at=100.25, finished_at=101.5,
              error=error)
    state = JobState.of(job)
    assert (state.status, state.delayTime, state.executionTime) == (shown, 250, 1250)
    assert state.error == (error.message if error else None)


def test_valid_tensors_nested_or_flat_are_taken(client: tuple[FlaskClient, fakeredis.FakeRedis]) -> None:
    app, fake = client
    for tensor in ({"shape": [2, 2], "datatype": "FP32", "data": [[1, 2.5], [3, 4]]},
                   {"shape": [0], "datatype": "INT8", "data": []},
                   {"shape": [2], "datatype": "BYTES", "data": ["a", "b"]}):
        answer = app.post("/v2/models/v/infer", json={"inputs": [{"name": "x", **tensor}]})
        assert answer.status_code == 504, answer.get_json()  # recorded; no worker runs it within max_wait
    assert len(jobs(fake)) == 3


def test_a_huge_runsync_wait_is_bounded_by_the_longest_wait(client: tuple[FlaskClient, fakeredis.FakeRedis]) -> None:
    app, _ = client
    answer = app.post("/runpod/v2/m/runsync?wait=" + "9" * 400, json={"input": {}})
    assert answer.status_code == 200 and answer.get_json()["status"] == "IN_QUEUE"


def test_a_v2_inference_past_the_cap_on_waiting_is_refused_and_records_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models.toml"
    models.write_text(MODELS)
    fake = fakeredis.FakeRedis(decode_responses=True)
    monkeypatch.setattr(gateway.app, "gateway_client", lambda url, timeout, connections: fake)
    flask_app = create_app(Settings(models_file=models, max_wait=0.1, max_waiters=1))
    app = flask_app.test_client()
    with flask_app.extensions["gateway"].waiters.admit(""):  # the one place is taken
        answer = app.post("/v2/models/v/infer", json=V2)
        native = app.post("/v1/models/m/jobs?wait=1", json={})
    assert native.status_code == 202  # a native wait is answered unwaited
    assert answer.status_code == 429 and answer.get_json()["error"].startswith("1 requests wait already")
    assert answer.headers["Retry-After"] == "1" and len(jobs(fake)) == 1  # the native job alone


def test_runpods_stream_hands_out_each_part_once(client: tuple[FlaskClient, fakeredis.FakeRedis]) -> None:
    app, fake = client
    job_id = app.post("/runpod/v2/m/run", json={"input": {}}).get_json()["id"]
    fake.rpush(f"sm:parts:{job_id}", json.dumps({"i": 0}), json.dumps({"i": 1}))
    first = app.get(f"/runpod/v2/m/stream/{job_id}").get_json()
    assert first == {"id": job_id, "status": "IN_QUEUE", "stream": [{"output": {"i": 0}}, {"output": {"i": 1}}]}
    fake.rpush(f"sm:parts:{job_id}", json.dumps({"i": 2}))
    assert app.get(f"/runpod/v2/m/stream/{job_id}").get_json()["stream"] == [{"output": {"i": 2}}]
    assert app.get(f"/runpod/v2/m/stream/{job_id}").get_json()["stream"] == []
    assert app.get(f"/runpod/v2/v/stream/{job_id}").status_code == 404  # another endpoint's job
