"""``python -m bench.scrape``: the platform's hot path with a Prometheus-like scraper polling ``GET /metrics``
against none, in one run (bounded: a few minutes).

The platform (gateway, Celery worker, autoscaler, one warm process replica of the example model) runs on its own
Redis, as ``python -m bench`` starts it. Each round measures, for each condition in turn (no scraper, a scrape every
1 s, every 0.2 s; the order rotated from round to round): the p50 of sequential ``?wait`` submits, then the
throughput of concurrent clients, while the condition's scraper polls ``/metrics`` from a thread of its own on a
kept-alive connection. Per round the ratios with ÷ without; the medians of the rounds, and the scrapes' own time.
"""

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import measure
from bench.run import Platform, environment, wait_until
from workers.scaling.backends import free_port

INTERVALS = {"none": None, "1s": 1.0, "0.2s": 0.2}  # the conditions: seconds between scrapes (None: no scraper)


class Scraper:
    """GET ``/metrics`` every ``interval`` seconds while it runs, each scrape's seconds kept."""

    def __init__(self, url: str, interval: float) -> None:
        self.url = url
        self.interval = interval
        self.took: list[float] = []
        self.failed = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.scrape_forever, daemon=True)

    def __enter__(self) -> "Scraper":
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join()

    def scrape_forever(self) -> None:
        """Scrape, then wait out the rest of the interval (as Prometheus keeps its interval, not a gap)."""
        client = measure.Http(self.url, timeout=10)
        while not self.stopping.is_set():
            began = time.perf_counter()
            try:
                status, body = client.request("GET", "/metrics")
                ok = status == 200 and b"sm_jobs_submitted_total" in body
            except OSError:
                ok = False
            took = time.perf_counter() - began
            if ok:
                self.took.append(took)
            else:
                self.failed += 1
            self.stopping.wait(max(0.0, self.interval - took))


def measure_condition(ours: Platform, interval: float | None, args: argparse.Namespace) -> dict[str, Any]:
    """The hot path's p50 and throughput under one condition, and its scrapes."""
    scraper = Scraper(ours.url, interval) if interval is not None else None
    with scraper or contextlib.nullcontext():
        latency = measure.sequential(ours.submit_call("iris"), args.requests)
        rate = measure.throughput(lambda: ours.submit_call("iris"), args.clients, args.seconds)
    found: dict[str, Any] = {"p50_ms": latency.p50, "throughput": rate}
    if scraper is not None:
        found.update(scrapes=len(scraper.took), scrape_failures=scraper.failed,
                     scrape_ms=[round(t * 1000, 2) for t in scraper.took])
    return found


def summarize(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per scraping condition the medians over rounds of the same-round ratios (with ÷ without) of p50 latency and
    throughput, and its scrapes' time (p50 and max, ms)."""
    summary: dict[str, Any] = {}
    for name in INTERVALS:
        if name == "none":
            continue
        scrapes = sorted(t for r in rounds for t in r[name].get("scrape_ms", []))
        summary[name] = {
            "p50_ratio": round(statistics.median(r[name]["p50_ms"] / r["none"]["p50_ms"] for r in rounds), 3),
            "throughput_ratio": round(statistics.median(r[name]["throughput"] / r["none"]["throughput"]
                                                        for r in rounds), 3),
            "scrapes": len(scrapes), "scrape_failures": sum(r[name].get("scrape_failures", 0) for r in rounds),
            "scrape_p50_ms": round(statistics.median(scrapes), 2) if scrapes else None,
            "scrape_max_ms": scrapes[-1] if scrapes else None,
        }
    return summary


def order(round_: int) -> list[str]:
    """The conditions in the order of one round: rotated each round, so none always comes first."""
    names = list(INTERVALS)
    shift = round_ % len(names)
    return names[shift:] + names[:shift]


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the figures (JSON, then one line of same-run ratios)."""
    cli = argparse.ArgumentParser(prog="python -m bench.scrape", description=__doc__.split("\n\n")[0])
    cli.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    cli.add_argument("--requests", type=int, default=200, help="sequential submits per condition and round")
    cli.add_argument("--clients", type=int, default=16, help="concurrent clients for throughput")
    cli.add_argument("--seconds", type=float, default=3.0, help="length of each throughput run")
    args = cli.parse_args(argv)
    began = time.monotonic()
    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="sm-bench-scrape-") as tmp, \
            environment(Path(tmp)) as (processes, _), Platform(processes, "process", free_port()) as ours:
        wait_until(lambda: ours.ready_replicas("iris") == 1, 60, "the warm replica of iris")
        for round_ in range(args.rounds):
            found = {name: measure_condition(ours, INTERVALS[name], args) for name in order(round_)}
            rounds.append(found)
            print(f"  round {round_ + 1}: " + ", ".join(f"{name} p50 {found[name]['p50_ms']:.2f} ms "
                                                        f"{found[name]['throughput']:.0f} req/s"
                                                        for name in INTERVALS), flush=True)
    summary = summarize(rounds)
    print(json.dumps({"rounds": [{name: {k: v for k, v in figures.items() if k != "scrape_ms"}
                                  for name, figures in r.items()} for r in rounds],
                      "summary": summary, "options": vars(args), "seconds": round(time.monotonic() - began)},
                     indent=2))
    print("same run, medians of the rounds' ratios (with scraper ÷ without): " + "; ".join(
        f"every {name}: p50 {s['p50_ratio']:.3f}, throughput {s['throughput_ratio']:.3f}, scrape p50 "
        f"{s['scrape_p50_ms']} ms (max {s['scrape_max_ms']} ms, {s['scrapes']} scrapes)"
        for name, s in summary.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
