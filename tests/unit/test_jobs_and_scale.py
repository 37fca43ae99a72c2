"""Listing jobs (``GET /v1/jobs``) and an operator's replica bounds (``PUT``/``DELETE /v1/models/<m>/scale``) in the
pure tier: the store's index and scripts on fakeredis with a clock moved by hand, the autoscaler with a fake
backend, and the app's validation over fakeredis."""

from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient

import gateway.app
from gateway.app import create_app
from gateway.auth import digest
from tests.unit.test_autoscaler import MODEL, Clock, scaler, states, submit
from workers.config import Settings
from workers.job import JobError, JobStatus, Outcome
from workers.scaling.policy import Policy
from workers.store import Store, keys
from workers.store.records import BoundsSource, ReplicaState, ScaleBounds, Started
from workers.store.replies import ScaleReply

pytestmark = pytest.mark.unit
CONFIG = ScaleBounds(0, 4)
MODELS = '[models.m]\ncommand = ["x"]\nmax_replicas = 4\n[models.n]\ncommand = ["x"]\n'


@pytest.fixture
def clock() -> Clock:
    return Clock(step=0.001)  # every reading a millisecond later: each job its own created_at


@pytest.fixture
def store(clock: Clock) -> Store:
    return Store.of(fakeredis.FakeRedis(decode_responses=True), retention=60, clock=clock)


def made(store: Store, model: str = "m", owner: str = "") -> str:
    """A job submitted; its id."""
    job = store.jobs.submit(store.jobs.new(model, {"x": 1}, owner))
    assert not isinstance(job, str)
    return job.id


def fail(store: Store, job_id: str) -> None:
    """The job runs on replica r1 and fails."""
    started = store.jobs.start(job_id, "t", 30, "w", True)
    assert isinstance(started, Started), started
    assert store.jobs.finish(job_id, "t", Outcome(JobStatus.FAILED, error=JobError("boom", "it broke"))) == "OK"


def ready(store: Store, model: str = "m") -> None:
    token = store.leadership(30).hold() or ""
    assert store.replicas.add(token, "r1", model, "fake")
    assert store.replicas.launched(token, "r1", "http://r1", "r1")
    assert store.replicas.ready(token, "r1", concurrency=1) is not None


def test_the_owners_jobs_are_listed_newest_first_by_model_and_status(store: Store) -> None:
    ready(store)
    ids = [made(store, "m"), made(store, "n"), made(store, "m")]
    fail(store, ids[0])
    page = store.jobs.listed("")
    assert [j.id for j in page.jobs] == ids[::-1] and page.next is None
    assert [j.id for j in store.jobs.listed("", model="m").jobs] == [ids[2], ids[0]]
    failed = store.jobs.listed("", status=JobStatus.FAILED).jobs
    assert [j.id for j in failed] == [ids[0]]
    assert failed[0].error == JobError("boom", "it broke") and failed[0].replica == "r1" and failed[0].attempts == 1
    assert failed[0].started_at is not None and failed[0].finished_at is not None
    assert store.jobs.listed("", model="n", status=JobStatus.FAILED).jobs == ()


def test_pages_go_on_before_the_last_one_and_end_with_no_next(store: Store) -> None:
    ids = [made(store) for _ in range(5)][::-1]
    first = store.jobs.listed("", limit=2)
    assert [j.id for j in first.jobs] == ids[:2] and first.next == first.jobs[-1].created_at
    second = store.jobs.listed("", limit=2, before=first.next)
    third = store.jobs.listed("", limit=2, before=second.next)
    assert [j.id for j in second.jobs + third.jobs] == ids[2:] and third.next is None
    assert store.jobs.listed("", before=first.jobs[0].created_at).jobs == first.jobs[1:] + second.jobs + third.jobs


def test_one_call_looks_at_a_bounded_number_of_entries_and_says_where_to_go_on(store: Store) -> None:
    wanted = made(store, "n")
    others = [made(store, "m") for _ in range(4)]
    page = store.jobs.listed("", model="n", look=3)
    assert page.jobs == () and page.next is not None  # three looked at, none of n: go on
    rest = store.jobs.listed("", model="n", look=3, before=page.next)
    assert [j.id for j in rest.jobs] == [wanted] and rest.next is None
    assert len(others) == 4


def test_expired_records_are_skipped_and_other_owners_jobs_never_shown(store: Store) -> None:
    gone, mine = made(store, owner="a"), made(store, owner="a")
    theirs, keyless = made(store, owner="b"), made(store)
    store.client.delete(keys.job(gone))
    assert [j.id for j in store.jobs.listed("a").jobs] == [mine]
    assert [j.id for j in store.jobs.listed("b").jobs] == [theirs]
    assert [j.id for j in store.jobs.listed("").jobs] == [keyless]
    assert store.jobs.listed("c").jobs == ()


