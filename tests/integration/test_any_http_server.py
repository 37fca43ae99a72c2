"""Any HTTP server as a replica (the ``http`` protocol), a replica's log through the API and the CLI, and a models
file that says something impossible."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.integration.platform import Platform
from workers.scaling.backends import free_port

pytestmark = pytest.mark.integration
ANY_SERVER = """
[models.plain]
protocol = "http"
command = ["python", "-m", "liar"]
predict_path = "/"
health_path = "/ok"
idle_timeout = 30
"""


def test_any_http_server_serves_jobs_and_its_log_is_readable(make_platform: Callable[..., Platform]) -> None:
    platform = make_platform(models=ANY_SERVER).start("gateway", "worker", "autoscaler")
    job = requests.post(f"{platform.url}/v1/models/plain/jobs?wait=30", json={"answer": "fine"}, timeout=40).json()
    assert job["status"] == "SUCCEEDED" and job["output"] == {"ok": True}, job
    iris = requests.post(f"{platform.url}/v1/models/iris/jobs?wait=30", json={"features": [[5.1, 3.5, 1.4, 0.2]]},
                         timeout=40).json()
    assert iris["status"] == "SUCCEEDED"

    lines = requests.get(f"{platform.url}/v1/models/iris/replicas/{iris['replica']}/logs", params={"tail": 50},
                         timeout=30).json()["lines"]
    assert any("Booting worker" in line for line in lines), lines  # gunicorn's start, in the replica's log file
    printed = subprocess.run([sys.executable, "-m", "workers.cli", "logs", "iris", iris["replica"], "--tail", "50",
                              "--url", platform.url], capture_output=True, text=True, timeout=60, check=False)
    assert printed.returncode == 0 and "Booting worker" in printed.stdout, printed.stderr
    unknown = requests.get(f"{platform.url}/v1/models/iris/replicas/{job['replica']}/logs", timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_replica"  # another model's


def test_up_refuses_an_impossible_models_file_and_starts_nothing(tmp_path: Path) -> None:
    (tmp_path / "models.toml").write_text('[models.m]\ncommand = ["x"]\nconcurency = 2\n')
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SM_REDIS_URL")}
    env.update(SM_MODELS_FILE=str(tmp_path / "models.toml"), SM_DATA_DIR=str(tmp_path / "data"))
    up = subprocess.run([sys.executable, "-m", "workers.cli", "up", "--port", str(free_port())], env=env,
                        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert up.returncode == 1
    assert "model 'm': unknown key 'concurency'; allowed:" in up.stderr, up.stderr
    assert not (tmp_path / "data").exists()  # not even Redis was started
