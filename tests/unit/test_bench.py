"""The benchmark's report: figures derived from measurements, targets judged, files written."""

from pathlib import Path
from typing import Any

import pytest

from bench import report, scrape
from bench.measure import Latency


def rounds(p50_ms: float, rate: float, cpu: dict[str, float], commands: float = 0.0) -> list[dict[str, Any]]:
    """One round whose latencies have the given median (and p99: twice it)."""
    seconds = [p50_ms / 1000] * 50 + [2 * p50_ms / 1000] * 2
    return [{"latency": Latency.of(seconds), "throughput": rate, "cpu_ms": cpu, "commands": commands,
             "round_trips": commands / 2}]


def test_report_derives_the_headline_ratios_and_targets_and_writes_its_files(tmp_path: Path) -> None:
    def systems(celery_p50: float) -> dict[str, list[dict[str, Any]]]:
        return {"direct": rounds(1.0, 1000, {"client": 0.1}),
                "celery": rounds(celery_p50, 800, {"client": 1.0, "redis": 1.0, "worker": 2.0}, 20),
                "naive": rounds(4.0, 300, {"client": 1.0, "redis": 1.0, "worker": 3.0}, 22),
                "ours": rounds(3.0, 600, {"client": 0.5, "redis": 2.0, "gateway": 2.5, "worker": 1.0}, 60)}

    hot = {"rounds": {"always": systems(2.0), "everysec": systems(4.0)},
           "memory": {"idle": {"gateway": 100.0}, "load": {"gateway": 120.0}}}
    cold = {"process": {"bare": [1.0, 1.1, 0.9], "ours": [1.02, 1.2, 0.95]}}
    scale = {"jobs": 10, "succeeded": 10, "first_scale_up_s": 0.01, "first_ready_s": 1.0, "all_ready_s": 1.2,
             "replicas_started": 1, "samples": [(0.0, 10, 0, 0, 1), (1.0, 5, 4, 1, 1), (2.0, 0, 0, 1, 1)]}
    options = {"rounds": 1, "requests": 52, "clients": 4, "seconds": 1}
    results = report.summarize(hot, cold, scale, "a test machine", options, 1.0)

    always, everysec = (results["fsync"][f]["headline"] for f in ("always", "everysec"))
    assert always["overhead_p50_vs_celery"] == pytest.approx(1.0)  # (3 - 1) ÷ 2
    assert everysec["overhead_p50_vs_celery"] == pytest.approx(0.5)  # (3 - 1) ÷ 4
    assert always["overhead_p99_vs_celery"] == pytest.approx(1.0)
    assert always["throughput_vs_celery"] == pytest.approx(0.75) and always["throughput_vs_naive"] == pytest.approx(2)
    assert always["p50_vs_naive"] == pytest.approx(0.75) and always["cpu_vs_celery"] == pytest.approx(1.5)
    assert results["fsync"]["always"]["systems"]["ours"]["cpu_ms"]["gateway"] == pytest.approx(2.5)
    assert results["cold_start"]["process"]["ratio"] == pytest.approx(1.02)
    met = {t["target"]: t["met"] for t in results["targets"]}
    assert met["overhead p50 ÷ bare Celery p50 (always)"] and met["overhead p50 ÷ bare Celery p50 (everysec)"]
    assert not met["throughput ÷ bare Celery (always)"]  # 0.75 < 0.8
    assert met["p50 ÷ naive Celery forward (always)"] and met["throughput ÷ naive Celery forward (always)"]
    assert met["first result from zero ÷ bare create → ready (process)"]  # 1.02 ≤ 1.03

    report.write(results, hot, scale, tmp_path)
    table = (tmp_path / "results.md").read_text()
    assert "| p50 latency (ms) | 1.00 | 2.00 | 4.00 | 3.00 |" in table and "| … gateway |  |  |  | 2.50 |" in table
    assert "| CPU ms per job | 0.10 | 4.00 | 5.00 | 6.00 |" in table and "appendfsync everysec:" in table
    assert "| Redis commands per job |  | 20.0 | 22.0 | 60.0 |" in table
    for plot in ("latency.png", "burst.png"):
        assert (tmp_path / plot).read_bytes()[:4] == b"\x89PNG"


def test_the_scrape_bench_reports_same_round_ratios_and_the_scrapes_time() -> None:
    def figures(p50: float, rate: float, scrapes: list[float] | None = None) -> dict[str, Any]:
        return {"p50_ms": p50, "throughput": rate, **({"scrape_ms": scrapes, "scrape_failures": 0} if scrapes
                                                      is not None else {})}

    rounds = [{"none": figures(10, 100), "1s": figures(11, 90, [5.0]), "0.2s": figures(12, 80, [4.0, 6.0])},
              {"none": figures(20, 50), "1s": figures(20, 50, [7.0]), "0.2s": figures(30, 40, [8.0, 3.0])},
              {"none": figures(10, 100), "1s": figures(10.5, 100, [6.0]), "0.2s": figures(10, 100, [5.0])}]
    found = scrape.summarize(rounds)
    assert found["1s"]["p50_ratio"] == 1.05 and found["1s"]["throughput_ratio"] == 1.0  # medians of the ratios
    assert found["0.2s"]["p50_ratio"] == 1.2 and found["0.2s"]["throughput_ratio"] == 0.8
    assert (found["0.2s"]["scrapes"], found["0.2s"]["scrape_p50_ms"], found["0.2s"]["scrape_max_ms"]) == (5, 5.0, 8.0)
    assert "none" not in found
    assert [scrape.order(r) for r in range(3)] == [["none", "1s", "0.2s"], ["1s", "0.2s", "none"],
                                                     ["0.2s", "none", "1s"]]
