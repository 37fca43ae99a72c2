"""``GET /metrics``: the platform as Prometheus sees it, read from Redis at each scrape by one collector, so the
answer is the same whichever gateway process serves it (no per-process counters to merge).

Per model: jobs submitted and finished by status, histograms of queue wait, service time and end to end and of
replicas' cold starts by host (whole and by stage), scaling decisions (scale_up, scale_down), failed replica
starts, webhook delivery attempts by outcome and the event log's other events by kind, each counted where it is
committed (the script or transaction that writes it); its waiting, parked and running jobs, its replicas by host
and state, and its moving averages. Refused requests by reason. Per host whether the leading autoscaler saw it
ready. No job id or key is ever a label.
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


DECISIONS = ("scale_up", "scale_down")  # the events that are scaling decisions
OUTCOMES = ("delivered", "retry", "given_up")  # what a recorded webhook attempt led to
REFUSALS = ("rate_limited", "unauthorized", "too_many_failed_authentications", "queue_full")


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
        for model in self.gateway.models.values():
            snapshot = self.gateway.snapshot(model)
            waiting.add_metric([model.name], snapshot.waiting)
            parked.add_metric([model.name], snapshot.parked)
            running.add_metric([model.name], snapshot.running)
            for (on, state), count in sorted(Counter((r.host, r.state.value) for r in snapshot.replicas).items()):
                replicas.add_metric([model.name, on, state], count)
            for name, moving in sorted(snapshot.averages.items()):
                average.add_metric([model.name, name], moving.seconds)
        yield from self.counters()
        yield from (waiting, parked, running, replicas, average, self.hosts())

    def counters(self) -> Iterator[Metric]:
        """The counters and histograms, per model and of the platform."""
        submitted = CounterMetricFamily("sm_jobs_submitted", "Jobs submitted.", labels=["model"])
        finished = CounterMetricFamily("sm_jobs_finished", "Jobs ended, by final status.", labels=["model", "status"])
        spans = {span: HistogramMetricFamily(f"sm_job_{span}_seconds", text, labels=["model"])
                 for span, text in SPANS.items()}
        decisions = CounterMetricFamily("sm_scaling_decisions", "Scaling decisions of the leading autoscaler.",
                                        labels=["model", "decision"])
        starts = CounterMetricFamily("sm_replica_start_failures", "Replica starts that failed.", labels=["model"])
        webhooks = CounterMetricFamily("sm_webhook_attempts", "Webhook delivery attempts, by what each led to: "
                                       "delivered, retry (failed, tried again later), given_up (failed, the last).",
                                       labels=["model", "outcome"])
        events = CounterMetricFamily("sm_events", "Events of the event log other than scaling decisions, by kind.",
                                     labels=["model", "kind"])
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
            submitted.add_metric([model.name], number(counts, "submitted"))
            for status in fields(counts, "finished:"):
                finished.add_metric([model.name, status], number(counts, f"finished:{status}"))
            for span, family in spans.items():
                family.add_metric([model.name], *histogram(counts, span))
            for decision in DECISIONS:
                decisions.add_metric([model.name, decision], number(counts, f"event:{decision}"))
            starts.add_metric([model.name], number(counts, "start_failed"))
            for outcome in OUTCOMES:
                webhooks.add_metric([model.name, outcome], number(counts, f"webhook:{outcome}"))
            add_events(events, model.name, counts)
        platform = self.gateway.store.platform_counts()
        add_events(events, "", platform)
        refusals = CounterMetricFamily("sm_refusals", "Requests refused, by reason.", labels=["reason"])
        for reason in sorted({*REFUSALS, *fields(platform, "refused:")}):
            refusals.add_metric([reason], number(platform, f"refused:{reason}"))
        yield from (submitted, finished, *spans.values(), stages, whole, decisions, starts, webhooks, events,
                    refusals)

    def hosts(self) -> GaugeMetricFamily:
        """Per host the leading autoscaler saw last: 1 if it was ready, 0 in any other state (down, unknown …)."""
        hosts = GaugeMetricFamily("sm_host_up", "1 if the leading autoscaler last saw the host ready, else 0.",
                                  labels=["host"])
        seen = self.gateway.store.replicas.hosts()
        for host in seen.hosts if seen else ():
            hosts.add_metric([host.name], 1 if host.state == "ready" else 0)
        return hosts


def cold_spans(counts: dict[str, str]) -> list[tuple[str, str]]:
    """The (stage, host) pairs of cold starts counted, ``total`` among the stages (fields
    ``cold_start:{stage}:{host}:{bound}``; a hostname holds no colon)."""
    found = {tuple(field.removeprefix("cold_start:").rpartition(":")[0].split(":", 1))
             for field in counts if field.startswith("cold_start:") and field.count(":") == 3}
    return sorted((stage, host) for stage, host in found)


def fields(counts: dict[str, str], prefix: str) -> list[str]:
    """The names after ``prefix`` of the stored fields that have it, sorted."""
    return sorted(field.removeprefix(prefix) for field in counts if field.startswith(prefix))


def number(counts: dict[str, str], field: str) -> float:
    """A stored count (0 if not counted yet)."""
    return float(counts.get(field, 0))


def add_events(events: CounterMetricFamily, model: str, counts: dict[str, str]) -> None:
    """The events counted in ``counts`` (of ``model``; "": of no model) but the scaling decisions."""
    for kind in fields(counts, "event:"):
        if kind not in DECISIONS:
            events.add_metric([model, kind], number(counts, f"event:{kind}"))


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
