"""Replicas, second review, on real sockets, real replica processes and the real Redis: a trickled readiness
answer, replicas that clear their own environment, die while idle or ignore SIGTERM, and two platforms on one
host."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
import requests

from tests.integration.platform import TEST_MODELS, unavailable
from workers.config import ModelConfig, Settings
from workers.polling import wait_until
from workers.scaling.autoscaler import Autoscaler
from workers.scaling.backends import REPLICA_ENV, RUNNING, ProcessBackend, Status, free_port
from workers.scaling.readiness import ReadinessProbe
from workers.store import Store
from workers.store.records import ReplicaState

pytestmark = pytest.mark.integration
SERVER = """
import http.server, os, signal, sys
if sys.argv[1:] == ["stubborn"]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Ok).serve_forever()
"""  # a replica that answers /ok at once; "stubborn" ignores SIGTERM


class Inline:
    """The autoscaler's actions run in the caller (the test waits for each)."""

    def spawn(self, name: str, action: Callable[[], None]) -> None:
        action()


class Answers:
    """A server on a real socket that answers every request as ``answer`` says, until stopped."""

    def __init__(self, answer: Callable[[socket.socket, threading.Event], None]) -> None:
        self.answer = answer
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.stopping = threading.Event()
        self.requests = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.requests += 1
            threading.Thread(target=self.handle, args=(connection,), daemon=True).start()

    def handle(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):
            connection.recv(65536)  # the request (one small GET)
            self.answer(connection, self.stopping)

    def __enter__(self) -> "Answers":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()


def trickle(prefix: bytes) -> Callable[[socket.socket, threading.Event], None]:
    """Send ``prefix``, then one byte every 50 ms for as long as the server runs."""
    def answer(connection: socket.socket, stopping: threading.Event) -> None:
        connection.sendall(prefix)
        while not stopping.wait(0.05):
            connection.sendall(b"x")
    return answer


def waited(probe: ReadinessProbe, endpoint: str, timeout: float,
           status: Callable[[], Status] = lambda: RUNNING) -> str:
    """The probe's verdict on ``endpoint``; fails if the probe is still waiting long after ``timeout``."""
    verdict: list[str] = []
    model = ModelConfig(name="m", command=["serve"], start_timeout=timeout)
    thread = threading.Thread(target=lambda: verdict.append(probe.wait(model, endpoint, status, timeout)),
                              daemon=True)
    thread.start()
    thread.join(timeout + 30)
    assert not thread.is_alive(), "the readiness wait outlived its start timeout by 30 s"
    return verdict[0]