def test_the_index_keeps_the_retention_and_at_most_its_cap(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "OWNED_KEPT", 3)
    store = Store.of(fakeredis.FakeRedis(decode_responses=True), retention=60, clock=clock)
    made(store)
    clock.advance(61)
    new = made(store)
    assert store.client.zrange(keys.owned(""), 0, -1) == [new]  # the old one past the retention, dropped
    ids = [made(store) for _ in range(3)]
    assert store.client.zrange(keys.owned(""), 0, -1) == ids  # the cap kept: the oldest dropped


def test_an_override_merges_with_the_bounds_in_effect_and_is_removed(store: Store) -> None:
    replicas = store.replicas
    found = replicas.set_scale("m", CONFIG, "key k", min_replicas=2)
    assert not isinstance(found, ScaleReply)
    assert found.bounds == ScaleBounds(2, 4, BoundsSource.OVERRIDE) and found.was == CONFIG
    found = replicas.set_scale("m", CONFIG, "key k", max_replicas=3)
    assert not isinstance(found, ScaleReply) and found.bounds == ScaleBounds(2, 3, BoundsSource.OVERRIDE)
    assert found.was.source is BoundsSource.OVERRIDE
    assert replicas.set_scale("m", CONFIG, "key k", max_replicas=1) is ScaleReply.INVALID  # min 2 stays
    assert replicas.snapshot("m", {}).override == ScaleBounds(2, 3, BoundsSource.OVERRIDE)
    assert "m" in store.client.lrange(keys.SCALE, 0, -1)  # the leader is woken
    assert replicas.clear_scale("m") == ScaleBounds(2, 3, BoundsSource.OVERRIDE)
    assert replicas.snapshot("m", {}).override is None and replicas.clear_scale("m") is None


def test_a_stored_override_that_does_not_hold_is_ignored(store: Store) -> None:
    store.client.hset(keys.scale_bounds("m"), mapping={"min_replicas": 3, "max_replicas": 2})
    assert store.replicas.snapshot("m", {}).override is None
    assert Policy.of(MODEL.scaling, None).max_replicas == 4


def test_the_autoscaler_keeps_an_overrides_minimum_warm_and_lets_it_go_once_removed(store: Store,
                                                                                   clock: Clock) -> None:
    autoscaler = scaler(store)
    autoscaler.lead("t", full=True)
    assert states(store) == []
    store.replicas.set_scale("m", CONFIG, "key k", min_replicas=1)
    token = store.leadership(30).hold() or ""
    autoscaler.lead(token, full=True)
    assert states(store) == [ReplicaState.READY]  # no job: the override's minimum
    desired = store.replicas.snapshot("m", {}).desired
    assert desired is not None and desired.replicas == 1 and "-> 1" in desired.reason
    store.replicas.clear_scale("m")
    clock.advance(MODEL.scaling.idle_timeout + 1)
    autoscaler.lead(token, full=True)
    assert states(store) in ([ReplicaState.DRAINING], [])
    desired = store.replicas.snapshot("m", {}).desired
    assert desired is not None and desired.replicas == 0


def test_the_override_caps_what_the_work_calls_for(store: Store) -> None:
    store.replicas.set_scale("m", CONFIG, "key k", max_replicas=1)
    submit(store, 40)
    scaler(store).lead(store.leadership(30).hold() or "", full=True)
    assert states(store) == [ReplicaState.READY]  # the models file allows 4


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FlaskClient, fakeredis.FakeRedis]:
    """The app over fakeredis, with API keys "a" and "b"."""
    models = tmp_path / "models.toml"
    models.write_text(MODELS)
    fake = fakeredis.FakeRedis(decode_responses=True)
    monkeypatch.setattr(gateway.app, "gateway_client", lambda url, timeout, connections: fake)
    app = create_app(Settings(models_file=models, api_keys=f"{digest('a')},{digest('b')}", max_wait=0.1))
    return app.test_client(), fake


