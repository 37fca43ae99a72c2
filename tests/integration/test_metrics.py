"""``GET /metrics`` scraped during a burst from zero on real parts: the text parses with Prometheus' own parser,
the gauges see the replicas come and go, the counters and histograms account for every job, and the cold starts'
stages add up to the whole."""

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.platform import Platform, eventually
from tests.integration.test_pipeline import flower_rows, submit

pytestmark = pytest.mark.integration
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(platform: Platform) -> Samples:
    """Every sample by name and labels."""
    answer = requests.get(f"{platform.url}/metrics", timeout=10)
    assert answer.status_code == 200, answer.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def of_iris(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the model's samples of ``name`` whose labels include ``labels``."""
    return sum(value for (found, pairs), value in samples.items() if found == name
               and ("model", "iris") in pairs and set(labels.items()) <= set(pairs))


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
