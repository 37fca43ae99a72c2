"""The gateway's Flask app factory (served by gunicorn: ``gunicorn 'gateway.app:serve()'``, which also starts the
process's webhook deliverers)."""

import base64
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import redis
from flask import Response, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from flask_openapi3 import Info, OpenAPI
from prometheus_client import CONTENT_TYPE_LATEST
from redis.backoff import NoBackoff
from redis.retry import Retry
from werkzeug.exceptions import BadRequest, ClientDisconnected, RequestEntityTooLarge, UnsupportedMediaType
from werkzeug.middleware.proxy_fix import ProxyFix

from gateway import errors, kserve, native, runpod
from gateway.deliverer import start_deliverers
from gateway.metrics import exposition
from gateway.native import respond
from gateway.schemas import ErrorBody, Health
from gateway.service import Gateway
from workers.config import Settings
from workers.protocols.base import float_sized
from workers.store import Store, urls

PUBLIC = frozenset({  # the endpoints anyone may call; every other route needs an API key (when keys are set)
    "healthz", "readyz", "openapi_json", "static",  # probes, the OpenAPI document, Flask's (empty) static folder
    "dashboard",  # the dashboard's page (its data comes from the API, with a key)
    "openapi.openapi", "openapi.doc_url", "openapi.static",  # the docs UI
    "kserve.server_live", "kserve.server_ready",  # the Open Inference Protocol's probes (open, as on KServe)
})

DASHBOARD = Path(__file__).with_name("dashboard.html")  # one page: its style and script inline, nothing from elsewhere
COMMAND_CONNECTIONS = 4096  # Redis connections of a gateway process for its short commands (one per request at most)


def authenticate(gateway: Gateway) -> None:
    """Who calls (g.principal), within their limits: every route but the PUBLIC ones needs a key (so does a path
    no route matches)."""
    g.principal = ""
    if request.endpoint not in PUBLIC:
        g.principal = gateway.guard.check(request.headers.get("Authorization"), request.remote_addr or "unknown",
                                          bare=request.blueprint == "runpod", metrics=request.endpoint == "metrics")


def parse_json_body() -> None:
    """Reject a body that is not JSON before any handler runs (415, 400)."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    if request.content_length == 0 or (request.content_length is None and "Transfer-Encoding" not in request.headers):
        return  # no body (a cancel's POST): a route that takes one answers 422
    if not request.is_json:
        raise UnsupportedMediaType("send the model's input as Content-Type: application/json")
    limit = request.max_content_length
    try:
        if request.content_length is None and limit is not None and len(request.get_data(cache=True)) >= limit:
            raise RequestEntityTooLarge()  # a chunked body is cut at the limit rather than refused by werkzeug
        request.get_json()
    except ClientDisconnected as exc:  # werkzeug's word for a body cut short, by the client or by its deadline
        raise errors.IncompleteBody("the request's body did not arrive whole within SM_HEADER_TIMEOUT seconds of "
                                    "its first byte") from exc
    except BadRequest as exc:
        raise errors.MalformedJson("the body is not valid JSON") from exc
    except RecursionError as exc:
        raise errors.MalformedJson("the body is nested too deeply") from exc


class StrictJSON(DefaultJSONProvider):
    """JSON as the standard says: NaN, Infinity and numbers too large for a float are malformed in a request."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse, refusing what is not a finite number."""
        return json.loads(s, parse_constant=refuse_constant, parse_float=finite, parse_int=float_sized, **kwargs)


def refuse_constant(name: str) -> Any:
    """``json.loads``'s hook for NaN and Infinity."""
    raise ValueError(f"{name} is not JSON")


