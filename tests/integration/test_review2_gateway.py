"""The second review's holes around the gateway, on real servers: the embedded Redis's secrets and files, the
per-key queue cap and the memory bound, trusted proxies and failed keys, slow headers, a hung Redis, gunicorn's
own errors, and the rate limit without keys."""

import contextlib
import json
import signal
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask.testing import FlaskClient

from gateway.app import create_app
from gateway.auth import digest
from tests.integration.platform import Platform, eventually
from workers.config import ModelConfig, Settings
from workers.embedded import start_embedded_redis
from workers.job import Job
from workers.scaling.backends import ProcessBackend
from workers.scaling.spec import ReplicaSpec
from workers.store import Store
from workers.store.records import Started

pytestmark = pytest.mark.integration
KEY, OTHER = "key-of-alice", "key-of-bob"
MODELS = '[models.m]\ncommand = ["python", "-m", "model.server"]\nmax_queued = 100\n'


def gateway_client(tmp_path: Path, redis_url: str, table: str = "", **settings: Any) -> FlaskClient:
    """The gateway app in this process, on a models file with one model ``m`` (``table``: more of its keys)."""
    models = tmp_path / "models.toml"
    models.write_text(MODELS + table)
    return create_app(Settings(redis_url=redis_url, models_file=models, **settings)).test_client()


def bearer(key: str) -> dict[str, str]:
    """The header that sends an API key."""
    return {"Authorization": f"Bearer {key}"}


def private(path: Path) -> bool:
    """Whether nobody but the owner may read, write or enter ``path``."""
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[..., tuple[str, Any]]]:
    """Start Redis servers of the test's own; each is killed afterwards (and continued first if stopped)."""
    started: list[Any] = []

    def start(**options: Any) -> tuple[str, Any]:
        url, process = start_embedded_redis(tmp_path / f"redis-{len(started)}", **options)
        started.append(process)
        return url, process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
            process.wait()


# 7: the embedded Redis's password is not on its command line; its files and the replicas' logs are private


def test_review2_hole07_redis_password_is_not_on_its_command_line_and_files_are_private(
        own_redis: Callable[..., tuple[str, Any]], tmp_path: Path) -> None:
    password = "s3cret-of-this-run"
    url, process = own_redis(password=password)
    client = redis.Redis.from_url(url, decode_responses=True)
    client.set("job", "input of a job")
    client.execute_command("BGREWRITEAOF")  # the data files exist and are written
    eventually(lambda: not any(int(client.info("persistence")[f"aof_rewrite_{what}"])
                               for what in ("in_progress", "scheduled")), 30, "the AOF rewrite did not end")
    command_line = Path(f"/proc/{process.pid}/cmdline").read_bytes()  # the server may retitle itself, so
    assert password.encode() not in command_line, command_line
    assert not any(password in str(word) for word in process.args), process.args  # ... and what it was started with
    folder = tmp_path / "redis-0"
    files = [path for path in folder.rglob("*") if path.is_file()]
    assert {"redis.conf", "server.log"} <= {path.name for path in files}
    assert any(path.name.startswith("appendonly") for path in files)
    assert private(folder), oct(folder.stat().st_mode)
    assert [(path.name, oct(path.stat().st_mode)) for path in files if not private(path)] == []

    backend = ProcessBackend(tmp_path, tmp_path / "logs")
    model = ModelConfig(name="sleeper", command=["python", "-c", "import time; time.sleep(60)"])
    launched = backend.start(ReplicaSpec.of(model, "r-log"))
    try:
        log = tmp_path / "logs" / "r-log.log"
        assert private(log), oct(log.stat().st_mode)
    finally:
        backend.stop(launched.handle)


# 8: a key's share of a model's queue, counted right whichever way its jobs leave; Redis's memory bound


def test_review2_hole08_one_key_cannot_fill_the_queue_and_its_share_frees_as_jobs_leave(store: Store) -> None:
    def submit(owner: str) -> Job | str:
        return store.jobs.submit(store.jobs.new("m", {"x": 1}, owner), 100, 3)

    mine = [submit("alice") for _ in range(3)]
    assert all(isinstance(job, Job) for job in mine)
    assert submit("alice") == "KEY_FULL"
    assert isinstance(submit("bob"), Job)  # another key is served
    assert isinstance(store.jobs.submit(store.jobs.new("m", {}, ""), 100, 3), Job)  # no keys: the model's cap only
    first, second, third = (job for job in mine if isinstance(job, Job))

    assert store.jobs.cancel(first.id) == "OK"  # cancelled
    assert isinstance(submit("alice"), Job) and submit("alice") == "KEY_FULL"
    assert store.jobs.withdraw(second) == "WITHDRAWN"  # withdrawn
    parked = submit("alice")
    assert isinstance(parked, Job) and submit("alice") == "KEY_FULL"
    assert store.jobs.start(parked.id, "t", 5, "w", False) == "PARKED"  # parked: still waiting, still counted
    assert submit("alice") == "KEY_FULL"
    assert store.jobs.expire_parked("m", 0) == [parked.id]  # expired
    expired_for = submit("alice")
    assert isinstance(expired_for, Job) and submit("alice") == "KEY_FULL"

    token = store.leadership(30).hold()
    assert token and store.replicas.add(token, "r1", "m", "fake")
    assert store.replicas.launched(token, "r1", "http://127.0.0.1:1", "r1")
    assert store.replicas.ready(token, "r1", concurrency=1) is not None
    assert isinstance(store.jobs.start(third.id, "t3", 5, "w", True), Started)  # started
    failing = submit("alice")
    assert isinstance(failing, Job) and submit("alice") == "KEY_FULL"
    assert store.replicas.failed(token, "r1", "gone")
    assert store.replicas.start_failed(token, "r2", "m", "no image", True) is not None
    assert store.jobs.start(failing.id, "t4", 5, "w", True) == "FAILED"  # failed
    assert isinstance(submit("alice"), Job) and submit("alice") == "KEY_FULL"


