"""The pure tier: the replica server's contract, the example model, and the models file."""

import time
from typing import Any

import pytest

from model.server import create_app
from workers.config import parse_models
from workers.store import keys

pytestmark = pytest.mark.unit


def test_models_file_parses_with_defaults_and_rejects_unknown_fields() -> None:
    models = parse_models({"models": {"m": {"command": ["python", "x.py"], "concurrency": 2}}})
    assert keys.celery_queue(models["m"].name) == "model.m"
    assert models["m"].scaling.max_replicas == 1 and models["m"].scaling.concurrency == 2
    with pytest.raises(ValueError, match="concurency"):
        parse_models({"models": {"m": {"concurency": 2}}})
    with pytest.raises(ValueError, match="name"):
        parse_models({"models": {"bad/name": {"command": ["x"]}}})


class SlowModel:
    """A model whose setup waits for the test."""

    def setup(self) -> None:
        time.sleep(0.3)

    def predict(self, payload: Any) -> Any:
        if payload.get("crash"):
            raise RuntimeError("boom")
        if "x" not in payload:
            raise ValueError("x is required")
        return {"y": payload["x"] * 2}


def test_replica_server_contract() -> None:
    app = create_app("tests.unit.test_model_server:SlowModel").test_client()
    assert app.get("/ok").status_code == 503
    assert app.post("/", json={"x": 1}).status_code == 503
    deadline = time.monotonic() + 5
    while app.get("/ok").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app.get("/ok").json == {"status": "READY", "error": None}
    assert app.post("/", json={"x": 21}).json == {"y": 42}
    bad = app.post("/", json={"z": 1})
    assert bad.status_code == 422 and bad.json["error"] == {"code": "bad_input", "message": "x is required"}
    assert app.post("/", data="{", content_type="application/json").status_code == 400
    crash = app.post("/", json={"crash": True})
    assert crash.status_code == 500 and crash.json["error"]["message"] == "RuntimeError: boom"


class BrokenModel:
    """A model whose setup fails."""

    def setup(self) -> None:
        raise OSError("weights missing")


def test_replica_reports_setup_failure() -> None:
    app = create_app("tests.unit.test_model_server:BrokenModel").test_client()
    deadline = time.monotonic() + 5
    while app.get("/ok").json["status"] == "STARTING" and time.monotonic() < deadline:
        time.sleep(0.01)
    answer = app.get("/ok")
    assert answer.status_code == 503
    assert answer.json == {"status": "SETUP_FAILED", "error": "OSError: weights missing"}


def test_example_model_validates_its_input() -> None:
    from model.model import parse_features

    assert parse_features({"features": [[1, 2, 3, 4.5]]}) == [[1.0, 2.0, 3.0, 4.5]]
    for bad in [{}, {"features": []}, {"features": [[1, 2]]}, {"features": [[1, 2, 3, "4"]]},
                {"features": [[True, 2, 3, 4]]}, [1, 2]]:
        with pytest.raises(ValueError):
            parse_features(bad)
