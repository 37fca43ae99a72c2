"""The second review's holes around the gateway, in the pure tier: integers past a float, the guard's failed keys
and the rate limit without keys (on fakeredis), and gunicorn's own errors as JSON."""

import json
from pathlib import Path

import fakeredis
import pytest
from gunicorn.http.errors import LimitRequestLine

from gateway import errors
from gateway.app import create_app
from gateway.auth import Guard, digest
from workers.config import Settings
from workers.protocols.base import parse_json
from workers.store import Store

pytestmark = pytest.mark.unit
PAST_A_FLOAT = "1" + "0" * 400


def test_review2_hole18_an_integer_past_a_float_is_malformed_in_an_input(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text('[models.m]\ncommand = ["x"]\n')
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", models_file=models)).test_client()
    for number in (PAST_A_FLOAT, "-" + PAST_A_FLOAT):
        answer = app.post("/v1/models/m/jobs", data=f'{{"x": {number}}}', content_type="application/json")
        assert answer.status_code == 400 and answer.json["error"]["code"] == "malformed_json", answer.json


def test_review2_hole18_an_integer_past_a_float_is_a_bad_replica_answer() -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_json(f'{{"y": [{PAST_A_FLOAT}]}}'.encode())
    assert parse_json(b'{"y": 1' + b"0" * 300 + b"}")[0] == {"y": 10 ** 300}  # within a float's range


def test_review2_hole18_gunicorns_html_error_becomes_the_api_error() -> None:
    from gateway.server import as_json

    html = b"HTTP/1.1 414 URI Too Long\r\nConnection: close\r\nContent-Type: text/html\r\n\r\n<html>...</html>"
    head, _, body = as_json(html, LimitRequestLine(9000, 8190)).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 414 URI Too Long\r\n") and b"Content-Type: application/json" in head
    assert json.loads(body)["error"]["code"] == "uri_too_long"
    crashed = as_json(b"HTTP/1.1 500 Internal Server Error\r\n\r\n", RuntimeError("secret detail"))
    assert b"secret detail" not in crashed and json.loads(crashed.partition(b"\r\n\r\n")[2])["error"]["code"] == \
        "internal"


def test_review2_hole10_a_head_is_complete_at_its_blank_line() -> None:
    from gateway.server import complete

    assert not complete(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n{body")


def test_review2_hole09_failed_keys_from_an_address_never_deny_a_valid_key() -> None:
    guard = Guard(Store.of(fakeredis.FakeRedis(decode_responses=True)).limits, frozenset({digest("right")}), 20, 0)
    answers = []
    for i in range(25):
        try:
            guard.check(f"Bearer wrong-{i}", "10.0.0.1")
        except errors.ApiError as exc:
            answers.append(exc.status)
    assert answers == [401] * 20 + [429] * 5
    assert guard.check("Bearer right", "10.0.0.1") == digest("right")[:16]
    with pytest.raises(errors.TooManyFailures):
        guard.check(None, "10.0.0.1")


def test_review2_hole20_without_keys_the_rate_limit_is_per_client_address() -> None:
    limits = Store.of(fakeredis.FakeRedis(decode_responses=True)).limits
    guard = Guard(limits, frozenset(), 20, 1)
    refused = 0
    for _ in range(6):
        try:
            guard.check(None, "10.0.0.1")
        except errors.RateLimited:
            refused += 1
    assert refused >= 1  # six requests span a few seconds at most, one allowed in each
    assert guard.check(None, "10.0.0.2") == ""  # another address has its own budget
