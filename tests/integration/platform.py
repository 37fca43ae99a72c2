"""The platform's real processes (gunicorn gateway, celery workers, autoscalers) for one test, started as a user
would start them, and stopped again even when the test fails."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from workers.polling import wait_until
from workers.scaling.backends import NAMESPACE_LABEL, ProcessBackend, free_port

IN_CI = bool(os.environ.get("CI"))
TEST_IMAGE = "serverless-model/test-models:latest"  # tests/integration/images on the example image
TEST_MODELS = Path(__file__).resolve().parent / "images"  # testmodels.py and liar.py, importable by replicas
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


def eventually(condition: Callable[[], object], timeout: float, message: str) -> None:
    """Poll ``condition`` until it holds, or fail with ``message``."""
    if not wait_until(condition, timeout, interval=0.1):
        raise AssertionError(message)


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
                    "SM_NAMESPACE": self.namespace, "SM_MAX_WAITERS": "64",  # tests wait on many jobs at once
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(TEST_MODELS), os.environ.get("PYTHONPATH")]))}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, *names: str, env: dict[str, str] | None = None, concurrency: int = 16) -> "Platform":
        """Start the named processes (gateway, worker, worker2 …, autoscaler, autoscaler2 …), with ``env`` added."""
        for name in names:
            running = self.processes.get(name)
            assert running is None or running.poll() is not None, f"{name} runs already"
            argv = ["gateway", "--port", str(self.port), "--workers", "1"] if name == "gateway" else [name]
            if name.startswith("worker"):  # separate celery nodes
                argv = ["worker", "--concurrency", str(concurrency), "--name", f"{name}@%h"]
            elif name.startswith("autoscaler"):
                argv = ["autoscaler"]
            with open(self.workdir / f"{name}.log", "ab") as log:
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "workers.cli", *argv], env={**self.env, **(env or {})},
                    cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if "gateway" in names:
            eventually(self.healthy, 30, "the gateway did not come up")
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
        eventually(condition, timeout, message)

    def clean_up(self) -> None:
        """Stop the processes, then kill the replicas they left (an autoscaler leaves serving replicas)."""
        self.stop()
        for launched in ProcessBackend(self.workdir, self.workdir / "data" / "logs", self.namespace).running().values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(launched.handle), signal.SIGKILL)
        remove_containers(f"{NAMESPACE_LABEL}={self.namespace}")


def events(response: requests.Response) -> Iterator[dict[str, str]]:
    """The Server-Sent Events of a response, as they come."""
    event: dict[str, str] = {}
    for line in response.iter_lines(decode_unicode=True):
        if not line:
            if event:
                yield event
            event = {}
            continue
        name, _, value = line.partition(": ")
        event[name] = value


def remove_containers(label: str = "serverless-model") -> None:
    """Remove every container carrying ``label`` (left by a failed docker test)."""
    if not shutil.which("docker"):
        return
    found = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"],
                           capture_output=True, text=True, check=False).stdout.split()
    if found:
        subprocess.run(["docker", "rm", "-f", *found], capture_output=True, check=False)