def test_review2_hole08_a_key_at_its_share_is_told_429_and_a_full_store_507(
        own_redis: Callable[..., tuple[str, Any]], tmp_path: Path) -> None:
    url, _ = own_redis(max_memory="8mb")
    assert redis.Redis.from_url(url).config_get("maxmemory") == {"maxmemory": str(8 << 20)}
    many = [f"key-{i}" for i in range(16)]
    keys = ",".join(digest(key) for key in (KEY, OTHER, *many))
    gateway = gateway_client(tmp_path, url, "max_queued_per_key = 3\n", api_keys=keys, max_body_bytes=1 << 20)
    for _ in range(3):
        assert gateway.post("/v1/models/m/jobs", json={"x": 1}, headers=bearer(KEY)).status_code == 202
    refused = gateway.post("/v1/models/m/jobs", json={"x": 1}, headers=bearer(KEY))
    assert refused.status_code == 429 and refused.json["error"]["code"] == "queue_full", refused.json
    assert gateway.post("/v1/models/m/jobs", json={"x": 1}, headers=bearer(OTHER)).status_code == 202

    big, answers = {"blob": "x" * 900_000}, []
    for key in many:  # a few of these fill 8 MB (each of its own key: the keys' shares are not what stops them)
        answers.append(gateway.post("/v1/models/m/jobs", json=big, headers=bearer(key)))
        if answers[-1].status_code != 202:
            break
    full = answers[-1]
    assert full.status_code == 507 and len(answers) > 1, [(a.status_code, a.json) for a in answers]
    assert full.json["error"]["code"] == "store_full" and "full" in full.json["error"]["message"]
    assert full.headers["Retry-After"]


# 9: trusted proxies, and failed keys never deny a valid one


def test_review2_hole09_wrong_keys_from_one_address_never_lock_out_a_valid_key(tmp_path: Path,
                                                                                redis_url: str) -> None:
    gateway = gateway_client(tmp_path, redis_url, api_keys=digest(KEY), auth_failures_per_minute=20)
    answers = [gateway.get("/v1/models", headers=bearer(f"guess-{i}")).status_code for i in range(25)]
    assert answers[:20] == [401] * 20 and set(answers[20:]) == {429}
    assert gateway.get("/v1/models", headers=bearer(KEY)).status_code == 200  # the valid key is served
    assert gateway.get("/v1/models", headers=bearer("guess-26")).status_code == 429  # guesses stay refused


def test_review2_hole09_trusted_proxies_tell_clients_apart_only_when_configured(tmp_path: Path,
                                                                                 redis_url: str) -> None:
    def guesses(gateway: FlaskClient, client: str, count: int) -> list[int]:
        return [gateway.get("/v1/models", headers={**bearer("wrong"), "X-Forwarded-For": client}).status_code
                for _ in range(count)]

    proxied = gateway_client(tmp_path, redis_url, api_keys=digest(KEY), auth_failures_per_minute=3,
                             trusted_proxies=1)
    assert guesses(proxied, "203.0.113.1", 4) == [401, 401, 401, 429]
    assert guesses(proxied, "203.0.113.2", 1) == [401]  # another client behind the same proxy
    direct = gateway_client(tmp_path, redis_url, api_keys=digest(KEY), auth_failures_per_minute=3)
    assert guesses(direct, "203.0.113.3", 3) == [401, 401, 401]
    assert guesses(direct, "203.0.113.4", 1) == [429]  # X-Forwarded-For believed only from trusted proxies


# 10: slow headers take no thread


