"""Operators' routes through the real platform (gunicorn gateway, celery worker, autoscaler, process replicas):
``GET /v1/jobs`` lists jobs by model and status, in pages, each key its own; ``PUT``/``DELETE
/v1/models/<m>/scale`` set and remove replica bounds the leading autoscaler applies at its next pass."""

from collections.abc import Callable
from typing import Any

import pytest
import requests

from gateway.auth import digest
from tests.integration.platform import Platform

pytestmark = pytest.mark.integration
KEY_A, KEY_B = "key-a-0123456789", "key-b-9876543210"
SLEEPY = """
[models.sleepy]
command = ["python", "-m", "model.server"]
env = { MODEL_CLASS = "testmodels:Sleepy" }
max_replicas = 1
"""
GOOD, BAD = {"features": [[5.1, 3.5, 1.4, 0.2]]}, {"features": "none"}


def listed(platform: Platform, headers: dict[str, str] | None = None, **params: Any) -> dict[str, Any]:
    """GET /v1/jobs with ``params``: its JSON answer (200 asserted)."""
    answer = requests.get(f"{platform.url}/v1/jobs", params=params, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_jobs_are_listed_by_model_and_status_newest_first_in_pages(make_platform: Callable[..., Platform]) -> None:
    platform = make_platform(models=SLEEPY).start("gateway", "worker", "autoscaler")
    jobs = f"{platform.url}/v1/models/iris/jobs"
    failed = requests.post(jobs, params={"wait": 60}, json=BAD, timeout=70).json()
    done = [requests.post(jobs, params={"wait": 60}, json=GOOD, timeout=70).json() for _ in range(2)]
    assert failed["status"] == "FAILED" and [d["status"] for d in done] == ["SUCCEEDED", "SUCCEEDED"]
    low = requests.post(f"{platform.url}/v1/models/sleepy/jobs", params={"priority": "low"}, json={"sleep": 0},
                        timeout=10).json()  # alone, a low job starts no replica: it stays QUEUED
    newest_first = [low["id"], done[1]["id"], done[0]["id"], failed["id"]]
    assert [j["id"] for j in listed(platform)["jobs"]] == newest_first
    only_failed = listed(platform, status="FAILED", limit=10)["jobs"]
    assert [j["id"] for j in only_failed] == [failed["id"]]
    assert only_failed[0]["error"] == failed["error"] and only_failed[0]["attempts"] == 1
    assert only_failed[0]["replica"] == failed["replica"] and only_failed[0]["finished_at"]
    succeeded = listed(platform, model="iris", status="SUCCEEDED")["jobs"]
    assert [j["id"] for j in succeeded] == newest_first[1:3] and all("error" not in j for j in succeeded)
    assert [(j["id"], j["status"]) for j in listed(platform, model="sleepy")["jobs"]] == [(low["id"], "QUEUED")]
    paged, before = [], None
    while True:
        page = listed(platform, limit=1, **({"before": before} if before is not None else {}))
        paged += [j["id"] for j in page["jobs"]]
        if page["next"] is None:
            break
        before = page["next"]
    assert paged == newest_first
    for params, status in (({"status": "DONE"}, 422), ({"limit": 0}, 422), ({"before": "yesterday"}, 422),
                           ({"model": "nope"}, 404)):
        answer = requests.get(f"{platform.url}/v1/jobs", params=params, timeout=10)
        assert answer.status_code == status and answer.json()["error"]["code"], (params, answer.text)


def test_with_api_keys_each_key_lists_only_its_own_jobs(make_platform: Callable[..., Platform]) -> None:
    platform = make_platform()
    platform.env.update(SM_API_KEYS=f"{digest(KEY_A)},{digest(KEY_B)}")
    platform.start("gateway")  # no worker: every job stays queued

    def bearer(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    mine = [requests.post(f"{platform.url}/v1/models/iris/jobs", json=GOOD, headers=bearer(KEY_A),
                          timeout=10).json()["id"] for _ in range(3)]
    assert [j["id"] for j in listed(platform, bearer(KEY_A))["jobs"]] == mine[::-1]
    assert listed(platform, bearer(KEY_B)) == {"jobs": [], "next": None}
    assert listed(platform, bearer(KEY_B), model="iris", status="QUEUED") == {"jobs": [], "next": None}
    assert requests.get(f"{platform.url}/v1/jobs", timeout=10).status_code == 401


def test_a_scale_override_is_applied_at_the_next_pass_and_removed(make_platform: Callable[..., Platform]) -> None:
    platform = make_platform().start("gateway", "worker", "autoscaler")  # iris: idle_timeout 3 s, none at first
    scale, model = f"{platform.url}/v1/models/iris/scale", f"{platform.url}/v1/models/iris"

    def ready() -> int:
        return sum(r["state"] == "READY" for r in requests.get(model, timeout=10).json()["replicas"])

    for body, status in (({"min_replicas": True}, 422), ({"min_replicas": 3}, 422), ({}, 422),
                         ({"max_replicas": 1.5}, 422), ({"max_replicas": 0}, 422)):
        answer = requests.put(scale, json=body, timeout=10)
        assert answer.status_code == status and answer.json()["error"]["code"] == "invalid_input", (body, answer.text)
    malformed = requests.put(scale, data=b"{", headers={"Content-Type": "application/json"}, timeout=10)
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "malformed_json"
    unknown = requests.put(f"{platform.url}/v1/models/nope/scale", json={"min_replicas": 1}, timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_model"
    assert ready() == 0
    answer = requests.put(scale, json={"min_replicas": 1}, timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"model": "iris", "min_replicas": 1, "max_replicas": 2, "source": "override"}
    platform.wait_until(lambda: ready() == 1, 60, "no replica became READY for the override's minimum")
    view = requests.get(model, timeout=10).json()
    assert view["scale"]["source"] == "override" and view["min_replicas"] == 1
    platform.wait_until(lambda: (requests.get(model, timeout=10).json()["desired"] or {}).get("replicas") == 1, 10,
                        "the model view does not show the policy wanting one replica")
    reset = requests.delete(scale, timeout=10)
    assert reset.status_code == 200
    assert reset.json() == {"model": "iris", "min_replicas": 0, "max_replicas": 2, "source": "config"}
    platform.wait_until(lambda: not requests.get(model, timeout=10).json()["replicas"], 60,
                        "the idle replica was not stopped once the override was removed")
    events = requests.get(f"{platform.url}/v1/events", params={"model": "iris"}, timeout=10).json()["events"]
    kinds = [e["kind"] for e in events]
    assert "scale_set" in kinds and "scale_reset" in kinds and kinds.index("scale_reset") < kinds.index("scale_set")
