"""Every route needs an API key unless it is explicitly public: the app's URL map walked, each route called
without a key."""

import re
from pathlib import Path

import fakeredis
import pytest

import gateway.app
from gateway.app import PUBLIC, create_app
from gateway.auth import digest
from workers.config import Settings

pytestmark = pytest.mark.unit


def test_every_route_not_public_refuses_a_call_without_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models.toml"
    models.write_text('[models.m]\ncommand = ["x"]\n')
    fake = fakeredis.FakeRedis(decode_responses=True)
    monkeypatch.setattr(gateway.app, "gateway_client", lambda url, timeout, connections: fake)
    app = create_app(Settings(models_file=models, api_keys=digest("k"), auth_failures_per_minute=10_000))
    client, walked = app.test_client(), 0
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<[^>]+>", "m", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            answer = client.open(path, method=method, json={})
            if rule.endpoint in PUBLIC:
                assert answer.status_code != 401, (method, rule.rule)
            else:
                walked += 1
                assert answer.status_code == 401, (method, rule.rule, answer.status_code, answer.json)
    assert walked >= 8  # the walk saw the API, not an empty map
    assert client.get("/nowhere").status_code == 401  # nor is a path no route matches open


def test_public_names_only_routes_that_exist(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text('[models.m]\ncommand = ["x"]\n')
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", models_file=models))
    assert set(PUBLIC) <= {rule.endpoint for rule in app.url_map.iter_rules()}
