"""``GET /metrics`` scraped during a burst from zero on real parts: the text parses with Prometheus' own parser,
the gauges see the replicas come and go, the counters and histograms account for every job and the cold starts'
stages add up to the whole. With API keys on, the counters of scaling decisions, failed starts, webhook attempts
and refusals move by what happened, and the metrics token opens ``/metrics`` alone."""

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from gateway.auth import digest
from tests.integration.platform import Platform, eventually
from tests.integration.test_pipeline import flower_rows, submit
from tests.integration.test_webhooks import Receiver, webhooks
from workers.polling import wait_until

pytestmark = pytest.mark.integration
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(platform: Platform, key: str = "") -> Samples:
    """Every sample by name and labels."""
    answer = requests.get(f"{platform.url}/metrics", headers={"Authorization": f"Bearer {key}"} if key else {},
                          timeout=10)
    assert answer.status_code == 200, answer.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def of_iris(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the model's samples of ``name`` whose labels include ``labels``."""
    return of(samples, name, model="iris", **labels)


def of(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(value for (found, pairs), value in samples.items() if found == name
               and set(labels.items()) <= set(pairs))


def test_a_burst_from_zero_moves_the_counters_and_histograms_by_every_job(
        make_platform: Callable[..., Platform]) -> None:
    platform = make_platform(idle_timeout=3).start("gateway", "worker", "autoscaler")
    before = scrape(platform)
    assert of_iris(before, "sm_replicas") == 0
    peaks: list[float] = []
    answered: list[float] = []

    def one(row: list[float]) -> requests.Response:
        answer = submit(platform, {"features": [row]}, wait=90)
        answered.append(time.time())
        return answer

    with ThreadPoolExecutor(21) as pool:
        sent = time.time()
        answers = list(pool.map(one, flower_rows(20)))
        eventually(lambda: peaks.append(of_iris(scrape(platform), "sm_replicas")) or peaks[-1] >= 1, 60,
                   "/metrics never showed a replica during the burst")
        assert [a.json()["status"] for a in answers] == ["SUCCEEDED"] * 20
    after = scrape(platform)
    colds = requests.get(f"{platform.url}/v1/models/iris", timeout=10).json()["cold_starts"]
    first = colds[-1]  # the oldest: the replica the burst started first, and jobs waited for it
    assert first["complete"] and set(first["stages"]) == {"placed", "created", "process_up", "ready", "first_result"}
    assert first["total"] <= min(answered) - sent + 0.01  # decided after the first submit, done before any answer
    done = [cold for cold in colds if cold["complete"]]
    assert all(abs(sum(cold["stages"].values()) - cold["total"]) < 1e-3 for cold in done)
    assert of_iris(after, "sm_cold_start_seconds_count") == len(done)
    stages = sum(of_iris(after, "sm_cold_start_stage_seconds_sum", stage=stage) for stage in first["stages"])
    assert abs(stages - of_iris(after, "sm_cold_start_seconds_sum")) < 1e-3 * len(done)  # the stages add up
    waited = [a for a in answers if a.json()["cold_start"]]
    assert waited and all(a.headers["Server-Timing"].startswith("cold-start;dur=") for a in waited)
    assert {a.json()["cold_start"]["replica"] for a in waited} <= {cold["replica"] for cold in colds}
    assert of_iris(after, "sm_jobs_submitted_total") - of_iris(before, "sm_jobs_submitted_total") == 20
    assert of_iris(after, "sm_jobs_finished_total", status="SUCCEEDED") == 20
    assert of_iris(after, "sm_queue_depth") == 0 and of_iris(after, "sm_running_jobs") == 0
    for span in ("queue_wait", "service", "total"):
        assert of_iris(after, f"sm_job_{span}_seconds_count") == 20
        assert of_iris(after, f"sm_job_{span}_seconds_bucket", le="+Inf") == 20
    spans = [of_iris(after, f"sm_job_{span}_seconds_sum") for span in ("queue_wait", "service", "total")]
    assert spans[0] > 0 and spans[1] > 0  # jobs waited for the cold start, then ran
    assert abs(spans[0] + spans[1] - spans[2]) < 1e-3 * 20  # each job's wait and service make its total
    eventually(lambda: of_iris(scrape(platform), "sm_replicas") == 0, 60, "the replicas never went back to zero")


MODELS = """
[models.crashing]
command = ["python", "-m", "model.server"]
env = { MODEL_CLASS = "testmodels:CrashingSetup" }
max_replicas = 1
start_timeout = 20

[models.capped]
command = ["python", "-m", "model.server"]
env = { MODEL_CLASS = "testmodels:Sleepy" }
max_queued = 1
"""
KEY, OTHER, TOKEN = "k-metrics", "k-limited", "t-metrics"


def call(platform: Platform, method: str, path: str, key: str = "", **options: Any) -> requests.Response:
    """A request to the gateway, with ``key`` if given."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.request(method, f"{platform.url}{path}", headers=headers, timeout=90, **options)


def test_decisions_failed_starts_webhooks_and_refusals_are_counted_and_the_token_opens_metrics_alone(
        make_platform: Callable[..., Platform]) -> None:
    platform = webhooks(make_platform(idle_timeout=2, models=MODELS), SM_WEBHOOK_RETRY_FOR="2")
    platform.start("gateway", "worker", "autoscaler", env={
        "SM_API_KEYS": f"{digest(KEY)},{digest(OTHER)}", "SM_METRICS_TOKEN": digest(TOKEN), "SM_RATE_LIMIT": "5",
        "SM_AUTH_FAILURES_PER_MINUTE": "3"})
    taken, refused = Receiver().start(), Receiver().start()
    refused.status = 500
    try:
        before = scrape(platform, TOKEN)
        assert call(platform, "GET", "/metrics").status_code == 401
        opened = [call(platform, "GET", path, TOKEN).status_code for path in ("/v1/models", "/v1/events")]
        assert opened == [401, 401] or 429 in opened  # the token opens nothing but /metrics (429: failed too often)
        failures = [call(platform, "GET", "/v1/models").status_code for _ in range(8)]
        limited = [call(platform, "GET", "/v1/models", OTHER).status_code for _ in range(30)]
        assert 429 in failures and 429 in limited  # (8 failures in at most 2 minutes, 30 requests in under 6 s)
        assert call(platform, "POST", "/v1/models/capped/jobs", KEY, params={"priority": "low"},
                    json={}).status_code == 202  # (low, alone: it starts no replica, so it waits)
        assert call(platform, "POST", "/v1/models/capped/jobs", KEY, json={}).status_code == 429
        crashed = call(platform, "POST", "/v1/models/crashing/jobs", KEY, params={"wait": 60}, json={}).json()
        assert crashed["error"]["code"] == "replica_start_failed", crashed
        ran = [call(platform, "POST", "/v1/models/iris/jobs", KEY, params={"wait": 60, "webhook": receiver.url},
                    json={"features": [[5.1, 3.5, 1.4, 0.2]]}).json() for receiver in (taken, refused)]
        assert [job["status"] for job in ran] == ["SUCCEEDED"] * 2, ran

        def settled() -> list[dict[str, Any]]:
            return [call(platform, "GET", f"/v1/jobs/{job['id']}", KEY).json()["webhook"] for job in ran]

        assert wait_until(lambda: [hook["status"] for hook in settled()] == ["delivered", "failed"], 30, interval=1), \
            f"the webhooks were not delivered and given up: {settled()}"  # (polled within the rate limit)
        assert wait_until(lambda: of(scrape(platform, TOKEN), "sm_scaling_decisions_total", decision="scale_down") >
                          of(before, "sm_scaling_decisions_total", decision="scale_down"), 60, interval=1), \
            "iris never scaled down"
        after = scrape(platform, TOKEN)
    finally:
        taken.stop()
        refused.stop()

    def moved(name: str, **labels: str) -> float:
        return of(after, name, **labels) - of(before, name, **labels)

    given_up = settled()[1]
    assert moved("sm_webhook_attempts_total", model="iris", outcome="delivered") == 1
    assert moved("sm_webhook_attempts_total", model="iris", outcome="given_up") == 1
    assert moved("sm_webhook_attempts_total", model="iris", outcome="retry") == given_up["attempts"] - 1 >= 1
    assert moved("sm_replica_start_failures_total", model="crashing") >= 1
    assert moved("sm_events_total", model="crashing", kind="start_failed") >= 1
    assert moved("sm_scaling_decisions_total", model="crashing", decision="scale_up") >= 1
    assert moved("sm_scaling_decisions_total", model="iris", decision="scale_up") >= 1
    assert moved("sm_events_total", model="iris", kind="ready") >= 1
    assert moved("sm_refusals_total", reason="rate_limited") == limited.count(429)
    assert moved("sm_refusals_total", reason="queue_full") == 1
    unauthorized = [*opened, *failures, 401]  # (and the unauthenticated scrape)
    assert moved("sm_refusals_total", reason="unauthorized") == unauthorized.count(401)
    assert moved("sm_refusals_total", reason="too_many_failed_authentications") == unauthorized.count(429)
