"""What a replica's answer makes of a job: nothing a replica sends is trusted."""

import math

import pytest

from workers.job import JobError, JobStatus, Outcome
from workers.protocols import NativeProtocol, Readiness

pytestmark = pytest.mark.unit
NATIVE = NativeProtocol()
GOOD = b'{"y": 1}'


@pytest.mark.parametrize(("status", "headers", "body", "expected"), [
    (200, {"X-Inference-Seconds": "0.25"}, GOOD, Outcome(JobStatus.SUCCEEDED, output='{"y": 1}', service_time=0.25)),
    (200, {}, GOOD, Outcome(JobStatus.SUCCEEDED, output='{"y": 1}')),
    (422, {}, b'{"error": {"code": "bad_input", "message": "4 numbers", "detail": [1]}}',
     Outcome(JobStatus.FAILED, error=JobError("bad_input", "4 numbers"))),
    (500, {}, b'{"error": "a string"}',
     Outcome(JobStatus.FAILED, error=JobError("model_error", 'replica answered 500: {"error": "a string"}'))),
    (500, {}, b'{"error": {"code": "Not A Code!", "message": "x"}}',
     Outcome(JobStatus.FAILED, error=JobError("model_error", 'replica answered 500: {"error": {"code": '
                                                             '"Not A Code!", "message": "x"}}'))),
])
def test_answers_that_follow_the_contract(status: int, headers: dict[str, str], body: bytes,
                                          expected: Outcome) -> None:
    assert NATIVE.outcome(status, headers, body, timeout=30) == expected


@pytest.mark.parametrize(("headers", "body"), [
    ({"X-Inference-Seconds": "nan"}, GOOD), ({"X-Inference-Seconds": "inf"}, GOOD),
    ({"X-Inference-Seconds": "-1"}, GOOD), ({"X-Inference-Seconds": "31"}, GOOD),
    ({"X-Inference-Seconds": "soon"}, GOOD), ({}, b"<html>"), ({}, b'{"y": NaN}'), ({}, b"\xff\xfe"),
    ({}, b'{"y": 1e400}'), ({}, b"[" * 101 + b"]" * 101), ({}, b"[" * 5000 + b"]" * 5000),
])
def test_answers_that_break_it_fail_the_job_with_bad_response(headers: dict[str, str], body: bytes) -> None:
    outcome = NATIVE.outcome(200, headers, body, timeout=30)
    assert outcome.status is JobStatus.FAILED and outcome.error is not None
    assert outcome.error.code == "bad_response" and outcome.service_time is None


def test_nesting_up_to_the_limit_is_fine() -> None:
    assert NATIVE.outcome(200, {}, b"[" * 100 + b"]" * 100, 30).status is JobStatus.SUCCEEDED


def test_a_long_error_message_is_cut() -> None:
    outcome = NATIVE.outcome(500, {}, b'{"error": {"code": "x", "message": "' + b"m" * 10_000 + b'"}}', 30)
    assert outcome.error is not None and len(outcome.error.message) == 2000


def test_readiness() -> None:
    assert NATIVE.readiness(200, b"{}") == (Readiness.READY, "")
    assert NATIVE.readiness(503, b'{"status": "STARTING"}') == (Readiness.STARTING, "")
    assert NATIVE.readiness(503, b'{"status": "SETUP_FAILED", "error": "OSError: x"}') == \
        (Readiness.FAILED, "setup failed: OSError: x")
    assert NATIVE.readiness(502, b"<html>") == (Readiness.STARTING, "")


def test_a_stored_error_that_cannot_be_read_is_still_an_error() -> None:
    assert JobError.decode('{"code": "x"}').code == "bad_record"
    assert JobError.decode("not json").code == "bad_record"
    assert math.isfinite(NATIVE.outcome(200, {"X-Inference-Seconds": "0"}, GOOD, 30).service_time or 0)
