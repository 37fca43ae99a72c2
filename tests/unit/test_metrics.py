"""``GET /metrics`` on fakeredis: Prometheus' own parser reads it, the gauges follow the store, the counters count
what the scripts commit, and with API keys on it wants one (or the metrics token, which opens nothing else)."""

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
from workers.store.replies import AttemptReply

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
    assert isinstance(store.jobs.start(ran.id, "t", 30, "w", True), Started)
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
    store.jobs.cancel(job.id)
    store.events.record("m", "ready", "r1")  # every metric has a sample now
    exported = {name for name, _ in samples(client(tmp_path, monkeypatch, fake).get("/metrics").text)}
    assert asked and asked <= exported, asked - exported


def test_scaling_decisions_failed_starts_and_other_events_are_counted_by_kind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fakeredis.FakeRedis(decode_responses=True)
    store = Store.of(fake, retention=60)
    token = store.leadership(3).hold() or ""
    before = samples(client(tmp_path, monkeypatch, fake).get("/metrics").text)
    assert before[("sm_scaling_decisions_total", (("decision", "scale_up"), ("model", "m")))] == 0
    assert before[("sm_replica_start_failures_total", (("model", "m"),))] == 0
    for kind in ("scale_up", "scale_up", "scale_down", "ready", "lost"):
        store.events.record("m", kind, "r1", "why")
    store.events.record("", "stray_removed", "r9", "running but not in the registry")
    assert store.replicas.add(token, "r1", "m", "process")
    assert store.replicas.start_failed(token, "r1", "m", "exit code 1", False) == 0
    assert store.replicas.start_failed("not the leader's", "r1", "m", "exit code 1", False) is None  # not counted
    found = samples(client(tmp_path, monkeypatch, fake).get("/metrics").text)
    assert found[("sm_scaling_decisions_total", (("decision", "scale_up"), ("model", "m")))] == 2
    assert found[("sm_scaling_decisions_total", (("decision", "scale_down"), ("model", "m")))] == 1
    assert found[("sm_scaling_decisions_total", (("decision", "scale_up"), ("model", "other")))] == 0
    assert found[("sm_events_total", (("kind", "ready"), ("model", "m")))] == 1
    assert found[("sm_events_total", (("kind", "lost"), ("model", "m")))] == 1
    assert found[("sm_events_total", (("kind", "stray_removed"), ("model", "")))] == 1
    assert ("sm_events_total", (("kind", "scale_up"), ("model", "m"))) not in found  # (a decision, counted above)
    assert found[("sm_replica_start_failures_total", (("model", "m"),))] == 1
    assert len(store.events.recent()) == 6  # each event counted is in the log


def test_webhook_attempts_are_counted_by_what_each_led_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, clock = fakeredis.FakeRedis(decode_responses=True), Clock()
    store = Store.of(fake, retention=60, clock=clock)
    store.webhooks.join()
    for _ in range(6):
        job = store.jobs.submit(store.jobs.new("m", {}, webhook="http://127.0.0.1:9/hook"))
        assert isinstance(job, Job) and store.jobs.cancel(job.id) == "OK"  # its end goes on the deliveries' stream
    entries = store.webhooks.read("d", 10, 0.1)
    for entry in entries[:3]:
        assert store.webhooks.attempted(entry, True, "", 0, 60) is AttemptReply.DELIVERED
    for entry in entries[3:5]:
        assert store.webhooks.attempted(entry, False, "HTTP 500", 10, 60) is AttemptReply.RETRY
    assert store.webhooks.attempted(entries[5], False, "HTTP 500", 90, 60) is AttemptReply.FAILED
    assert store.webhooks.attempted(entries[5], False, "", 90, 60) is AttemptReply.DROPPED  # no attempt: uncounted
    found = samples(client(tmp_path, monkeypatch, fake).get("/metrics").text)
    for outcome, count in (("delivered", 3), ("retry", 2), ("given_up", 1)):
        assert found[("sm_webhook_attempts_total", (("model", "m"), ("outcome", outcome)))] == count, outcome
    assert found[("sm_webhook_attempts_total", (("model", "other"), ("outcome", "delivered")))] == 0


def refusals(api: FlaskClient, **headers: str) -> dict[str, float]:
    """``sm_refusals_total`` by reason."""
    return {dict(labels)["reason"]: value for (name, labels), value in samples(api.get("/metrics", headers=headers)
                                                                               .text).items()
            if name == "sm_refusals_total"}


def test_refused_requests_are_counted_by_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models.toml"
    models.write_text('[models.m]\ncommand = ["x"]\nmax_queued = 1\n')
    fake = fakeredis.FakeRedis(decode_responses=True)
    monkeypatch.setattr(gateway.app, "gateway_client", lambda url, timeout, connections: fake)
    api = create_app(Settings(models_file=models, api_keys=digest("k"), metrics_token=digest("t"),
                              auth_failures_per_minute=2)).test_client()
    key = {"Authorization": "Bearer k"}
    assert refusals(api, **key) == dict.fromkeys(["rate_limited", "unauthorized", "too_many_failed_authentications",
                                                  "queue_full"], 0)
    assert [api.get("/v1/models").status_code for _ in range(3)] == [401, 401, 429]
    assert [api.post("/v1/models/m/jobs", json={}, headers=key).status_code for _ in range(2)] == [202, 429]
    found = refusals(api, Authorization="Bearer t")
    assert (found["unauthorized"], found["too_many_failed_authentications"], found["queue_full"]) == (2, 1, 1)
    limited = create_app(Settings(models_file=models, api_keys=digest("k"), metrics_token=digest("t"),
                                  rate_limit=1)).test_client()
    answers = [limited.get("/v1/models", headers=key).status_code for _ in range(5)]
    assert 429 in answers  # (one request is served in each second)
    assert refusals(limited, Authorization="Bearer t")["rate_limited"] == answers.count(429)


def test_the_metrics_token_opens_metrics_and_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api = client(tmp_path, monkeypatch, api_keys=digest("k"), metrics_token=digest("t"), auth_failures_per_minute=3)
    token = {"Authorization": "Bearer t"}
    assert api.get("/metrics", headers=token).status_code == 200
    assert api.get("/metrics", headers={"Authorization": "Bearer k"}).status_code == 200
    for path in ("/v1/models", "/v1/events", "/v1/hosts"):
        refused = api.get(path, headers=token)
        assert refused.status_code == 401 and refused.json and refused.json["error"]["code"] == "unauthorized"
    assert api.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 429  # its 4th failure
    assert api.get("/metrics", headers=token).status_code == 200  # a valid token is always served
    alone = client(tmp_path, monkeypatch, metrics_token=digest("t"))  # no API keys: /metrics alone wants it
    assert alone.get("/metrics").status_code == 401 and alone.get("/metrics", headers=token).status_code == 200
    assert alone.get("/v1/models").status_code == 200
