"""The webhook routes in the pure tier (the app on fakeredis): a submit with a bad webhook is refused with 400
``invalid_webhook`` on both doors, recording nothing; an allowed one is kept and shown; a key's default; the failed
list and an unknown redelivery."""

from pathlib import Path

import fakeredis
import pytest

import gateway.app
from gateway.app import create_app
from gateway.webhooks import new_secret
from workers.config import Settings

pytestmark = pytest.mark.unit
SECRET = new_secret()


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeRedis:
    """The fakeredis under the apps of the test."""
    found = fakeredis.FakeRedis(decode_responses=True)
    monkeypatch.setattr(gateway.app, "gateway_client", lambda url, timeout, connections: found)
    (tmp_path / "models.toml").write_text('[models.m]\ncommand = ["x"]\n')
    monkeypatch.chdir(tmp_path)
    return found


@pytest.mark.parametrize(("secret", "url"), [
    ("", "http://127.0.0.1:9/hook"),  # no secret: webhooks are off
    (SECRET, "http://127.0.0.1:9/hook"),  # loopback, not allowed
    (SECRET, "http://10.0.0.7/hook"),
    (SECRET, "gopher://127.0.0.1/"),
])
def test_a_submit_with_a_refused_webhook_is_400_and_records_nothing(fake: fakeredis.FakeRedis, secret: str,
                                                                    url: str) -> None:
    app = create_app(Settings(models_file=Path("models.toml"), webhook_secret=secret)).test_client()
    native = app.post("/v1/models/m/jobs", query_string={"webhook": url}, json={"x": 1})
    assert native.status_code == 400 and native.json["error"]["code"] == "invalid_webhook"
    runpod = app.post("/runpod/v2/m/run", json={"input": {"x": 1}, "webhook": url})
    assert runpod.status_code == 400 and isinstance(runpod.json["error"], str)
    assert list(fake.scan_iter("sm:job:*")) == [] and fake.llen("model.m") == 0


def test_an_allowed_webhook_is_kept_and_shown_pending(fake: fakeredis.FakeRedis) -> None:
    app = create_app(Settings(models_file=Path("models.toml"), webhook_secret=SECRET,
                              webhook_allow_networks="127.0.0.0/8")).test_client()
    native = app.post("/v1/models/m/jobs", query_string={"webhook": "http://127.0.0.1:9/hook"}, json={"x": 1})
    assert native.status_code == 202
    assert native.json["webhook"] == {"status": "pending", "attempts": 0, "last_error": ""}
    runpod = app.post("/runpod/v2/m/run", json={"input": {"x": 1}, "webhook": "http://127.0.0.1:9/r"})
    assert runpod.status_code == 200
    shown = app.get(f"/v1/jobs/{runpod.json['id']}").json
    assert shown["webhook"]["status"] == "pending" and fake.hget(f"sm:job:{runpod.json['id']}", "webhook") == \
        "http://127.0.0.1:9/r"
    plain = app.post("/v1/models/m/jobs", json={"x": 1})
    assert plain.json["webhook"] is None


def test_a_key_without_a_webhook_gets_the_default(fake: fakeredis.FakeRedis) -> None:
    app = create_app(Settings(models_file=Path("models.toml"), webhook_secret=SECRET,
                              webhooks={"*": "https://hooks.example/all"})).test_client()
    job = app.post("/v1/models/m/jobs", json={"x": 1}).json
    assert fake.hget(f"sm:job:{job['id']}", "webhook") == "https://hooks.example/all"


def test_the_failed_list_and_redelivery_of_an_unknown_delivery(fake: fakeredis.FakeRedis) -> None:
    app = create_app(Settings(models_file=Path("models.toml"), webhook_secret=SECRET)).test_client()
    assert app.get("/v1/webhooks/failed").json == {"failed": []}
    missing = app.post("/v1/webhooks/failed/" + "0" * 32 + "/redeliver")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "unknown_delivery"
    assert app.get("/v1/webhooks/failed", query_string={"limit": 0}).status_code == 422