def key(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {name}"}


@pytest.mark.parametrize("query", ["status=failed", "status=DONE", "limit=0", "limit=1001", "limit=x",
                                   "before=x", "before=-1", "before=nan", "before=inf"])
def test_a_bad_list_parameter_is_422(api: tuple[FlaskClient, Any], query: str) -> None:
    answer = api[0].get(f"/v1/jobs?{query}", headers=key("a"))
    assert answer.status_code == 422 and answer.json["error"]["code"] == "invalid_input", answer.json


def test_the_list_answers_its_shape_and_only_the_callers_jobs(api: tuple[FlaskClient, Any]) -> None:
    client = api[0]
    made = client.post("/v1/models/m/jobs", json={"x": 1}, headers=key("a")).json
    assert client.get("/v1/jobs?model=nope", headers=key("a")).status_code == 404
    listed = client.get("/v1/jobs?model=m&status=QUEUED&limit=10", headers=key("a")).json
    assert listed == {"jobs": [{"id": made["id"], "model": "m", "status": "QUEUED", "created_at": made["created_at"],
                                "started_at": None, "finished_at": None, "attempts": 0, "replica": None}],
                      "next": None}
    assert client.get("/v1/jobs", headers=key("b")).json == {"jobs": [], "next": None}
    assert client.delete("/v1/models/m/queue", headers=key("a")).json == {"cancelled": 1}  # error: purged
    cancelled = client.get("/v1/jobs", headers=key("a")).json["jobs"][0]
    assert cancelled["status"] == "CANCELLED" and "error" not in cancelled  # an error only when failed


@pytest.mark.parametrize("body", [{}, {"min_replicas": True}, {"max_replicas": 2.0}, {"min_replicas": "1"},
                                  {"min_replicas": -1}, {"max_replicas": 0}, {"max_replicas": 1001},
                                  {"min_replicas": 3, "max_replicas": 2}, {"min_replicas": 5}, {"min": 1},
                                  {"min_replicas": None}, [1]])
def test_a_bad_scale_body_is_422(api: tuple[FlaskClient, Any], body: Any) -> None:
    client, fake = api
    answer = client.put("/v1/models/m/scale", json=body, headers=key("a"))
    assert answer.status_code == 422 and answer.json["error"]["code"] == "invalid_input", answer.json
    assert not fake.exists(keys.scale_bounds("m"))


def test_a_scale_request_without_json_or_of_an_unknown_model_is_refused(api: tuple[FlaskClient, Any]) -> None:
    client = api[0]
    malformed = client.put("/v1/models/m/scale", data=b"{", content_type="application/json", headers=key("a"))
    assert malformed.status_code == 400 and malformed.json["error"]["code"] == "malformed_json"
    assert client.put("/v1/models/m/scale", data=b"x", content_type="text/plain", headers=key("a")).status_code == 415
    assert client.put("/v1/models/m/scale", headers=key("a")).status_code == 422  # no body
    for answer in (client.put("/v1/models/nope/scale", json={"min_replicas": 1}, headers=key("a")),
                   client.delete("/v1/models/nope/scale", headers=key("a"))):
        assert answer.status_code == 404 and answer.json["error"]["code"] == "unknown_model"


def test_an_override_shows_in_the_model_view_and_the_events_until_removed(api: tuple[FlaskClient, Any]) -> None:
    client = api[0]
    assert client.get("/v1/models/m", headers=key("a")).json["scale"] == {
        "model": "m", "min_replicas": 0, "max_replicas": 4, "source": "config"}
    answer = client.put("/v1/models/m/scale", json={"min_replicas": 1}, headers=key("a"))
    assert answer.status_code == 200
    assert answer.json == {"model": "m", "min_replicas": 1, "max_replicas": 4, "source": "override"}
    view = client.get("/v1/models/m", headers=key("b")).json
    assert (view["min_replicas"], view["max_replicas"], view["scale"]["source"]) == (1, 4, "override")
    assert client.put("/v1/models/m/scale", json={"max_replicas": 2}, headers=key("b")).json["min_replicas"] == 1
    reset = client.delete("/v1/models/m/scale", headers=key("b"))
    assert reset.status_code == 200
    assert reset.json == {"model": "m", "min_replicas": 0, "max_replicas": 4, "source": "config"}
    assert client.get("/v1/models", headers=key("a")).json["models"][0]["scale"]["source"] == "config"
    events = client.get("/v1/events?model=m", headers=key("a")).json["events"]
    assert [e["kind"] for e in events] == ["scale_reset", "scale_set", "scale_set"]
    first = events[2]["reason"]
    assert f"by key {digest('a')[:16]}" in first and digest("a") not in first  # who, by the digest's prefix
    assert first.startswith("min_replicas=1 max_replicas=4 (were min_replicas=0 max_replicas=4, config)")
    reset = events[0]["reason"]
    assert "(were min_replicas=1 max_replicas=2)" in reset and f"key {digest('b')[:16]}" in reset