def finite(text: str) -> float:
    """``json.loads``'s hook for a number with a fraction or exponent: a finite float, or ValueError (1e999)."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of range")
    return number


def create_app(settings: Settings | None = None) -> OpenAPI:
    """The gateway app for the given settings (from the environment by default)."""
    settings = settings or Settings()
    commands = Store.of(gateway_client(settings.redis_url, settings.redis_timeout, COMMAND_CONNECTIONS),
                        settings.job_retention, replicas=settings.redis_replicas,
                        replicas_within=settings.redis_timeout / 2)
    waits = Store.of(gateway_client(settings.redis_url, settings.max_wait + 5, settings.max_waiters + 8),
                     settings.job_retention)  # a connection per waiting request (and the replica logs asked for)
    gateway = Gateway(settings, settings.load_models(), commands, waits)
    app = OpenAPI(__name__, info=Info(title="serverless-model", version="0.1.0"),
                  security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
                  validation_error_status=422, validation_error_model=ErrorBody,
                  validation_error_callback=errors.validation_error)
    app.json = StrictJSON(app)
    app.url_map.merge_slashes = False  # a path with "//" is unknown (404), not an HTML redirect (which Flask's error
    #                                    handlers never see)
    if settings.trusted_proxies:  # the client is who the last trusted proxies say (else anyone could say so)
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies,  # type: ignore[method-assign]
                                x_proto=settings.trusted_proxies)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["gateway"] = gateway
    app.before_request(lambda: authenticate(gateway))
    app.before_request(kserve.take_json)
    app.before_request(parse_json_body)
    errors.register(app, {runpod.PREFIX: errors.flat_body, kserve.PREFIX: errors.flat_body})
    app.register_api(native.blueprint(gateway))
    app.register_api(runpod.blueprint(gateway))
    app.register_api(kserve.blueprint(gateway))

    @app.get("/healthz", responses={200: Health})
    def healthz() -> Response:
        """The process is alive."""
        return respond(Health(status="ok"))

    @app.get("/readyz", responses={200: Health, 503: ErrorBody})
    def readyz() -> Response:
        """Redis is reachable."""
        try:
            gateway.store.ping()
        except redis.RedisError as exc:
            raise errors.Unavailable(f"redis unreachable: {exc}") from exc
        return respond(Health(status="ok"))

    @app.get("/metrics", doc_ui=False)
    def metrics() -> Response:
        """The platform's metrics in Prometheus' text format (with API keys on, it wants one, or the metrics
        token)."""
        return Response(exposition(gateway), mimetype=CONTENT_TYPE_LATEST)

    page = DASHBOARD.read_text()
    headers = {"Content-Security-Policy": content_policy(page), "Cache-Control": "no-cache"}

    @app.get("/dashboard", doc_ui=False)
    def dashboard() -> Response:
        """The live dashboard: a page that polls the API (with the API key it asks for, when keys are set)."""
        return Response(page, mimetype="text/html", headers=headers)

    @app.get("/openapi.json", doc_ui=False)
    def openapi_json() -> Response:
        """The OpenAPI document."""
        return jsonify(app.api_doc)

    return app


def content_policy(page: str) -> str:
    """A Content-Security-Policy for ``page`` that runs only its own inline script and reaches only this origin."""
    scripts = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
                       for script in re.findall(r"<script>(.*?)</script>", page, re.DOTALL))
    return (f"default-src 'none'; script-src {scripts}; style-src 'unsafe-inline'; connect-src 'self'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def serve() -> OpenAPI:
    """The app as each gunicorn worker process serves it: ``create_app`` from the environment, and the process's
    webhook deliverers (``gateway.deliverer``)."""
    settings = Settings()
    app = create_app(settings)
    start_deliverers(settings)
    return app


def gateway_client(url: str, timeout: float, connections: int) -> redis.Redis:
    """A client of the gateway whose commands give up after ``timeout`` seconds, with up to ``connections`` open
    at once (redis-py's default, 100, is too few for a gevent worker's requests). No retries inside redis-py: a
    submit must know whether its one call reached Redis (see Gateway.settle)."""
    return urls.client(url, decode_responses=True, encoding_errors="replace", socket_timeout=timeout,
                       socket_connect_timeout=2, retry=Retry(NoBackoff(), 0), max_connections=connections)
