"""Faults of the job API found by hostile replicas, clients and interleavings (the unit tier: fakeredis, and a raw
socket server in this process for a replica's answers)."""

import contextlib
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient

import gateway.app
from gateway.app import create_app
from gateway.service import Gateway
from tests.integration.wire import Request, WireServer
from tests.unit.test_autoscaler import MODEL, Clock
from workers.config import ModelConfig, Settings
from workers.execution import runner
from workers.job import Job, JobError, JobOptions, JobStatus, Outcome, Priority
from workers.protocols import transport
from workers.store import Store
from workers.store.jobs import Existing, Idempotency
from workers.store.records import Started
from workers.store.replies import WithdrawReply

pytestmark = pytest.mark.unit
READY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"


def chunked(parts: list[bytes]) -> bytes:
    """A whole NDJSON answer, one chunk per part."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


@pytest.fixture
def servers() -> Iterator[list[WireServer]]:
    made: list[WireServer] = []
    yield made
    for server in made:
        server.close()


@pytest.fixture
def replica(servers: list[WireServer]) -> Callable[..., tuple[Store, runner.WorkerContext, Job]]:
    """A store with one READY replica answering as a test says, and a job of its model submitted."""

    def make(answer: Callable[[socket.socket, Request], None], model: ModelConfig = MODEL,
             **options: int) -> tuple[Store, runner.WorkerContext, Job]:
        def serve(connection: socket.socket, request: Request) -> None:
            connection.sendall(READY) if request.path == "/ok" else answer(connection, request)

        server = WireServer(serve)
        servers.append(server)
        store = Store.of(fakeredis.FakeRedis(decode_responses=True), retention=60)
        token = store.leadership(30).hold() or ""
        store.replicas.add(token, "r1", model.name, "fake")
        store.replicas.launched(token, "r1", server.url, "h")
        store.replicas.ready(token, "r1", 1)
        ctx = runner.WorkerContext(models={model.name: model}, store=store, http=transport.http_pool(),
                                   leases=runner.LeaseKeeper(store, 5.0, renewing=False), **options)
        job = store.jobs.submit(store.jobs.new(model.name, {"x": 1}))
        assert isinstance(job, Job)
        return store, ctx, job

    return make


def test_a_streamed_line_over_the_limit_fails_its_job_not_the_worker(
        replica: Callable[..., tuple[Store, runner.WorkerContext, Job]]) -> None:
    def endless(connection: socket.socket, _: Request) -> None:  # a line that never ends, past the limit
        connection.sendall(chunked([b'{"part": 1}\n', b'{"part": "' + b"x" * 3000]))

    store, ctx, job = replica(endless, max_output_bytes=1000)
    summary = runner.run_job(ctx, job.id, "m")  # it must not raise: the job would wait for the reaper, run again
    found = store.jobs.get(job.id)
    assert summary.status is JobStatus.FAILED and found is not None and found.status is JobStatus.FAILED
    assert found.error is not None and found.error.code == "bad_response"
    assert "over 1000 bytes" in found.error.message


def test_a_streamed_output_is_bounded_by_the_largest_answer_as_a_whole(
        replica: Callable[..., tuple[Store, runner.WorkerContext, Job]]) -> None:
    line = b'{"part": "' + b"x" * 600 + b'"}\n'  # each part within the limit, all of them over it

    store, ctx, job = replica(lambda connection, _: connection.sendall(chunked([line] * 5)), max_output_bytes=1000)
    runner.run_job(ctx, job.id, "m")
    found = store.jobs.get(job.id)
    assert found is not None and found.status is JobStatus.FAILED
    assert found.error is not None and found.error.code == "bad_response"
    assert len(store.jobs.parts(job.id)) == 1  # nothing kept past the bound


def test_a_complete_line_over_the_limit_is_refused_too() -> None:
    reader = transport.LineReader(10)
    with pytest.raises(ValueError, match="over 10 bytes"):
        reader.feed(b"x" * 50 + b"\n")


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FlaskClient, fakeredis.FakeRedis]:
    models = tmp_path / "models.toml"
    models.write_text('[models.m]\ncommand = ["x"]\n')
    fake = fakeredis.FakeRedis(decode_responses=True)
    monkeypatch.setattr(gateway.app, "gateway_client", lambda url, timeout, connections: fake)
    return create_app(Settings(models_file=models, max_wait=0.1)).test_client(), fake


@pytest.mark.parametrize("last", ["\u00b2", "1\u00b3"])  # digits to str.isdigit (a header is Latin-1), not to int()
def test_a_last_event_id_of_other_digits_is_ignored_not_a_500(client: tuple[FlaskClient, fakeredis.FakeRedis],
                                                             last: str) -> None:
    app, fake = client
    job_id = app.post("/v1/models/m/jobs", json={}).get_json()["id"]
    fake.rpush(f"sm:parts:{job_id}", json.dumps(0))
    answer = app.get(f"/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": last})
    assert answer.status_code == 200 and b"id: 0\nevent: part" in answer.get_data()


def test_a_job_an_idempotency_key_handed_out_again_is_not_taken_back() -> None:
    store = Store.of(fakeredis.FakeRedis(decode_responses=True), retention=60)
    once = Idempotency("k", "d", 60)
    first = store.jobs.new("m", {"x": 1}, "owner")
    assert isinstance(store.jobs.submit(first, idempotency=once), Job)  # its answer lost: the gateway settles
    replayed = store.jobs.submit(store.jobs.new("m", {"x": 1}, "owner"), idempotency=once)
    assert isinstance(replayed, Existing) and replayed.job.id == first.id  # another caller is told of this job
    assert store.jobs.withdraw(first) is not WithdrawReply.WITHDRAWN  # so it stays, for both callers
    assert store.jobs.get(first.id) is not None


@pytest.mark.parametrize("lost", ["replica", "worker"])
def test_a_low_job_taken_back_waits_low_again(lost: str) -> None:
    clock = Clock()
    store = Store.of(fakeredis.FakeRedis(decode_responses=True), retention=60, clock=clock)
    token = store.leadership(30).hold() or ""
    store.replicas.add(token, "r1", "m", "fake")
    store.replicas.launched(token, "r1", "http://127.0.0.1:9", "h")
    store.replicas.ready(token, "r1", 1)
    job = store.jobs.submit(store.jobs.new("m", {}, options=JobOptions(priority=Priority.LOW)))
    assert isinstance(job, Job) and isinstance(store.jobs.start(job.id, "t", 5, "w", True), Started)
    if lost == "replica":
        assert store.jobs.retry(job.id, "t", "r1", "gone", True, 3, 5, "w") == "PARKED"
    else:
        clock.advance(6)
        assert [r.outcome for r in store.jobs.reap({"m": 3})] == ["REQUEUED"]
    snapshot = store.replicas.snapshot("m", {})
    assert (snapshot.waiting, snapshot.low) == (1, 1)  # alone, it still starts nothing from zero


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/models//jobs"), ("POST", "/v1//models/m/jobs"),
                                              ("GET", "/runpod/v2//m/health"), ("GET", "/v2/models//ready")])
def test_a_path_with_an_empty_segment_is_a_json_404_not_an_html_redirect(
        client: tuple[FlaskClient, fakeredis.FakeRedis], method: str, path: str) -> None:
    app, fake = client
    answer = app.open(path, method=method, json={} if method == "POST" else None)
    assert answer.status_code == 404 and answer.is_json and "error" in answer.get_json()
    assert list(fake.scan_iter("sm:job:*")) == []


def streamed_run(store: Store, job_id: str, token: str, parts: list[str], outcome: Outcome) -> None:
    """One run of the job that gives ``parts`` and ends with ``outcome``."""
    assert isinstance(store.jobs.start(job_id, token, 30, "w", True), Started)
    for part in parts:
        store.jobs.append_part(job_id, token, json.dumps(part), 100)
    store.jobs.finish(job_id, token, outcome)


def stream_events(store: Store, job_id: str, after: int, job: Job | None = None) -> list[tuple[str, str | None, Any]]:
    """The events of the job's stream for a client whose last part is ``after`` (the stream begins with ``job``
    as read then, else as it is): (event, id, data)."""
    gateway = object.__new__(Gateway)
    gateway.store = gateway.waits = store
    job = job or store.jobs.get(job_id)
    assert job is not None
    found = []
    for text in gateway.events(job, after, lambda j: json.dumps(j.output), contextlib.nullcontext(True)):
        fields = dict(line.split(": ", 1) for line in text.strip().splitlines())
        found.append((fields["event"], fields.get("id"), json.loads(fields["data"])))
    return found


def test_a_stream_resumed_from_an_earlier_run_restarts_with_the_run_the_job_holds() -> None:
    store = Store.of(fakeredis.FakeRedis(decode_responses=True), retention=60)
    token = store.leadership(30).hold() or ""
    store.replicas.add(token, "r1", "m", "fake")
    store.replicas.launched(token, "r1", "http://x", "h")
    store.replicas.ready(token, "r1", 1)
    job = store.jobs.submit(store.jobs.new("m", {}))
    assert isinstance(job, Job)
    streamed_run(store, job.id, "t1", ["a0", "a1", "a2"], Outcome(JobStatus.FAILED, error=JobError("x", "y")))
    assert stream_events(store, job.id, 1)[0] == ("part", "2", "a2")  # a client that saw a0, a1 and went
    first_run = store.jobs.get(job.id)
    assert store.jobs.resubmit(job.id) == "OK"
    streamed_run(store, job.id, "t2", ["b0", "b1"], Outcome(JobStatus.SUCCEEDED, output="[]"))
    resumed = stream_events(store, job.id, 1)  # it comes back after the retry
    assert resumed == [("restart", None, {"first": 3}), ("part", "3", "b0"), ("part", "4", "b1"),
                       ("done", None, ["b0", "b1"])]
    assert stream_events(store, job.id, 3) == [("part", "4", "b1"), ("done", None, ["b0", "b1"])]
    assert stream_events(store, job.id, -1)[0] == ("part", "3", "b0")  # a new client: no restart
    # a stream that read the job just before it was run again: the next run's parts come after a restart
    assert stream_events(store, job.id, -1, first_run) == resumed
