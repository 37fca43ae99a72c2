"""``serverless-model jobs`` and ``scale`` as a user runs them, against the real platform (gunicorn gateway, celery
worker, autoscaler, replicas), with and without ``--json``."""

import json
from collections.abc import Callable

import pytest
import requests

from tests.integration.platform import Platform
from tests.integration.test_cli import SETOSA, json_of, serverless_model

pytestmark = pytest.mark.integration


def test_jobs_lists_the_jobs_newest_first_with_a_failed_ones_error(make_platform: Callable[..., Platform]) -> None:
    platform = make_platform().start("gateway", "worker", "autoscaler")
    url = platform.url
    good = json_of(["submit", "iris", SETOSA, "--wait"], url)
    failed = serverless_model("submit", "iris", '{"features": [[1]]}', "--wait", "--json", "--url", url)
    bad = json.loads(failed.stdout)
    listed = serverless_model("jobs", "--model", "iris", "--url", url)
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert [row[:3] for row in rows] == [[bad["id"], "iris", "FAILED"], [good["id"], "iris", "SUCCEEDED"]]
    assert "bad_input:" in listed.stdout.splitlines()[1]
    only = json_of(["jobs", "--status", "FAILED"], url)
    assert [j["id"] for j in only["jobs"]] == [bad["id"]] and only["jobs"][0]["error"]["code"] == "bad_input"
    page = json_of(["jobs", "--limit", "1"], url)
    assert [j["id"] for j in page["jobs"]] == [bad["id"]] and page["next"] is not None
    rest = json_of(["jobs", "--limit", "1", "--before", str(page["next"])], url)
    assert [j["id"] for j in rest["jobs"]] == [good["id"]]
    wrong = serverless_model("jobs", "--status", "DONE", "--url", url)
    assert wrong.returncode == 1 and wrong.stderr.startswith("error: "), wrong.stderr


def test_scale_sets_bounds_the_autoscaler_applies_and_reset_removes_them(
        make_platform: Callable[..., Platform]) -> None:
    platform = make_platform().start("gateway", "worker", "autoscaler")
    url = platform.url
    done = serverless_model("scale", "iris", "--min", "1", "--url", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("iris: 1-2 replicas (override)")
    platform.wait_until(lambda: [r["state"] for r in requests.get(f"{url}/v1/models/iris", timeout=5).json()[
        "replicas"]] == ["READY"], 60, "min 1 started no replica")
    status = serverless_model("status", "--url", url).stdout
    assert "1-2 (override)" in status and "1 READY" in status, status
    assert json_of(["scale", "iris", "--max", "1"], url) == {"model": "iris", "min_replicas": 1, "max_replicas": 1,
                                                             "source": "override"}
    refused = serverless_model("scale", "iris", "--min", "3", "--url", url)
    assert refused.returncode == 1 and refused.stderr.startswith("error: "), refused.stderr  # min over max: 422
    reset = serverless_model("scale", "iris", "--reset", "--url", url)
    assert reset.stdout.startswith("iris: 0-2 replicas (config)"), reset.stderr
    assert json_of(["scale", "iris", "--reset"], url)["source"] == "config"
    kinds = [e["kind"] for e in json_of(["events", "--model", "iris"], url)["events"]]
    assert "scale_set" in kinds and "scale_reset" in kinds, kinds
