"""The gateway's exception tree, mapped to HTTP in one place; each front door renders the error body its clients
expect (the native API ``{"error": {"code", "message"}}``, RunPod's and KServe's ``{"error": "<message>"}``)."""

import logging
from collections.abc import Callable
from typing import Any

import redis
from flask import Flask, Response, current_app, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the client sees: an HTTP status, a stable code and a message."""

    status = 500
    code = "internal"
    retry_after: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(ApiError):
    """No API key, or one that is not accepted."""

    status, code = 401, "unauthorized"


class RateLimited(ApiError):
    """Too many requests with one key."""

    status, code, retry_after = 429, "rate_limited", 1


class QueueFull(ApiError):
    """The model's queue is at its cap."""

    status, code, retry_after = 429, "queue_full", 5


class UnknownModel(ApiError):
    """No such model is served."""

    status, code = 404, "unknown_model"


class UnknownReplica(ApiError):
    """No such replica of the model (it may have been stopped)."""

    status, code = 404, "unknown_replica"


class UnknownJob(ApiError):
    """No such job, or it has expired."""

    status, code = 404, "unknown_job"


class MalformedJson(ApiError):
    """The body is not valid JSON."""

    status, code = 400, "malformed_json"


class IncompleteBody(ApiError):
    """The request's body did not arrive whole in time (or the client went away)."""

    status, code = 408, "request_timeout"


class InvalidInput(ApiError):
    """The request is well-formed JSON but not what the endpoint takes."""

    status, code = 422, "invalid_input"


class JobFinished(ApiError):
    """The job can no longer be cancelled."""

    status, code = 409, "job_finished"


class NotRetryable(ApiError):
    """The job cannot run again now: it has not finished, it succeeded, or its model is no longer served."""

    status, code = 409, "not_retryable"


class TooManyFailures(ApiError):
    """Too many failed authentications from one client address."""

    status, code, retry_after = 429, "too_many_failed_authentications", 60


class TooManyWaiting(ApiError):
    """A door that answers only with the result found every waiting place taken: nothing was recorded."""

    status, code, retry_after = 429, "too_many_waiting", 1


class Unavailable(ApiError):
    """Redis cannot be reached; nothing was recorded (a job answered this way never runs)."""

    status, code, retry_after = 503, "unavailable", 1


class OutcomeUnknown(ApiError):
    """Redis went away mid-submit and stayed away: the job may or may not have been recorded."""

    status, code, retry_after = 504, "outcome_unknown", 5


class StoreFull(ApiError):
    """Redis is at its memory bound: it refuses writes (nothing was recorded) until finished jobs expire."""

    status, code, retry_after = 507, "store_full", 30


class Unsupported(ApiError):
    """The request asks for something this door does not do."""

    status, code = 400, "unsupported"


class InvalidIdempotencyKey(ApiError):
    """An Idempotency-Key header that is empty, over 255 characters, or not printable ASCII."""

    status, code = 400, "invalid_idempotency_key"


class IdempotencyConflict(ApiError):
    """The Idempotency-Key already made a job of another request (nothing was recorded)."""

    status, code = 409, "idempotency_conflict"


class InvalidWebhook(ApiError):
    """A webhook URL the platform will not deliver to (its form, or its target)."""

    status, code = 400, "invalid_webhook"


class UnknownDelivery(ApiError):
    """No such given-up webhook delivery of the caller's."""

    status, code = 404, "unknown_delivery"


class ModelFailed(ApiError):
    """A door that answers only with the result: the model failed the job (not for its input)."""

    status, code = 500, "model_error"


class StillRunning(ApiError):
    """A door that answers only with the result waited its longest and the job has not finished (it goes on)."""

    status, code, retry_after = 504, "still_running", 1


class NotReady(ApiError):
    """A model cannot serve now: its last start failed."""

    status, code, retry_after = 503, "not_ready", 5


Render = Callable[[str, str], Any]  # (code, message) → a door's error body
BODIES = "error_bodies"  # the app's extension: the path prefix of each door → its Render


def native_body(code: str, message: str) -> Any:
    """The native API's error body."""
    return {"error": {"code": code, "message": message}}


def flat_body(code: str, message: str) -> Any:
    """RunPod's and the Open Inference Protocol's error body: the message alone."""
    return {"error": message}


def render(code: str, message: str) -> Any:
    """The error body of the door the request came in by (found by its path: a path no route matches too)."""
    bodies: dict[str, Render] = current_app.extensions.get(BODIES, {})
    for prefix, body in bodies.items():
        if request.path == prefix or request.path.startswith(prefix + "/"):
            return body(code, message)
    return native_body(code, message)


def error_response(status: int, code: str, message: str, retry_after: int | None = None) -> Response:
    """An error response in the body of the request's door."""
    response = jsonify(render(code, message))
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def validation_error(exc: ValidationError) -> Response:
    """flask-openapi3's validation failures, in our error body."""
    problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
    return error_response(InvalidInput.status, InvalidInput.code, problems)


def register(app: Flask, bodies: dict[str, Render]) -> None:
    """Map every exception to a JSON error response, in the body of each door (``bodies``: path prefix → Render;
    any other path: the native body)."""
    app.extensions[BODIES] = bodies

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        response = error_response(exc.status, exc.code, exc.message, exc.retry_after)
        if isinstance(exc, Unauthorized):
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.errorhandler(redis.OutOfMemoryError)
    def redis_full(exc: redis.OutOfMemoryError) -> Response:
        return error_response(StoreFull.status, StoreFull.code, f"the job store is full: {exc}",
                              StoreFull.retry_after)

    @app.errorhandler(redis.RedisError)
    def redis_down(exc: redis.RedisError) -> Response:
        return error_response(Unavailable.status, Unavailable.code, f"redis unreachable: {exc}",
                              Unavailable.retry_after)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(exc.code or 500, code, exc.description or code)
        for name, value in exc.get_headers():
            if name != "Content-Type":  # e.g. Allow on a 405
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal", "internal error; see the gateway's log")
