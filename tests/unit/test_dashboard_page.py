"""The dashboard's page: public, one self-contained file (its script allowed by hash, nothing from another site),
and no part of the OpenAPI document."""

import base64
import hashlib
import re
from pathlib import Path

import fakeredis
import pytest
from flask.testing import FlaskClient

import gateway.app
from gateway.app import create_app
from gateway.auth import digest
from workers.config import Settings

pytestmark = pytest.mark.unit


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    """A gateway with API keys on, over fakeredis."""
    models = tmp_path / "models.toml"
    models.write_text('[models.m]\ncommand = ["x"]\n')
    fake = fakeredis.FakeRedis(decode_responses=True)
    monkeypatch.setattr(gateway.app, "gateway_client", lambda url, timeout, connections: fake)
    return create_app(Settings(models_file=models, api_keys=digest("k"))).test_client()


def test_the_page_needs_no_key_and_runs_only_its_own_script(client: FlaskClient) -> None:
    answer = client.get("/dashboard")
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    page = answer.get_data(as_text=True)
    (script,) = re.findall(r"<script>(.*?)</script>", page, re.DOTALL)
    allowed = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = answer.headers["Content-Security-Policy"]
    assert f"script-src 'sha256-{allowed}';" in policy and "connect-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert re.findall(r"(?:src|href)\s*=|url\(|@import", page) == []  # no asset to load, from here or elsewhere
    assert client.get("/v1/models").status_code == 401  # its data needs the key


def test_the_page_is_not_in_the_openapi_document(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").json["paths"]
    assert "/v1/models" in paths and "/dashboard" not in paths
