"""Streamed outputs: the replica's NDJSON answer, and reading it line by line as it comes."""

import json
from typing import Any

import pytest

from model.server import create_app
from workers.job import JobError, JobStatus
from workers.protocols.native import LineReader, NativeProtocol, read_line


class Counting:
    """Yields ``n`` parts; fails midway when asked to."""

    def setup(self) -> None:
        """Nothing to set up."""

    def predict(self, payload: Any) -> Any:
        """Parts 0..n-1, or a ValueError before the first for a bad n."""
        n = payload.get("n")
        if not isinstance(n, int):
            raise ValueError("n must be an integer")
        for i in range(n):
            if i == payload.get("fail_at"):
                raise RuntimeError("broke")
            yield {"i": i}


def reader_lines(chunks: list[bytes]) -> list[bytes]:
    reader = LineReader(1000)
    found = [line for chunk in chunks for line in reader.feed(chunk)]
    return found + reader.end()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_lines_come_whole_however_the_body_is_cut(size: int) -> None:
    body = b'{"part": 1}\n{"part": [2, 3]}\n\n{"part": "x"}'
    chunks = [body[i:i + size] for i in range(0, len(body), size)]
    assert reader_lines(chunks) == [b'{"part": 1}', b'{"part": [2, 3]}', b'{"part": "x"}']


def test_a_line_over_the_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="over 1000 bytes"):
        reader_lines([b"x" * 1001])


def test_a_line_is_a_part_an_error_or_refused() -> None:
    assert json.loads(read_line(b'{"part": {"a": [1]}}')) == {"a": [1]}  # type: ignore[arg-type]
    assert read_line(b'{"error": {"code": "model_error", "message": "m"}}') == JobError("model_error", "m")
    for bad in (b'{"part": 1, "x": 2}', b"[1]", b"not json", b'{"part": NaN}'):
        with pytest.raises(ValueError):
            read_line(bad)


def test_a_generator_predict_answers_ndjson_parts_and_a_streamed_answer_succeeds_with_its_parts() -> None:
    client = create_app("tests.unit.test_parts:Counting").test_client()
    while client.get("/ok").status_code != 200:
        pass
    answer = client.post("/", json={"n": 3})
    assert answer.status_code == 200 and answer.mimetype == "application/x-ndjson"
    assert [read_line(line) for line in answer.data.splitlines()] == ['{"i": 0}', '{"i": 1}', '{"i": 2}']
    outcome = NativeProtocol().outcome(200, {"Content-Type": "application/x-ndjson"}, b"", 10)
    assert outcome.status is JobStatus.SUCCEEDED and outcome.output == "[]"


def test_bad_input_before_the_first_part_is_a_422_and_a_failure_midway_a_last_error_line() -> None:
    client = create_app("tests.unit.test_parts:Counting").test_client()
    while client.get("/ok").status_code != 200:
        pass
    assert client.post("/", json={"n": "x"}).status_code == 422
    lines = client.post("/", json={"n": 5, "fail_at": 2}).data.splitlines()
    assert [read_line(line) for line in lines[:2]] == ['{"i": 0}', '{"i": 1}']
    assert read_line(lines[2]) == JobError("model_error", "RuntimeError: broke")
