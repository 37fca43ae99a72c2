"""``serverless-model up``: everything starts on the embedded Redis, a job runs, Ctrl-C leaves no process behind."""

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis
import requests

from tests.integration.platform import MODELS_TOML, unavailable
from workers.polling import wait_until
from workers.scaling.backends import free_port

pytestmark = pytest.mark.integration


def processes_marked(marker: str) -> list[int]:
    """Pids of processes whose working directory, environment or command line mentions ``marker`` (a process
    that set its title, as gunicorn and Celery do with setproctitle, keeps only its working directory)."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if any(marker in part for part in [process.cwd(), *process.cmdline(), *process.environ().values()]):
                found.append(process.pid)
    return found


@contextlib.contextmanager
def up(tmp_path: Path, with_redis_server: bool) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """``serverless-model up`` in ``tmp_path``, with or without redis-server on PATH; Ctrl-C afterwards."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SM_REDIS_URL")}
    env.update(SM_MODELS_FILE=str(tmp_path / "models.toml"), SM_DATA_DIR=str(tmp_path / "data"))
    if not with_redis_server:
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                      if not (Path(p) / "redis-server").exists())
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "workers.cli", "up", "--port", str(port), "--flower-port",
                                str(free_port())], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield process, port
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(60)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def serves(port: int) -> bool:
    """Whether the gateway at ``port`` runs a job."""
    with contextlib.suppress(requests.RequestException):
        if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
            return requests.post(f"http://127.0.0.1:{port}/v1/models/iris/jobs?wait=60", timeout=70,
                                 json={"features": [[6.3, 3.3, 6.0, 2.5]]}).json()["status"] == "SUCCEEDED"
    return False


def test_up_serves_a_job_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    (tmp_path / "models.toml").write_text(MODELS_TOML.format(idle_timeout=30))
    secret = tmp_path / "data" / "redis" / "url"
    with up(tmp_path, with_redis_server=False) as (process, port):
        assert wait_until(lambda: serves(port) or process.poll() is not None, 90, interval=0.5)
        assert process.poll() is None and serves(port)
        assert len(processes_marked(str(tmp_path))) >= 6  # Redis, gateway, worker, autoscaler, Flower, replica
        url = secret.read_text().strip()
        assert secret.stat().st_mode & 0o077 == 0
        password = url.split("@")[0].rsplit(":", 1)[1]
        with pytest.raises(redis.AuthenticationError):  # the embedded Redis wants this run's password
            redis.Redis.from_url(url.replace(f":{password}@", "")).ping()
        assert redis.Redis.from_url(url).ping()
    output = process.communicate()[0].decode(errors="replace")
    assert "gateway  http://127.0.0.1:" in output and password not in output
    assert wait_until(lambda: processes_marked(str(tmp_path)) == [], 5), output[-2000:]
    assert (tmp_path / "data" / "redis" / "appendonlydir").is_dir()


def test_hole15_up_starts_again_after_redis_server_was_installed(tmp_path: Path) -> None:
    if not any((Path(p) / "redis-server").exists() for p in os.environ["PATH"].split(os.pathsep)):
        unavailable("redis-server is not on PATH")
    (tmp_path / "models.toml").write_text(MODELS_TOML.format(idle_timeout=30))
    for with_redis_server in (False, True):
        with up(tmp_path, with_redis_server) as (process, port):
            wait_until(lambda: serves(port) or process.poll() is not None, 90, interval=0.5)
            assert process.poll() is None, process.communicate()[0].decode(errors="replace")[-3000:]
            assert serves(port)


def test_hole15_up_prints_the_servers_log_when_redis_cannot_start(tmp_path: Path) -> None:
    (tmp_path / "models.toml").write_text(MODELS_TOML.format(idle_timeout=30))
    aof = tmp_path / "data" / "redis" / "appendonlydir"
    aof.mkdir(parents=True)
    (aof / "appendonly.aof.manifest").write_text("this is not a manifest\n")
    with up(tmp_path, with_redis_server=False) as (process, _):
        output = process.communicate(timeout=60)[0].decode(errors="replace")
    assert process.returncode != 0
    assert "manifest" in output.lower(), output[-3000:]


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[str]:
    """The Redis that ``up`` starts when REDIS_URL is not set: its URL."""
    from workers.cli import start_redis
    from workers.config import Settings

    env = {k: os.environ.pop(k) for k in ("REDIS_URL", "SM_REDIS_URL") if k in os.environ}
    try:
        url, process = start_redis(Settings(data_dir=tmp_path / "data"))
    finally:
        os.environ.update(env)
    assert process is not None
    yield url
    process.terminate()
    process.wait(10)


def test_hole11_the_embedded_redis_acknowledges_only_what_is_on_disk(embedded: str) -> None:
    assert redis.Redis.from_url(embedded, decode_responses=True).config_get("appendfsync") == {"appendfsync": "always"}


def test_hole12_the_embedded_redis_wants_a_password_made_for_the_run(embedded: str) -> None:
    password = embedded.split("@")[0].rsplit(":", 1)[1]
    assert len(password) >= 24
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(embedded.replace(f":{password}@", "")).ping()