@pytest.mark.parametrize("prefix", [b"HTTP/1.1 200", b"HTTP/1.1 200 OK\r\nX-Slow: ",
                                    b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n"],
                         ids=["status line", "headers", "body"])
def test_review2_hole02_a_replica_that_trickles_its_ready_answer_fails_its_start_in_time(prefix: bytes) -> None:
    with Answers(trickle(prefix)) as server:
        assert waited(ReadinessProbe(), server.endpoint, 2) == "not ready within the start timeout of 2 s"


def test_review2_hole02_an_endless_ready_answer_is_read_only_up_to_its_size() -> None:
    sent = [0]

    def endless(connection: socket.socket, stopping: threading.Event) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        chunk = b"x" * 65536
        while sent[0] < 256 * 2**20 and not stopping.is_set():  # 256 MiB at most
            connection.sendall(chunk)
            sent[0] += len(chunk)

    with Answers(endless) as server:
        assert waited(ReadinessProbe(), server.endpoint, 10) == ""  # 200: ready
        assert sent[0] < 64 * 2**20, f"the probe read {sent[0]} bytes of an endless answer"


def test_review2_hole02_readiness_asks_the_backend_nothing_while_the_replica_answers() -> None:
    answered = [0]

    def starting_then_ready(connection: socket.socket, stopping: threading.Event) -> None:
        answered[0] += 1
        status = b"200 OK" if answered[0] > 20 else b"503 Service Unavailable"
        connection.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")

    asked = []
    with Answers(starting_then_ready) as server:
        assert waited(ReadinessProbe(), server.endpoint, 60, status=lambda: asked.append(1) or RUNNING) == ""
    assert answered[0] > 20 and asked == []  # every probe was answered: the replica runs, nobody asks the engine


def replica_model(name: str, *args: str, **table: Any) -> ModelConfig:
    """A model whose replica is ``SERVER`` (or the table's command)."""
    return ModelConfig(name=name, **{"command": ["python", "-c", SERVER, *args], "start_timeout": 60, **table})


@contextlib.contextmanager
def autoscaler(store: Store, backend: ProcessBackend, model: ModelConfig) -> Iterator[tuple[Autoscaler, str]]:
    """An autoscaler leading on ``store`` with inline actions; every replica of ``backend`` is killed after."""
    scaler = Autoscaler({model.name: model}, store, backend, ReadinessProbe(), Inline(), sweep_every=0)
    try:
        yield scaler, store.leadership(10).hold() or ""
    finally:
        for pid in [*backend.children, *(int(r.handle) for r in backend.running().values())]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        for child in backend.children.values():
            child.wait(10)


def test_review2_hole13_a_replica_that_sets_its_process_title_is_kept_and_stopped(store: Store,
                                                                                    tmp_path: Path) -> None:
    try:
        import setproctitle  # noqa: F401 - gunicorn uses it when installed, and so the model server
    except ImportError:
        unavailable("setproctitle is not installed (pip install -e '.[test]')")
    model = ModelConfig(name="iris", command=["python", "-m", "model.server"], start_timeout=60, min_replicas=1,
                        env={"MODEL_CLASS": "testmodels:Sleepy",
                             "PYTHONPATH": os.pathsep.join([str(TEST_MODELS), os.environ.get("PYTHONPATH", "")])})
    backend = ProcessBackend(Path(__file__).resolve().parents[2], tmp_path / "logs", "hole13")
    with autoscaler(store, backend, model) as (scaler, token):
        scaler.lead(token, full=True)  # starts the warm replica and waits for it
        [replica] = store.replicas.of("iris")
        assert replica.state is ReplicaState.READY, replica
        process = psutil.Process(int(replica.handle))
        assert REPLICA_ENV not in process.environ(), "the replica's title did not clear its environment"
        scaler.sweep(token, adopting=False)
        assert [r.id for r in store.replicas.of("iris")] == [replica.id], "the sweep forgot a READY replica"
        assert list(backend.running()) == [replica.id]
        scaler.stop_all(token)
        assert not process.is_running() and store.replicas.of("iris") == []


def test_review2_hole14_a_process_replica_that_dies_while_idle_leaves_no_zombie(store: Store,
                                                                                  tmp_path: Path) -> None:
    backend = ProcessBackend(tmp_path, tmp_path / "logs", "hole14")
    with autoscaler(store, backend, replica_model("idle", min_replicas=1)) as (scaler, token):
        scaler.lead(token, full=True)
        [replica] = store.replicas.of("idle")
        assert replica.state is ReplicaState.READY, replica
        pid = int(replica.handle)
        os.kill(pid, signal.SIGKILL)  # dies while idle (the OOM killer, a crash)
        assert wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", 10)
        scaler.sweep(token, adopting=False)
        assert not psutil.pid_exists(pid), "a zombie is left of the replica"
        assert backend.children == {} and store.replicas.of("idle") == []


def test_review2_hole06_two_platforms_on_one_host_leave_each_other_s_replicas_alone(redis_url: str,
                                                                                     tmp_path: Path) -> None:
    from workers.scaling.service import make_backend, namespace_of

    other_url = redis_url.rsplit("/", 1)[0] + "/1"  # the other platform's Redis (its own keyspace)
    redis.Redis.from_url(other_url).flushdb()
    settings = Settings(models_file=tmp_path / "models.toml", data_dir=tmp_path / "data")  # one folder for both
    scalers = []
    with contextlib.ExitStack() as stack:
        for url in (redis_url, other_url):
            store = Store.of(redis.Redis.from_url(url, decode_responses=True), retention=60)
            backend = make_backend(settings, namespace_of(store, threading.Event(), 0.1) or "")
            assert isinstance(backend, ProcessBackend)
            scalers.append((store, *stack.enter_context(autoscaler(store, backend, replica_model("m",
                                                                                                 min_replicas=1)))))
        for _, scaler, token in scalers:
            scaler.lead(token, full=True)
        for _, scaler, token in scalers:
            scaler.sweep(token, adopting=False)
        for store, scaler, _ in scalers:
            [replica] = store.replicas.of("m")
            assert replica.state is ReplicaState.READY and scaler.backend.status(replica.handle).live, replica
            assert "stray_removed" not in [e.kind for e in store.events.recent(limit=100)]


def replica_pids(marker: str) -> list[int]:
    """Pids of the processes whose command line mentions ``marker``."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.status() != psutil.STATUS_ZOMBIE and any(marker in part for part in process.cmdline()):
                found.append(process.pid)
    return found


def test_review2_hole15_ctrl_c_stops_replicas_that_ignore_sigterm_before_up_returns(tmp_path: Path) -> None:
    marker = f"# replica of {tmp_path.name}"
    (tmp_path / "models.toml").write_text(f"""
[models.stubborn]
command = ["python", "-c", {json.dumps(SERVER + marker)}, "stubborn"]
min_replicas = 4
max_replicas = 4
start_timeout = 60
""")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SM_REDIS_URL", "SM_NAMESPACE")}
    env.update(SM_MODELS_FILE=str(tmp_path / "models.toml"), SM_DATA_DIR=str(tmp_path / "data"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    port = free_port()
    up = subprocess.Popen([sys.executable, "-m", "workers.cli", "up", "--port", str(port), "--flower-port",
                           str(free_port())], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def four_ready() -> bool:
            with contextlib.suppress(requests.RequestException, ValueError):
                view = requests.get(f"http://127.0.0.1:{port}/v1/models/stubborn", timeout=2).json()
                return [r["state"] for r in view["replicas"]] == ["READY"] * 4
            return False

        assert wait_until(four_ready, 90, interval=0.2), "the four warm replicas did not get ready"
        assert len(replica_pids(marker)) == 4
        os.killpg(up.pid, signal.SIGINT)  # Ctrl-C
        assert up.wait(90) == 0
        assert replica_pids(marker) == [], "replicas outlived up"
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        for pid in replica_pids(marker):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
