"""docker-compose.yml for real: built here, up, a job through the gateway, Flower behind its password, down clean."""

import base64
import json
import os
import secrets
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.platform import eventually, unavailable

pytestmark = [pytest.mark.docker, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]
GATEWAY = "http://127.0.0.1:8080"
FLOWER = "http://127.0.0.1:5555"
FLOWER_AUTH = "admin:" + secrets.token_hex(8)


def status(url: str, auth: str | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def leftovers(project: str) -> list[str]:
    """Containers, volumes and networks of the project, and replica containers, that still exist."""

    def lines(*args: str) -> list[str]:
        out = subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout
        return [line for line in out.splitlines() if line]

    return [
        *lines("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"),
        *lines("ps", "-aq", "--filter", "label=serverless-model"),
        *lines("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}"),
        *lines("network", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}"),
    ]


@pytest.fixture
def compose() -> Iterator[tuple[list[str], dict[str, str]]]:
    """``docker-compose -p <unique>`` with the secrets set; ``down -v`` afterwards, even when the test fails."""
    for tool in ("docker", "docker-compose"):
        if not shutil.which(tool):
            unavailable(f"{tool} is not installed")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        unavailable("no Docker engine answers")
    project = "smcompose" + secrets.token_hex(4)
    env = {**os.environ, "REDIS_PASSWORD": secrets.token_hex(16), "FLOWER_BASIC_AUTH": FLOWER_AUTH}
    command = ["docker-compose", "-p", project, "-f", str(ROOT / "docker-compose.yml")]
    try:
        yield command, env
    finally:
        subprocess.run([*command, "down", "-v", "--remove-orphans"], env=env, capture_output=True)
    assert leftovers(project) == []


def test_compose_up_runs_a_job_and_down_leaves_nothing(compose: tuple[list[str], dict[str, str]]) -> None:
    command, env = compose
    subprocess.run([*command, "up", "-d", "--build"], env=env, check=True, capture_output=True)
    eventually(lambda: status(GATEWAY + "/healthz") == 200, 120, "the gateway never answered")

    body = json.dumps({"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}).encode()
    request = urllib.request.Request(
        GATEWAY + "/v1/models/iris/jobs?wait=60", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=90) as response:  # the autoscaler starts a replica from zero
        job = json.load(response)
    assert job["status"] == "SUCCEEDED", job
    assert len(job["output"]["predictions"]) == 2

    eventually(lambda: status(FLOWER + "/", FLOWER_AUTH) == 200, 60, "Flower never answered with its password")
    assert status(FLOWER + "/") == 401
