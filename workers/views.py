"""What the client commands print for people: the gateway's JSON answers as text (pure: the answer and ``now`` in,
text out)."""

import json
from collections import Counter
from datetime import datetime
from typing import Any

from workers.tables import age, ago, clock, moment, table

FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED")


def status(models: list[dict[str, Any]], hosts: dict[str, Any], now: datetime) -> str:
    """Models, hosts and replicas as three tables (``GET /v1/models`` and ``GET /v1/hosts``)."""
    parts = [models_table(models), hosts_table(hosts, now)]
    replicas = [(model["name"], replica) for model in models for replica in model["replicas"]]
    parts.append(table(["REPLICA", "MODEL", "STATE", "HOST", "IN FLIGHT", "AGE", "REASON"],
                       [[r["id"], name, r["state"], r.get("host"), f"{r['in_flight']}/{r['concurrency']}",
                         age(r["age"]), r.get("reason")] for name, r in replicas])
                 if replicas else "no replicas")
    return "\n\n".join(parts)


def models_table(models: list[dict[str, Any]]) -> str:
    """One line per model: its queue, what runs, its replicas by state, bounds and moving averages."""
    return table(["MODEL", "QUEUED", "PARKED", "RUNNING", "REPLICAS", "DESIRED", "MIN-MAX", "SERVICE TIME",
                  "COLD START"],
                 [[m["name"], m["queue_depth"], m["parked"], m["running"], by_state(m["replicas"]),
                   (m.get("desired") or {}).get("replicas"), bounds(m), average(m["averages"].get("service_time")),
                   average(m["averages"].get("cold_start"))] for m in models])


def bounds(model: dict[str, Any]) -> str:
    """A model's replica bounds in effect: ``0-2``, or ``1-3 (override)`` when an operator set them."""
    source = (model.get("scale") or {}).get("source")
    return f"{model['min_replicas']}-{model['max_replicas']}" + (" (override)" if source == "override" else "")


def by_state(replicas: list[dict[str, Any]]) -> str:
    """How many replicas are in each state: ``2 READY, 1 STARTING`` (``0`` for none)."""
    counts = Counter(replica["state"] for replica in replicas)
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "0"


def average(value: dict[str, Any] | None) -> str:
    """A moving average; ``(seed)`` while nothing was measured yet."""
    if value is None:
        return ""
    return age(value["seconds"]) + (" (seed)" if value["samples"] == 0 else "")


def hosts_table(hosts: dict[str, Any], now: datetime) -> str:
    """The machines replicas may run on, as the leading autoscaler last saw them."""
    if hosts.get("seen_at") is None:
        return "hosts: none seen (no autoscaler saved them in the last 30 s)"
    rows = [[h["name"], h["state"], h["address"], f"{h['cpus']:g}", f"{h['memory'] / 2 ** 30:.1f} GiB",
             ",".join(h["gpus"]), len(h["replicas"]), h.get("role"), h.get("availability")] for h in hosts["hosts"]]
    lines = table(["HOST", "STATE", "ADDRESS", "CPUS", "MEMORY", "GPUS", "REPLICAS", "ROLE", "AVAILABILITY"], rows)
    return f"{lines}\n(hosts seen {ago(hosts['seen_at'], now)})"


def jobs(listed: list[dict[str, Any]], now: datetime) -> str:
    """One line per job (``GET /v1/jobs``)."""
    if not listed:
        return "no jobs"
    return table(["JOB", "MODEL", "STATUS", "CREATED", "RAN", "ATTEMPTS", "REPLICA", "ERROR"],
                 [[j["id"], j["model"], j["status"], ago(j.get("created_at"), now), ran(j), j.get("attempts"),
                   j.get("replica"), failure(j.get("error"))] for j in listed])


def ran(job: dict[str, Any]) -> str:
    """How long a job's run took, or ``running`` while it runs."""
    started, finished = moment(job.get("started_at")), moment(job.get("finished_at"))
    if started and finished:
        return age((finished - started).total_seconds())
    return "running" if started else ""


def failure(error: dict[str, Any] | None) -> str:
    """An error as ``code: message``."""
    return f"{error['code']}: {error['message']}" if error else ""


def job(view: dict[str, Any], now: datetime) -> str:
    """One job, a field a line (``GET /v1/jobs/<id>``)."""
    timings = view.get("timings") or {}
    fields: list[tuple[str, object]] = [
        ("id", view["id"]), ("model", view["model"]), ("status", view["status"]),
        ("created", f"{clock(view.get('created_at'), now)} ({ago(view.get('created_at'), now)})"),
        ("replica", view.get("replica")), ("attempts", view.get("attempts")), ("priority", view.get("priority")),
        ("timings", ", ".join(f"{name.replace('_', ' ')} {age(seconds)}" for name, seconds in timings.items()
                              if seconds is not None)),
        ("waiting", waiting(view)), ("error", failure(view.get("error"))),
        ("cancelled", view.get("cancelled_while") and f"while {view['cancelled_while']}"),
        ("webhook", view.get("webhook") and "{status} ({attempts} attempts) {last_error}".format(**view["webhook"])),
        ("output", None if view.get("output") is None else json.dumps(view["output"], indent=2)),
    ]
    return "\n".join(f"{name:<10}{value}" for name, value in fields if value not in (None, ""))


def waiting(view: dict[str, Any], timed: bool = True) -> str:
    """What a queued job waits for: ``replica_starting for 3.2s (replica r1): <the replica's last line>``."""
    wait = view.get("waiting")
    if not wait:
        return ""
    since = f" for {age(wait['age'])}" if timed else ""
    detail = f" (replica {wait['replica']})" if wait.get("replica") else ""
    stage = f": {wait['stage']}" if wait.get("stage") else ""
    return f"{wait['reason']}{since}{detail}{stage}"


def progress(view: dict[str, Any], timed: bool = True) -> str:
    """A waited-for job's state in one line: ``QUEUED, replica_starting for 2s (replica r1): Booting worker``."""
    text = waiting(view, timed)
    if view["status"] == "RUNNING" and view.get("replica"):
        text = f"on replica {view['replica']}"
    return f"{view['status']}, {text}" if text else view["status"]


def events(listed: list[dict[str, Any]], now: datetime) -> str:
    """One line per event, newest first (``GET /v1/events``)."""
    if not listed:
        return "no events"
    return table(["AT", "AGE", "MODEL", "KIND", "REPLICA", "JOB", "REASON"],
                 [[clock(e["at"], now), ago(e["at"], now), e["model"], e["kind"], e.get("replica"), e.get("job"),
                   e.get("reason")] for e in listed])


def scale(answer: dict[str, Any]) -> str:
    """A model's replica bounds after ``scale``."""
    return (f"{answer['model']}: {answer['min_replicas']}-{answer['max_replicas']} replicas "
            f"({answer['source']}); the autoscaler applies them at its next pass")
