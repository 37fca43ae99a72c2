"""Regression tests of the second review's holes in the runner: claims, request deadlines, slow requests against
dead replicas, and replicas that say "not now". The runner's own functions on a real Redis, against replicas that
misbehave on real sockets; one test on the platform's real processes."""

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from tests.integration.platform import TEST_MODELS, Platform
from tests.integration.test_holes import job, model_view, post, sleepy
from tests.integration.wire import Request, WireServer, response, trickle
from workers.config import ModelConfig
from workers.execution.runner import LeaseKeeper, Summary, WorkerContext, run_job, run_started
from workers.job import JobStatus, Outcome
from workers.protocols.transport import http_pool
from workers.scaling.backends import free_port
from workers.store import Store, keys
from workers.store.records import ReplicaState, Started

pytestmark = pytest.mark.integration
OK = Outcome(JobStatus.SUCCEEDED, output='{"y": 1}')
READY = response(200, b'{"status": "READY"}')
ROOT = Path(__file__).resolve().parents[2]
RESET = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: closing resets the connection


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    """Set when the test ends: trickling servers stop sending."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def sleepy_replica() -> Iterator[str]:
    """The platform's own replica server (gunicorn gthread) with the Sleepy model at the default concurrency 1."""
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "CONCURRENCY": "1",
           "MODEL_CLASS": "testmodels:Sleepy",
           "PYTHONPATH": os.pathsep.join([str(TEST_MODELS), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "model.server"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if requests.get(f"{url}/ok", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("the replica did not become ready")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def replica(store: Store, url: str, replica_id: str = "r1", token: str = "") -> str:
    """A READY replica of model ``m`` at ``url``, recorded as the leader (``token``, else a new lease); the token."""
    token = token or store.leadership(60).hold() or ""
    assert store.replicas.add(token, replica_id, "m", "test")
    assert store.replicas.launched(token, replica_id, url, replica_id)
    assert store.replicas.ready(token, replica_id, 1) is not None
    return token


def context(store: Store, **model: Any) -> WorkerContext:
    """A worker's context serving model ``m``."""
    config = ModelConfig(name="m", command=["serve"], **{"concurrency": 1, "max_attempts": 1, **model})
    return WorkerContext(models={"m": config}, store=store, http=http_pool(), leases=LeaseKeeper(store, 5.0))


def submitted(store: Store, payload: Any = None) -> str:
    """A recorded job of model ``m``."""
    job = store.jobs.submit(store.jobs.new("m", payload or {"x": 1}))
    assert job is not None
    return job.id


def run_in_thread(ctx: WorkerContext, job_id: str, within: float) -> Summary:
    """run_job on a thread of its own; fails the test if it has not returned ``within`` seconds."""
    done: list[Summary] = []
    thread = threading.Thread(target=lambda: done.append(run_job(ctx, job_id, "m")), daemon=True)
    thread.start()
    thread.join(within)
    assert done, f"run_job still holds its thread after {within} s"
    return done[0]


def test_review2_hole01_a_task_leaving_a_lapsed_claim_keeps_the_new_claim_of_the_same_job_alive(
        store: Store, client: "redis.Redis") -> None:
    replica(store, "http://127.0.0.1:9")
    job_id = submitted(store)
    keeper = LeaseKeeper(store, lease=3.0)  # renews every second
    first = store.jobs.start(job_id, "first", 3.0, "w", True)
    assert isinstance(first, Started)
    with keeper.holding(job_id, "first", at_most=60):
        for _ in range(20):  # the first claim's lease lapses (a Redis pause) and the reaper takes the job back
            client.zadd(keys.LEASES, {job_id: 0})
            if [r.outcome for r in store.jobs.reap({"m": 3})] == ["REQUEUED"]:
                break  # its slot freed, it is sent again, and a second task of this worker starts it
        second = store.jobs.start(job_id, "second", 3.0, "w", True)
        assert isinstance(second, Started)
        holding_second = keeper.holding(job_id, "second", at_most=60)
        holding_second.__enter__()
    assert store.jobs.finish(job_id, "first", OK) == "STALE"  # the first task returned: rightly refused

    time.sleep(7)  # more than two leases: only renewals keep the second claim
    assert store.jobs.reap({"m": 3}) == []
    holding_second.__exit__(None, None, None)
    assert store.jobs.finish(job_id, "second", OK) == "OK"
    done = store.jobs.get(job_id)
    assert done is not None and done.status is JobStatus.SUCCEEDED and done.attempts == 2 and done.commits == 1


@pytest.mark.parametrize("where", ["status line", "headers"])
def test_review2_hole03_a_replica_that_trickles_its_status_line_or_headers_lets_go_at_the_request_timeout(
        store: Store, stop: threading.Event, where: str) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
    sent_at_once = 0 if where == "status line" else head.index(b"\r\n") + 2

    def answer(connection: socket.socket, _: Request) -> None:
        connection.sendall(head[:sent_at_once])
        trickle(connection, head[sent_at_once:] + b"\r\n{}", 0.3, stop)

    server = WireServer(answer)
    replica(store, server.url)
    job_id = submitted(store)
    summary = run_in_thread(context(store, request_timeout=1.0), job_id, within=10)  # the answer would take ~20 s

    assert summary.status == "FAILED"
    failed = store.jobs.get(job_id)
    assert failed is not None and failed.error is not None and failed.error.code == "replica_failed"
    assert [r.state for r in store.replicas.of("m")] == [ReplicaState.FAILED]  # its probe trickled too: gone
    server.close()


def test_review2_hole16_a_replica_that_answers_503_or_429_for_a_moment_is_asked_again_after_its_retry_after(
        store: Store) -> None:
    answers = [response(503, b"<html>restarting</html>", "Retry-After: 1\r\n"), response(429, b"{}"),
               response(200, b'{"y": 2}')]
    server = WireServer(lambda connection, request: connection.sendall(
        READY if request.path == "/ok" else answers.pop(0)))
    replica(store, server.url)
    job_id = submitted(store)
    summary = run_in_thread(context(store, request_timeout=10.0), job_id, within=15)

    assert summary.status == "SUCCEEDED"
    done = store.jobs.get(job_id)
    assert done is not None and done.output == {"y": 2} and done.attempts == 1
    calls = [r.at for r in server.requests if r.path == "/"]
    assert len(calls) == 3 and calls[1] - calls[0] >= 1.0  # it waited as long as the replica asked
    assert [r.state for r in store.replicas.of("m")] == [ReplicaState.READY]
    server.close()


def test_review2_a_replica_busy_past_the_deadline_is_left_in_routing(store: Store) -> None:
    server = WireServer(lambda connection, request: connection.sendall(
        READY if request.path == "/ok" else response(503, b"{}", "Retry-After: 30\r\n")))
    replica(store, server.url)
    job_id = submitted(store)
    summary = run_in_thread(context(store, request_timeout=2.0), job_id, within=10)

    assert summary.status == "FAILED"  # its last attempt: nothing else could take it
    assert [r.state for r in store.replicas.of("m")] == [ReplicaState.READY]  # busy is not broken
    server.close()


def test_review2_reset_mid_answer_by_a_live_replica_is_tried_again_elsewhere(store: Store) -> None:
    def reset_once(connection: socket.socket, request: Request) -> None:
        if request.path == "/ok":
            connection.sendall(READY)
            return
        connection.sendall(response(200, b'{"y": 3}')[:30])
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        connection.close()

    flaky = WireServer(reset_once)
    steady = WireServer(lambda connection, request: connection.sendall(
        READY if request.path == "/ok" else response(200, b'{"y": 4}')))
    token = replica(store, flaky.url, "flaky")
    job_id = submitted(store)
    first = store.jobs.start(job_id, "t", 5, "w", True)
    assert isinstance(first, Started) and first.slot.replica_id == "flaky"
    replica(store, steady.url, "steady", token)
    ctx = context(store, max_attempts=2, request_timeout=5.0)
    with ctx.leases.holding(job_id, "t", 60):
        summary = run_started(ctx, ctx.models["m"], first, "t")
    assert (summary.status, summary.replica) == ("SUCCEEDED", "steady")
    assert {r.id: r.state for r in store.replicas.of("m")} == {"flaky": ReplicaState.READY,
                                                               "steady": ReplicaState.READY}
    done = store.jobs.get(job_id)
    assert done is not None and done.output == {"y": 4} and done.attempts == 2
    flaky.close()
    steady.close()


def test_review2_hole04_a_slow_input_fails_alone_and_its_replica_serves_on(
        make_platform: Callable[..., Platform]) -> None:
    platform = make_platform(models=sleepy(concurrency=2, max_replicas=1, request_timeout=2, max_attempts=2))
    platform.start("gateway", "worker", "autoscaler")
    warm = post(platform, "sleepy", {"sleep": 0}, wait=30).json()
    assert warm["status"] == "SUCCEEDED", warm
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(lambda: post(platform, "sleepy", {"sleep": 30}, wait=40).json())
        platform.wait_until(lambda: model_view(platform, "sleepy")["running"] == 1, 20, "the slow job did not start")
        neighbour = pool.submit(lambda: post(platform, "sleepy", {"sleep": 1.5}, wait=40).json())
        answers = slow.result(), neighbour.result()

    assert answers[0]["status"] == "FAILED" and answers[0]["error"]["code"] == "timeout", answers[0]
    assert answers[0]["attempts"] == 1  # a slow input is not tried again on every replica
    assert answers[1]["status"] == "SUCCEEDED" and answers[1]["attempts"] == 1, answers[1]
    after = post(platform, "sleepy", {"sleep": 0}, wait=30).json()
    assert after["status"] == "SUCCEEDED" and after["replica"] == warm["replica"]  # still the same replica
    events = requests.get(f"{platform.url}/v1/events", params={"model": "sleepy"}, timeout=10).json()["events"]
    assert not [e for e in events if e["kind"] == "replica_failed"], events
    assert job(platform, answers[1]["id"])["replica"] == warm["replica"]


def test_review2_hole04_a_slow_input_on_a_one_slot_replica_fails_alone(store: Store, sleepy_replica: str) -> None:
    replica(store, sleepy_replica)  # the platform's own replica server, concurrency 1 (the default)
    slow, after = submitted(store, {"sleep": 6}), submitted(store, {"sleep": 0})
    ctx = context(store, request_timeout=2.0, max_attempts=2)
    assert run_in_thread(ctx, slow, within=20).status == "FAILED"
    done = store.jobs.get(slow)
    assert done is not None and done.error is not None and (done.error.code, done.attempts) == ("timeout", 1)
    assert [r.state for r in store.replicas.of("m")] == [ReplicaState.READY]  # it answered its probe meanwhile
    assert run_in_thread(ctx, after, within=20).status == "SUCCEEDED"  # beside the slow input still computing


def test_review2_a_keep_alive_connection_the_replica_closed_is_replaced_at_once(store: Store) -> None:
    served: dict[int, int] = {}

    def answer(connection: socket.socket, request: Request) -> None:
        if request.path == "/ok":
            connection.sendall(READY)
            return
        served[id(connection)] = served.get(id(connection), 0) + 1
        if served[id(connection)] > 1:  # its idle timer fired as the request came: closed, the request unread
            connection.close()
            raise OSError("closed idle")
        connection.sendall(response(200, b'{"y": 1}'))

    server = WireServer(answer)
    replica(store, server.url)
    ctx = context(store, request_timeout=5.0, max_attempts=1)
    first, second = submitted(store), submitted(store)
    assert run_in_thread(ctx, first, within=10).status == "SUCCEEDED"
    assert run_in_thread(ctx, second, within=10).status == "SUCCEEDED"  # on a new connection, the same attempt
    server.close()


@pytest.mark.parametrize("fault", ["reset", "hang"])
def test_review2_a_replica_that_fails_every_exchange_but_answers_its_probe_leaves_routing_after_three(
        store: Store, fault: str) -> None:
    def answer(connection: socket.socket, request: Request) -> None:
        if request.path == "/ok":
            connection.sendall(READY)
        elif fault == "hang":
            time.sleep(3)
        else:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
            connection.close()
            raise OSError("reset")

    server = WireServer(answer)
    replica(store, server.url)
    ctx = context(store, request_timeout=0.5, max_attempts=3)
    job_id = submitted(store)
    for _ in range(3):  # a reset parks the job (no other replica) and it is sent again (a later job would yield the
        if run_in_thread(ctx, job_id, within=10).status is JobStatus.FAILED:  # slot to it); a hang fails it timeout
            job_id = submitted(store)
        store.jobs.dispatch("m")
    [gone] = store.replicas.of("m")
    assert gone.state is ReplicaState.FAILED and "3 failed exchanges in a row" in gone.reason
    assert len([r for r in server.requests if r.path == "/"]) == 3
    server.close()


def test_review2_an_answer_that_does_not_decode_fails_bad_response(store: Store) -> None:
    server = WireServer(lambda connection, request: connection.sendall(
        READY if request.path == "/ok" else response(200, b"not gzip at all", "Content-Encoding: gzip\r\n")))
    replica(store, server.url)
    job_id = submitted(store)
    assert run_in_thread(context(store, max_attempts=2), job_id, within=10).status == "FAILED"
    done = store.jobs.get(job_id)
    assert done is not None and done.error is not None and (done.error.code, done.attempts) == ("bad_response", 1)
    server.close()


def test_review2_a_slot_freed_by_a_failed_call_goes_to_a_parked_job(store: Store) -> None:
    def answer(connection: socket.socket, request: Request) -> None:
        if request.path == "/ok":
            connection.sendall(READY)
            return
        connection.close()
        raise OSError("closed unanswered")

    server = WireServer(answer)
    replica(store, server.url)
    ctx = context(store, request_timeout=5.0, max_attempts=3)
    first, second = submitted(store), submitted(store)
    started = store.jobs.start(first, "t", 5, "w", True)
    assert isinstance(started, Started) and store.jobs.start(second, "u", 5, "w", True) == "PARKED"
    queue = keys.celery_queue("m")
    before = store.jobs.redis.llen(queue)
    with ctx.leases.holding(first, "t", 60):
        assert run_started(ctx, ctx.models["m"], started, "t").status == "PARKED"
    assert store.jobs.redis.llen(queue) - before == 1  # the parked job was sent to the freed slot
    server.close()
