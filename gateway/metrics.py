"""``GET /metrics``: the platform as Prometheus sees it, read from Redis at each scrape by one collector, so the
answer is the same whichever gateway process serves it (no per-process counters to merge).

Per model: jobs submitted and finished by status (counted by the scripts that commit them), histograms of queue
wait, service time and end to end, and of replicas' cold starts by host, whole and by stage; its waiting, parked
and running jobs, its replicas by host and state, and its moving averages. Per host whether the leading autoscaler
saw it ready. No job id or key is ever a label.
"""

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.service import Gateway
from workers.store.keys import BOUNDS

SPANS = {"queue_wait": "Seconds from submit to start on a replica, of jobs that ended while running.",
         "service": "Seconds from start to end on a replica, of jobs that ended while running.",
         "total": "Seconds from submit to end, of every job."}


class StoreCollector(Collector):
    """Every metric, read from the store when scraped."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        waiting = GaugeMetricFamily("sm_queue_depth", "Jobs waiting (parked ones included).", labels=["model"])
        parked = GaugeMetricFamily("sm_parked_jobs", "Jobs waiting for a free replica slot.", labels=["model"])
        running = GaugeMetricFamily("sm_running_jobs", "Jobs running on a replica.", labels=["model"])
        replicas = GaugeMetricFamily("sm_replicas", "Replicas by host and state.", labels=["model", "host", "state"])
        average = GaugeMetricFamily("sm_average_seconds", "Moving averages: service_time, cold_start.",
                                    labels=["model", "average"])
        submitted = CounterMetricFamily("sm_jobs_submitted", "Jobs submitted.", labels=["model"])
        finished = CounterMetricFamily("sm_jobs_finished", "Jobs ended, by final status.", labels=["model", "status"])
        spans = {span: HistogramMetricFamily(f"sm_job_{span}_seconds", text, labels=["model"])
                 for span, text in SPANS.items()}
        stages = HistogramMetricFamily("sm_cold_start_stage_seconds", "Seconds of each stage of replicas' cold "
                                       "starts: placed, created, process_up, ready, first_result.",
                                       labels=["model", "host", "stage"])
        whole = HistogramMetricFamily("sm_cold_start_seconds", "Seconds of replicas' cold starts, from the record to "
                                      "the first result of the jobs that waited for it (else to ready).",
                                      labels=["model", "host"])
        for model in self.gateway.models.values():
            counts = self.gateway.store.jobs.counts(model.name)
            for stage, on in cold_spans(counts):
                family, labels = (whole, [model.name, on]) if stage == "total" else (stages, [model.name, on, stage])
                family.add_metric(labels, *histogram(counts, f"cold_start:{stage}:{on}"))
            submitted.add_metric([model.name], float(counts.get("submitted", 0)))
            for field, value in sorted(counts.items()):
                if field.startswith("finished:"):
                    finished.add_metric([model.name, field.removeprefix("finished:")], float(value))
            for span, family in spans.items():
                family.add_metric([model.name], *histogram(counts, span))
            snapshot = self.gateway.snapshot(model)
            waiting.add_metric([model.name], snapshot.waiting)
            parked.add_metric([model.name], snapshot.parked)
            running.add_metric([model.name], snapshot.running)
            for (on, state), count in sorted(Counter((r.host, r.state.value) for r in snapshot.replicas).items()):
                replicas.add_metric([model.name, on, state], count)
            for name, moving in sorted(snapshot.averages.items()):
                average.add_metric([model.name, name], moving.seconds)
        hosts = GaugeMetricFamily("sm_host_up", "1 if the leading autoscaler last saw the host ready, else 0.",
                                  labels=["host"])
        seen = self.gateway.store.replicas.hosts()
        for host in seen.hosts if seen else ():
            hosts.add_metric([host.name], 1 if host.state == "ready" else 0)
        yield from (submitted, finished, *spans.values(), stages, whole, waiting, parked, running, replicas, average,
                    hosts)


def cold_spans(counts: dict[str, str]) -> list[tuple[str, str]]:
    """The (stage, host) pairs of cold starts counted, ``total`` among the stages (fields
    ``cold_start:{stage}:{host}:{bound}``; a hostname holds no colon)."""
    found = {tuple(field.removeprefix("cold_start:").rpartition(":")[0].split(":", 1))
             for field in counts if field.startswith("cold_start:") and field.count(":") == 3}
    return sorted((stage, host) for stage, host in found)


def histogram(counts: dict[str, str], span: str) -> tuple[list[tuple[str, float]], float]:
    """A span's cumulative buckets (Prometheus' ``le``) and sum from the stored per-bucket counts."""
    buckets, seen = [], 0
    for bound in (*BOUNDS, "+Inf"):
        seen += int(counts.get(f"{span}:{bound}", 0))  # the field as Lua's tostring wrote the bound
        buckets.append((bound if bound == "+Inf" else repr(float(bound)), float(seen)))
    return buckets, float(counts.get(f"{span}:sum", 0))


def exposition(gateway: Gateway) -> bytes:
    """The metrics in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(gateway))
    return generate_latest(registry)
