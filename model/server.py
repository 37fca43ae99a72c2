"""The replica's HTTP server: ``POST /`` runs inference, ``GET /ok`` reports readiness.

Every replica speaks this contract whatever model it serves. ``GET /ok`` answers 503 while the
model's ``setup()`` runs (or after it failed, with the reason) and 200 once it finished. Bad input
(``ValueError`` from ``predict``) is a 422, any other model exception a 500, both as JSON
``{"error": {"code", "message"}}``. A ``predict`` that is a generator streams its parts: the answer is
``application/x-ndjson``, chunked, one line per part (``{"part": <json>}``), and a failure after the first part is a
last line ``{"error": {"code", "message"}}``. Served by gunicorn with ``2 * CONCURRENCY + 1`` threads, so that
``GET /ok`` is answered while every slot is busy (and while requests whose caller gave up still compute).

Environment: ``HOST`` (127.0.0.1), ``PORT`` (8000), ``CONCURRENCY`` (4), ``MODEL_CLASS``
(``model.model:Model``), ``MAX_BODY_BYTES`` (10 MiB).
"""

import enum
import importlib
import inspect
import json
import os
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException


class Health(enum.StrEnum):
    """Where the replica is in its life."""

    STARTING = "STARTING"
    READY = "READY"
    SETUP_FAILED = "SETUP_FAILED"


def load_model(spec: str) -> Any:
    """Instantiate the model class named ``module:Class``."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)()


def json_response(body: Any, status: int = 200) -> Response:
    """A JSON response."""
    return Response(json.dumps(body), status=status, mimetype="application/json")


def error(code: str, message: str, status: int) -> Response:
    """The error body every replica returns."""
    return json_response({"error": {"code": code, "message": message}}, status)


class Replica:
    """One model behind the HTTP contract; ``setup()`` runs in the background."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.health = Health.STARTING
        self.setup_error = ""

    def setup(self) -> None:
        """Run the model's setup once and record the outcome."""
        try:
            self.model.setup()
            self.health = Health.READY
        except Exception as exc:
            self.setup_error = f"{type(exc).__name__}: {exc}"
            self.health = Health.SETUP_FAILED
            traceback.print_exc()

    def ok(self) -> Response:
        """Readiness: 200 once set up."""
        body = {"status": self.health.value, "error": self.setup_error or None}
        return json_response(body, 200 if self.health is Health.READY else 503)

    def predict(self) -> Response:
        """Run inference on the JSON body."""
        if self.health is not Health.READY:
            return error("not_ready", f"model is {self.health.value}", 503)
        payload = request.get_json(silent=True)
        if payload is None:
            return error("malformed_json", "the body must be JSON", 400)
        started = time.perf_counter()
        try:
            answer = self.model.predict(payload)
            if inspect.isgenerator(answer):
                return stream(answer)
            response = json_response(answer)
            response.headers["X-Inference-Seconds"] = f"{time.perf_counter() - started:.6f}"
            return response
        except ValueError as exc:
            return error("bad_input", str(exc), 422)
        except Exception as exc:
            traceback.print_exc()
            return error("model_error", f"{type(exc).__name__}: {exc}", 500)


NDJSON = "application/x-ndjson"


def stream(parts: Iterator[Any]) -> Response:
    """A generator's parts as NDJSON lines, sent as they come; the first is taken now, so bad input before it is
    still a 422 (and a model failure a 500)."""
    try:
        first = [next(parts)]
    except StopIteration:
        first = []
    return Response(part_lines(first, parts), status=200, mimetype=NDJSON)


def part_lines(first: list[Any], parts: Iterator[Any]) -> Iterator[str]:
    """One ``{"part": …}`` line per part; a failure midway is one last ``{"error": …}`` line."""
    for part in first:
        yield json.dumps({"part": part}) + "\n"
    try:
        for part in parts:
            yield json.dumps({"part": part}) + "\n"
    except Exception as exc:
        traceback.print_exc()
        code = "bad_input" if isinstance(exc, ValueError) else "model_error"
        yield json.dumps({"error": {"code": code, "message": f"{type(exc).__name__}: {exc}"}}) + "\n"


def create_app(model_class: str | None = None) -> Flask:
    """The replica's WSGI app; starts the model's setup in a background thread."""
    replica = Replica(load_model(model_class or os.environ.get("MODEL_CLASS", "model.model:Model")))
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(os.environ.get("MAX_BODY_BYTES", 10 * 1024 * 1024))
    app.add_url_rule("/ok", "ok", replica.ok, methods=["GET"])
    app.add_url_rule("/", "predict", replica.predict, methods=["POST"])

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return error((exc.name or "error").lower().replace(" ", "_"), exc.description or "", exc.code or 500)

    threading.Thread(target=replica.setup, name="model-setup", daemon=True).start()
    return app


def main() -> None:
    """Serve the model with gunicorn on ``HOST:PORT``."""
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}")
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("workers", 1)
            # a thread per slot, as many for requests whose caller gave up (a slow input still computing), and
            # one more: readiness is answered however busy the model is
            self.cfg.set("threads", 2 * int(os.environ.get("CONCURRENCY", "4")) + 1)
            self.cfg.set("keepalive", 75)
            self.cfg.set("graceful_timeout", 5)
            self.cfg.set("accesslog", None)

        def load(self) -> Flask:
            return create_app()

    Server().run()


if __name__ == "__main__":
    main()