@contextlib.contextmanager
def partial_requests(port: int, count: int, sent: bytes, timeout: float) -> Iterator[list[socket.socket]]:
    """``count`` connections (each reading with ``timeout``) that each sent ``sent``, part of a request, and then
    nothing more."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            sock.sendall(sent)
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def slow_clients(port: int, count: int) -> contextlib.AbstractContextManager[list[socket.socket]]:
    """``count`` connections that each sent part of a request's headers."""
    return partial_requests(port, count, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", 10)


def slow_bodies(port: int, count: int) -> contextlib.AbstractContextManager[list[socket.socket]]:
    """``count`` connections that each sent a whole head and part of the body it announced."""
    return partial_requests(port, count, b"POST /v1/models/iris/jobs HTTP/1.1\r\nHost: x\r\n"
                                         b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                                         b"{\"features\": ", 20)


def test_review2_hole10_slow_headers_leave_healthz_and_keyed_requests_answered(
        make_platform: Callable[..., Platform]) -> None:
    platform = make_platform().start("gateway", env={"SM_API_KEYS": digest(KEY), "SM_HEADER_TIMEOUT": "120"})
    with slow_clients(platform.port, 48):
        assert requests.get(f"{platform.url}/healthz", timeout=10).status_code == 200
        assert requests.get(f"{platform.url}/v1/models", headers=bearer(KEY), timeout=10).status_code == 200
        with requests.Session() as session:  # a kept-alive connection, too
            for _ in range(3):
                assert session.get(f"{platform.url}/healthz", timeout=10).status_code == 200


def test_review2_hole10_a_client_late_with_its_headers_is_answered_408_and_closed(
        make_platform: Callable[..., Platform]) -> None:
    platform = make_platform().start("gateway", env={"SM_HEADER_TIMEOUT": "1"})
    with slow_clients(platform.port, 1) as (sock,):
        answer = b""
        while chunk := sock.recv(65536):  # the server closes it; the socket's own timeout is 10 s
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(body)["error"]["code"] == "request_timeout"


def test_review2_hole10_slow_bodies_hold_a_thread_only_until_the_header_timeout(
        make_platform: Callable[..., Platform]) -> None:
    platform = make_platform().start("gateway", env={"SM_HEADER_TIMEOUT": "3"})
    with slow_bodies(platform.port, 40) as sockets:  # more than the gateway's 32 threads
        assert requests.get(f"{platform.url}/healthz", timeout=30).status_code == 200
        answer = b""
        while chunk := sockets[0].recv(65536):  # answered, then closed
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(body)["error"]["code"] == "request_timeout"


def test_review2_hole10_a_stopping_gateway_answers_503_to_heads_still_incomplete(
        make_platform: Callable[..., Platform]) -> None:
    platform = make_platform().start("gateway", env={"SM_HEADER_TIMEOUT": "120"})
    with slow_clients(platform.port, 1) as (sock,):
        assert requests.get(f"{platform.url}/healthz", timeout=10).status_code == 200  # the head is being read
        platform.processes["gateway"].send_signal(signal.SIGTERM)
        answer = b""
        while chunk := sock.recv(65536):  # the server closes it; the socket's own timeout is 10 s
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503"), answer
    assert json.loads(body)["error"]["code"] == "service_unavailable"


# 12: a hung Redis answers a submit's 504 in seconds


def test_review2_hole12_a_submit_to_a_hung_redis_answers_504_in_seconds(
        own_redis: Callable[..., tuple[str, Any]], tmp_path: Path) -> None:
    url, process = own_redis()
    gateway = gateway_client(tmp_path, url, max_wait=60)
    assert gateway.get("/readyz").status_code == 200
    answers: list[Any] = []
    process.send_signal(signal.SIGSTOP)
    try:
        submit = threading.Thread(target=lambda: answers.append(gateway.post("/v1/models/m/jobs", json={})),
                                  daemon=True)
        submit.start()
        submit.join(45)  # the wait's socket timeout (60 + 5 s) must not apply to a submit
        assert not submit.is_alive(), "the submit still hangs after 45 s"
    finally:
        process.send_signal(signal.SIGCONT)
    assert answers[0].status_code == 504 and answers[0].json["error"]["code"] == "outcome_unknown"


# 18: gunicorn's own errors are the API's JSON errors


def raw(port: int, request: bytes) -> tuple[int, dict[str, Any], bytes]:
    """Send raw bytes; the status, the headers and the body of the answer (the server closes after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), headers, body


def test_review2_hole18_gunicorns_own_errors_are_json(make_platform: Callable[..., Platform]) -> None:
    platform = make_platform().start("gateway")
    too_long = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(120)) + b"\r\n"
    bad_length = b"POST /v1/models/iris/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}"
    for request, status in ((too_long, 414), (many, 431), (bad_length, 400)):
        found, headers, body = raw(platform.port, request)
        assert found == status, (found, body)
        assert headers["Content-Type"] == "application/json", headers
        error = json.loads(body)["error"]
        assert set(error) == {"code", "message"} and error["code"] and error["message"]
    assert requests.get(f"{platform.url}/healthz", timeout=10).status_code == 200


# 20: SM_RATE_LIMIT limits by client address when there are no keys


def test_review2_hole20_the_rate_limit_without_keys_limits_each_client_address(tmp_path: Path,
                                                                                redis_url: str) -> None:
    gateway = gateway_client(tmp_path, redis_url, rate_limit=2)
    answers = [gateway.get("/v1/models") for _ in range(12)]
    limited = [answer for answer in answers if answer.status_code == 429]
    assert limited, [answer.status_code for answer in answers]
    assert limited[0].json["error"]["code"] == "rate_limited" and limited[0].headers["Retry-After"]
    assert gateway.get("/healthz").status_code == 200  # only the API is limited
