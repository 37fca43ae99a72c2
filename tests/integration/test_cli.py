"""The ``serverless-model`` client commands, run as a user runs them (the installed entry point, in a process of
its own), against the real platform (gunicorn gateway, celery worker, autoscaler, replicas): each command with and
without ``--json``."""

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.auth import digest
from tests.integration.platform import Platform, unavailable
from workers.scaling.backends import free_port

pytestmark = pytest.mark.integration
KEY = "cli-key-0123456789"
SETOSA = '{"features": [[5.1, 3.5, 1.4, 0.2]]}'
LAZY = """
[models.lazy]
command = ["python", "-m", "model.server"]
env = { MODEL_CLASS = "testmodels:Sleepy" }
queue_timeout = 600
"""  # its low-priority jobs start no replica: they wait, QUEUED, as long as the test needs


def serverless_model(*argv: str, env: dict[str, str] | None = None,
                     stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run the ``serverless-model`` command (the script pip installed beside this Python), ``stdin`` its input."""
    script = Path(sys.executable).parent / "serverless-model"
    if not script.exists():
        unavailable("the serverless-model command is not installed (pip install -e .)")
    return subprocess.run([str(script), *argv], input=stdin, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "SM_API_KEY": "", **(env or {})})


def json_of(argv: list[str], url: str, env: dict[str, str] | None = None) -> Any:
    """A command's ``--json`` answer (it must succeed)."""
    done = serverless_model(*argv, "--json", "--url", url, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def platform(make_platform: Callable[..., Platform]) -> Platform:
    return make_platform(models=LAZY, idle_timeout=60).start("gateway", "worker", "autoscaler")


def test_submit_wait_prints_the_output_then_status_events_job_and_logs_show_it(platform: Platform) -> None:
    url = platform.url
    done = serverless_model("submit", "iris", SETOSA, "--wait", "--url", url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["predictions"] == ["setosa"]
    assert done.stderr.splitlines()[0] == "QUEUED"  # the progress, a line per change (stderr is no terminal)
    job = json_of(["submit", "iris", SETOSA, "--wait"], url)
    assert job["status"] == "SUCCEEDED" and job["output"]["predictions"] == ["setosa"]
    replica = job["replica"]

    status = serverless_model("status", "--url", url)
    assert status.returncode == 0, status.stderr
    rows = [line.split() for line in status.stdout.splitlines()]
    iris = next(row for row in rows if row[0] == "iris")
    assert iris[:6] == ["iris", "0", "0", "0", "1", "READY"] and iris[7] == "0-2", status.stdout
    assert [replica, "iris", "READY"] in [row[:3] for row in rows], status.stdout
    models = {m["name"]: m for m in json_of(["status"], url)["models"]}
    assert [r["id"] for r in models["iris"]["replicas"]] == [replica]

    shown = serverless_model("job", job["id"], "--url", url).stdout
    assert "status    SUCCEEDED\n" in shown and f"replica   {replica}\n" in shown and '"setosa"' in shown
    assert json_of(["job", job["id"]], url)["output"] == job["output"]

    events = serverless_model("events", "--model", "iris", "--url", url)
    scale_ups = [line for line in events.stdout.splitlines() if " scale_up " in line]
    assert events.returncode == 0 and scale_ups and "  start 1: waiting=1 " in scale_ups[-1], events.stdout
    listed = json_of(["events", "--model", "iris", "--limit", "50"], url)["events"]
    assert any(e["kind"] == "scale_up" and e["reason"].startswith("start 1:") for e in listed), listed

    logs = serverless_model("logs", "iris", replica, "--tail", "50", "--url", url)
    assert logs.returncode == 0 and "Booting worker" in logs.stdout, logs.stderr
    assert any("Booting worker" in line for line in json_of(["logs", "iris", replica], url)["lines"])


def test_a_failing_job_exits_non_zero_with_its_error(platform: Platform) -> None:
    done = serverless_model("submit", "iris", '{"features": [[1]]}', "--wait", "--url", platform.url)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines()[-1].startswith("error: bad_input: "), done.stderr
    refused = serverless_model("submit", "iris", "--wait", "--url", platform.url, stdin="{not json")
    assert refused.returncode == 2 and "input is not JSON" in refused.stderr  # refused before anything is sent
    done = serverless_model("submit", "iris", "-", "--wait", "--json", "--url", platform.url,
                            stdin='{"features": [[1]]}')
    assert done.returncode == 1 and json.loads(done.stdout)["error"]["code"] == "bad_input"


def test_cancel_a_queued_job_then_retry_it(platform: Platform) -> None:
    url = platform.url
    job = requests.post(f"{url}/v1/models/lazy/jobs?priority=low", json={"sleep": 0}, timeout=10).json()
    cancelled = serverless_model("cancel", job["id"], "--url", url)
    assert (cancelled.returncode, cancelled.stdout) == (0, f"{job['id']}  CANCELLED\n"), cancelled.stderr
    again = serverless_model("cancel", job["id"], "--url", url)
    assert again.returncode == 1 and again.stderr.startswith("error: "), again.stderr  # finished: 409
    assert serverless_model("retry", job["id"], "--url", url).stdout == f"{job['id']}  QUEUED\n"
    assert json_of(["job", job["id"]], url)["status"] == "QUEUED"
    assert json_of(["cancel", job["id"]], url)["status"] == "CANCELLED"
    assert json_of(["retry", job["id"]], url)["status"] == "QUEUED"
    unknown = serverless_model("retry", "no-such-job", "--url", url)
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: unknown_job: "), unknown.stderr


def test_the_api_key_is_sent_and_a_wrong_one_is_refused(make_platform: Callable[..., Platform]) -> None:
    platform = make_platform(models=LAZY)
    platform.env.update(SM_API_KEYS=digest(KEY))
    platform.start("gateway")
    env = {"SM_GATEWAY_URL": platform.url}
    good = serverless_model("events", env={**env, "SM_API_KEY": KEY})
    assert good.returncode == 0 and good.stdout == "no events\n", good.stderr
    assert "lazy" in {m["name"] for m in json_of(["status"], platform.url, env={"SM_API_KEY": KEY})["models"]}
    for wrong in ({"SM_API_KEY": "not-the-key"}, {}):
        refused = serverless_model("status", env={**env, **wrong})
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.startswith("error: unauthorized: ") and "Traceback" not in refused.stderr
        assert serverless_model("status", "--json", env={**env, **wrong}).returncode == 1


def test_no_gateway_at_the_url_is_exit_2_naming_it() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for argv in (["status"], ["status", "--json"], ["submit", "iris", "{}", "--wait"]):
        done = serverless_model(*argv, "--url", url)
        assert (done.returncode, done.stderr) == (2, f"cannot reach the gateway at {url}: connection refused\n")
