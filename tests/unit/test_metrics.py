"""``GET /metrics`` on fakeredis: Prometheus' own parser reads it, the gauges follow the store, and with API keys on
it wants one."""

import json
import re
from pathlib import Path

import fakeredis
import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

import gateway.app
from gateway.app import create_app
from gateway.auth import digest
from tests.unit.test_autoscaler import Clock
from workers.config import Settings
from workers.job import Job, JobStatus, Outcome
from workers.store import Store
from workers.store.records import Host, Started

pytestmark = pytest.mark.unit


def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: fakeredis.FakeRedis | None = None,
           **settings: object) -> FlaskClient:
    models = tmp_path / "models.toml"
    models.write_text('[models.m]\ncommand = ["x"]\n\n[models.other]\ncommand = ["x"]\n')
    fake = fake or fakeredis.FakeRedis(decode_responses=True)
    monkeypatch.setattr(gateway.app, "gateway_client", lambda url, timeout, connections: fake)
    return create_app(Settings(models_file=models, **settings)).test_client()  # type: ignore[arg-type]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by name and labels, as Prometheus' parser reads the text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_queue_depth_follows_submitted_jobs_per_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api = client(tmp_path, monkeypatch)
    before = samples(api.get("/metrics").text)
    assert before[("sm_queue_depth", (("model", "m"),))] == 0
    for _ in range(3):
        assert api.post("/v1/models/m/jobs", json={"x": 1}).status_code == 202
    answer = api.get("/metrics")
    assert answer.status_code == 200 and answer.mimetype == "text/plain"
    after = samples(answer.text)
    assert after[("sm_queue_depth", (("model", "m"),))] == 3
    assert after[("sm_queue_depth", (("model", "other"),))] == 0
    assert after[("sm_running_jobs", (("model", "m"),))] == 0
    assert after[("sm_average_seconds", (("average", "cold_start"), ("model", "m")))] == 5.0  # the seed
    assert not any("job" in label for _, labels in after for label, _ in labels)  # no job id is a label


def test_replicas_are_counted_by_host_and_state_and_hosts_by_whether_they_are_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fakeredis.FakeRedis(decode_responses=True)
    store = Store.of(fake, retention=60)
    token = store.leadership(3).hold() or ""
    for replica, host in (("r1", "a"), ("r2", "a"), ("r3", "b")):
        assert store.replicas.add(token, replica, "m", "process")
        assert store.replicas.launched(token, replica, "http://x", replica, host) == 1
    assert store.replicas.save_hosts(token, [Host("a", "ready", "10.0.0.1", 2, 1), Host("b", "down", "", 2, 1)])
    found = samples(client(tmp_path, monkeypatch, fake).get("/metrics").text)
    assert found[("sm_replicas", (("host", "a"), ("model", "m"), ("state", "STARTING")))] == 2
    assert found[("sm_replicas", (("host", "b"), ("model", "m"), ("state", "STARTING")))] == 1
    assert found[("sm_host_up", (("host", "a"),))] == 1 and found[("sm_host_up", (("host", "b"),))] == 0


def test_ended_jobs_are_counted_by_status_with_their_spans_in_the_histograms(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, clock = fakeredis.FakeRedis(decode_responses=True), Clock()
    store = Store.of(fake, retention=60, clock=clock)
    token = store.leadership(30).hold() or ""
    store.replicas.add(token, "r1", "m", "process")
    store.replicas.launched(token, "r1", "http://127.0.0.1:9", "h")
    store.replicas.ready(token, "r1", 1)
    ran, cancelled = (store.jobs.submit(store.jobs.new("m", {})) for _ in range(2))
    assert isinstance(ran, Job) and isinstance(cancelled, Job)
    clock.advance(2)
    assert isinstance(store.jobs.start(ran.id, "t", 30, "w", 1, True), Started)
    clock.advance(3)
    store.jobs.finish(ran.id, "t", Outcome(JobStatus.SUCCEEDED, output="1"))
    store.jobs.cancel(cancelled.id)  # (it never ran: no queue wait or service time)
    found = samples(client(tmp_path, monkeypatch, fake).get("/metrics").text)
    m = (("model", "m"),)
    assert found[("sm_jobs_submitted_total", m)] == 2
    assert found[("sm_jobs_finished_total", (("model", "m"), ("status", "SUCCEEDED")))] == 1
    assert found[("sm_jobs_finished_total", (("model", "m"), ("status", "CANCELLED")))] == 1
    assert found[("sm_job_queue_wait_seconds_count", m)] == 1 and found[("sm_job_queue_wait_seconds_sum", m)] == 2
    assert found[("sm_job_queue_wait_seconds_bucket", (("le", "1.0"), ("model", "m")))] == 0
    assert found[("sm_job_queue_wait_seconds_bucket", (("le", "2.5"), ("model", "m")))] == 1
    assert found[("sm_job_service_seconds_sum", m)] == 3
    assert found[("sm_job_total_seconds_count", m)] == 2 and found[("sm_job_total_seconds_sum", m)] == 10
    assert found[("sm_job_total_seconds_bucket", (("le", "+Inf"), ("model", "m")))] == 2


def test_with_api_keys_on_metrics_wants_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api = client(tmp_path, monkeypatch, api_keys=digest("k"))
    refused = api.get("/metrics")
    assert refused.status_code == 401 and refused.json and "error" in refused.json
    assert api.get("/metrics", headers={"Authorization": "Bearer k"}).status_code == 200


def test_the_grafana_dashboard_asks_only_for_metrics_the_gateway_exports(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    board = json.loads((Path(__file__).resolve().parents[2] / "deploy/grafana/serverless-model.json").read_text())
    asked = {name for panel in board["panels"] for target in panel["targets"]
             for name in re.findall(r"\bsm_\w+", target["expr"])}
    fake = fakeredis.FakeRedis(decode_responses=True)
    store = Store.of(fake, retention=60)
    token = store.leadership(3).hold() or ""
    assert store.replicas.add(token, "r1", "m", "process")
    assert store.replicas.launched(token, "r1", "http://127.0.0.1:9", "h", "a", placed=0, created=0) == 1
    assert store.replicas.ready(token, "r1", 1, up=0) is not None  # a cold start measured
    assert store.replicas.save_hosts(token, [Host("a", "ready", "10.0.0.1", 2, 1)])
    job = store.jobs.submit(store.jobs.new("m", {}))
    assert isinstance(job, Job)
    store.jobs.cancel(job.id)  # every metric has a sample now
    exported = {name for name, _ in samples(client(tmp_path, monkeypatch, fake).get("/metrics").text)}
    assert asked and asked <= exported, asked - exported
