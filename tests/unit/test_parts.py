"""Streamed outputs: the replica's NDJSON answer, and reading it line by line as it comes."""

import contextlib
import json
from dataclasses import replace
from typing import Any

import pytest

from gateway.service import Gateway, sse
from model.server import create_app
from workers.job import Job, JobError, JobStatus
from workers.protocols.cog import CogProtocol
from workers.protocols.native import NativeProtocol, NdjsonParts
from workers.protocols.transport import LineReader


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


def read_line(line: bytes) -> str | JobError | None:
    return NdjsonParts().read(line)


def reader_lines(chunks: list[bytes]) -> list[bytes]:
    reader = LineReader(1000)
    found = [line for chunk in chunks for line in reader.feed(chunk)]
    return found + reader.end()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_lines_come_whole_however_the_body_is_cut(size: int) -> None:
    body = b'{"part": 1}\n{"part": [2, 3]}\n\n{"part": "x"}'
    chunks = [body[i:i + size] for i in range(0, len(body), size)]
    assert reader_lines(chunks) == [b'{"part": 1}', b'{"part": [2, 3]}', b"", b'{"part": "x"}']


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
    assert read_line(b"") is None
    reader = NativeProtocol().parts(200, {"Content-Type": "application/x-ndjson"})
    assert reader is not None and NativeProtocol().parts(200, {"Content-Type": "application/json"}) is None
    outcome = reader.outcome(10)
    assert outcome.status is JobStatus.SUCCEEDED and outcome.output == "[]"


def test_bad_input_before_the_first_part_is_a_422_and_a_failure_midway_a_last_error_line() -> None:
    client = create_app("tests.unit.test_parts:Counting").test_client()
    while client.get("/ok").status_code != 200:
        pass
    assert client.post("/", json={"n": "x"}).status_code == 422
    lines = client.post("/", json={"n": 5, "fail_at": 2}).data.splitlines()
    assert [read_line(line) for line in lines[:2]] == ['{"i": 0}', '{"i": 1}']
    assert read_line(lines[2]) == JobError("model_error", "RuntimeError: broke")


def test_an_event_is_its_id_name_and_data_then_a_blank_line() -> None:
    assert sse("part", '{"i": 3}', 3) == 'id: 3\nevent: part\ndata: {"i": 3}\n\n'
    assert sse("done", "{}") == "event: done\ndata: {}\n\n"


class Parts:
    """A job store's parts and waits: the job finishes after ``rounds`` waits, the parts coming meanwhile."""

    def __init__(self, job: Job, parts: list[str], rounds: int) -> None:
        self.job, self.all, self.rounds, self.given = job, parts, rounds, 0
        self.jobs = self

    def run_parts(self, job_id: str, start: int = 0) -> tuple[int, list[str]]:
        shown = self.all[:len(self.all) * self.given // self.rounds]
        return 0, shown[start:]

    def wait(self, job_id: str, timeout: float) -> Job:
        self.given = min(self.rounds, self.given + 1)
        return replace(self.job, status=JobStatus.SUCCEEDED) if self.given == self.rounds else self.job


@pytest.mark.parametrize("after", [-1, 9, 49])
def test_a_stream_sends_each_part_after_the_index_once_in_order_then_done(after: int) -> None:
    job = Job(id="j", model="m", status=JobStatus.RUNNING, input={}, created_at=0.0)
    gateway = object.__new__(Gateway)
    gateway.store = gateway.waits = Parts(job, [json.dumps(i) for i in range(50)], 7)  # type: ignore[assignment]
    events = list(gateway.events(job, after, lambda j: j.status.value, contextlib.nullcontext(True)))
    assert events[:-1] == [sse("part", str(i), i) for i in range(after + 1, 50)]
    assert events[-1] == sse("done", "SUCCEEDED")


COG_EVENTS = (b'event: start\ndata: {"id":"p1","status":"processing"}\n\n'
              b'event: output\ndata: {"chunk":"a","index":0}\n\n'
              b': a comment\nevent: output\ndata: {"chunk":{"b":[1]},"index":1}\n\n'
              b'event: completed\ndata: {"id":"p1","metrics":{"predict_time":0.5},"output":["a",{"b":[1]}],'
              b'"status":"succeeded"}\n\n')


def cog_read(body: bytes) -> tuple[list[str | JobError], Any]:
    """What a Cog event stream's lines give, cut into 5-byte chunks, and the outcome at its end."""
    reader = CogProtocol(stream=True).parts(200, {"Content-Type": "text/event-stream"})
    assert reader is not None
    lines = reader_lines([body[i:i + 5] for i in range(0, len(body), 5)])
    found = [part for part in map(reader.read, lines) if part is not None]
    return found, reader.outcome(10)


def test_a_streamed_cog_prediction_gives_each_chunk_in_order_and_its_predict_time() -> None:
    request = CogProtocol(stream=True).request("j", '{"text":"x"}')
    assert request.headers["Accept"] == "text/event-stream"
    assert "Accept" not in CogProtocol().request("j", '{"text":"x"}').headers
    parts, outcome = cog_read(COG_EVENTS)
    assert parts == ['"a"', '{"b": [1]}']
    assert outcome.status is JobStatus.SUCCEEDED and outcome.output == "[]" and outcome.service_time == 0.5
    assert CogProtocol().parts(200, {"Content-Type": "application/json"}) is None


def test_a_failed_cog_prediction_ends_its_stream_with_cogs_error() -> None:
    failed = COG_EVENTS.replace(b'"status":"succeeded"', b'"status":"failed","error":"ValueError: boom"')
    parts, _ = cog_read(failed)
    assert parts == ['"a"', '{"b": [1]}', JobError("model_error", "ValueError: boom")]


@pytest.mark.parametrize("broken", [
    COG_EVENTS.replace(b'"index":1', b'"index":2'),  # a chunk missed
    COG_EVENTS.replace(b'"chunk":"a",', b''),  # an output without its chunk
    COG_EVENTS.replace(b'data: {"chunk":"a"', b'data: ["chunk":"a"'),  # data that is not JSON
])
def test_a_cog_stream_that_misses_a_chunk_or_breaks_json_is_refused(broken: bytes) -> None:
    with pytest.raises(ValueError):
        cog_read(broken)


@pytest.mark.parametrize("cut", [
    COG_EVENTS.split(b"event: completed")[0],  # no completed event
    COG_EVENTS.replace(b',{"b":[1]}]', b',{"b":[1]},"c"]'),  # completed counts an output never streamed
])
def test_a_cog_stream_cut_short_is_a_bad_response(cut: bytes) -> None:
    _, outcome = cog_read(cut)
    assert outcome.status is JobStatus.FAILED and outcome.error.code == "bad_response"


def test_a_cog_event_that_never_ends_is_refused_past_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("workers.protocols.cog.EVENT_LIMIT", 100)
    reader = CogProtocol(stream=True).parts(200, {"Content-Type": "text/event-stream"})
    assert reader is not None and reader.read(b"event: output") is None
    with pytest.raises(ValueError, match="over 100 bytes"):
        for _ in range(20):
            reader.read(b"data: " + b"x" * 10)  # no blank line ever ends the event
