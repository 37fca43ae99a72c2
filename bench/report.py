"""The benchmark's results: medians and ratios, the targets, a markdown table, JSON and PNG plots."""

import json
import statistics
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LABELS = {"direct": "direct (a)", "celery": "bare Celery (b)", "naive": "naive Celery forward", "ours": "ours (c)"}


PROCESSES = ("client", "gateway", "worker", "autoscaler", "flower", "redis")  # CPU per job, in this order


def summarize(hot: dict[str, Any], cold: dict[str, dict[str, list[float]]], scale: dict[str, Any], machine: str,
              options: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Every figure of the run: medians over rounds, the headline ratios (each the median of the rounds' own
    ratios: a round's systems ran within seconds of each other), and the targets."""
    by_fsync = {fsync: mode(rounds) for fsync, rounds in hot["rounds"].items()}
    starts: dict[str, dict[str, Any]] = {
        backend: {"bare_s": statistics.median(found["bare"]), "ours_s": statistics.median(found["ours"]),
                  "bare_all_s": found["bare"], "ours_all_s": found["ours"]} for backend, found in cold.items()}
    for start in starts.values():
        start["extra_ms"] = (start["ours_s"] - start["bare_s"]) * 1000
        start["ratio"] = start["ours_s"] / start["bare_s"]
    targets: list[tuple[str, str, str, bool | None]] = []
    for fsync, found in by_fsync.items():
        h = found["headline"]
        targets += [
            (f"overhead p50 ÷ bare Celery p50 ({fsync})", f"{h['overhead_p50_vs_celery']:.2f}", "≤ 1.0",
             h["overhead_p50_vs_celery"] <= 1.0),
            (f"overhead p99 ÷ bare Celery p99 ({fsync})", f"{h['overhead_p99_vs_celery']:.2f}", "(reported)", None),
            (f"throughput ÷ bare Celery ({fsync})", f"{h['throughput_vs_celery']:.2f}", "≥ 0.8",
             h["throughput_vs_celery"] >= 0.8),
            (f"p50 ÷ naive Celery forward ({fsync})", f"{h['p50_vs_naive']:.2f}", "< 1", h["p50_vs_naive"] < 1),
            (f"throughput ÷ naive Celery forward ({fsync})", f"{h['throughput_vs_naive']:.2f}", "> 1",
             h["throughput_vs_naive"] > 1),
            (f"CPU per job ÷ bare Celery's ({fsync})", f"{h['cpu_vs_celery']:.2f}", "(reported)", None),
        ]
    for backend, start in starts.items():
        targets.append((f"first result from zero ÷ bare create → ready ({backend})", f"{start['ratio']:.3f}",
                        "≤ 1.03", start["ratio"] <= 1.03))
    if scale["first_scale_up_s"] is not None:
        targets.append(("burst → first scale-up decision", f"{scale['first_scale_up_s'] * 1000:.0f} ms", "≤ 500 ms",
                        scale["first_scale_up_s"] <= 0.5))
    return {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine, "options": options,
            "seconds": seconds, "fsync": by_fsync, "cold_start": starts,
            "scale": {k: v for k, v in scale.items() if k != "samples"}, "memory": hot["memory"],
            "targets": [{"target": t, "measured": m, "goal": g, "met": ok} for t, m, g, ok in targets]}


def mode(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One fsync mode's figures: each system's medians over the rounds, and the headline ratios."""
    systems = {name: {stat: statistics.median(getattr(r["latency"], stat) for r in found)
                      for stat in ("p50", "p90", "p99")}
               | {key: statistics.median(r[key] for r in found) for key in ("throughput", "commands", "round_trips")}
               | {"cpu_ms": {process: statistics.median(r["cpu_ms"][process] for r in found)
                             for process in found[0]["cpu_ms"]}}
               | {"cpu_ms_total": statistics.median(sum(r["cpu_ms"].values()) for r in found)}
               for name, found in rounds.items()}
    each = list(zip(*(rounds[name] for name in ("direct", "celery", "naive", "ours")), strict=True))

    def ratio(of: Callable[[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]], float]) -> float:
        return statistics.median(of(*round_) for round_ in each)

    def p(r: dict[str, Any], stat: str) -> float:
        return float(getattr(r["latency"], stat))

    headline = {
        "overhead_p50_vs_celery": ratio(lambda a, b, n, c: (p(c, "p50") - p(a, "p50")) / p(b, "p50")),
        "overhead_p99_vs_celery": ratio(lambda a, b, n, c: (p(c, "p99") - p(a, "p99")) / p(b, "p99")),
        "throughput_vs_celery": ratio(lambda a, b, n, c: c["throughput"] / b["throughput"]),
        "throughput_vs_naive": ratio(lambda a, b, n, c: c["throughput"] / n["throughput"]),
        "throughput_vs_direct": ratio(lambda a, b, n, c: c["throughput"] / a["throughput"]),
        "p50_vs_naive": ratio(lambda a, b, n, c: p(c, "p50") / p(n, "p50")),
        "cpu_vs_celery": ratio(lambda a, b, n, c: sum(c["cpu_ms"].values()) / sum(b["cpu_ms"].values())),
        "overhead_p50_ms": ratio(lambda a, b, n, c: p(c, "p50") - p(a, "p50")),
    }
    return {"systems": systems, "headline": headline}


def markdown(results: dict[str, Any]) -> str:
    """The results as markdown tables."""
    o = results["options"]
    lines = [f"Measured {results['date']} on {results['machine']}; medians of {o['rounds']} interleaved rounds "
             f"({o['requests']} sequential requests, then {o['clients']} client threads for {o['seconds']:g} s), "
             f"the platform as `up` runs it (Flower watching, task events on). Bare Celery shares the platform's "
             f"Redis (append-only, the fsync mode named); the naive forward has its own Redis without "
             f"append-only file. CPU per job: user + system time of each process over the throughput run "
             f"÷ the jobs it did (the client is the benchmark's own process; the replica's work is left out)."]
    for fsync, found in results["fsync"].items():
        s = found["systems"]
        lines += ["", f"appendfsync {fsync}:", "", "| | " + " | ".join(LABELS.values()) + " |",
                  "|---|" + "---:|" * len(LABELS)]
        for stat in ("p50", "p90", "p99"):
            lines.append(f"| {stat} latency (ms) | " + " | ".join(f"{s[n][stat]:.2f}" for n in LABELS) + " |")
        lines.append("| throughput (req/s) | " + " | ".join(f"{s[n]['throughput']:.0f}" for n in LABELS) + " |")
        lines.append("| CPU ms per job | " + " | ".join(f"{s[n]['cpu_ms_total']:.2f}" for n in LABELS) + " |")
        for process in PROCESSES:
            lines.append(f"| … {process} | " + " | ".join(
                f"{s[n]['cpu_ms'][process]:.2f}" if process in s[n]["cpu_ms"] else "" for n in LABELS) + " |")
        lines.append("| Redis commands per job | " + " | ".join(
            "" if n == "direct" else f"{s[n]['commands']:.1f}" for n in LABELS) + " |")
        lines.append("| Redis round trips per job | " + " | ".join(
            "" if n == "direct" else f"{s[n]['round_trips']:.1f}" for n in LABELS) + " |")
    lines += ["", "| target | measured | goal | met |", "|---|---:|---:|:---:|"]
    for t in results["targets"]:
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['measured']} | {t['goal']} | {met} |")
    lines += ["", "| cold start (median) | bare create → ready | ours: submit → first result | ratio |",
              "|---|---:|---:|---:|"]
    for backend, start in results["cold_start"].items():
        lines.append(f"| {backend} | {start['bare_s'] * 1000:.0f} ms | {start['ours_s'] * 1000:.0f} ms | "
                     f"{start['ratio']:.3f} |")
    sc = results["scale"]
    lines += ["", f"Burst of {sc['jobs']} jobs onto a model at zero replicas: {sc['succeeded']} succeeded; "
                  f"first scale-up decision after {fmt_s(sc['first_scale_up_s'])}, first replica ready after "
                  f"{fmt_s(sc['first_ready_s'])}, {sc['replicas_started']} replica(s) ready after "
                  f"{fmt_s(sc['all_ready_s'])}.", "",
              "| process | resident MiB, idle | under load (peak) |", "|---|---:|---:|"]
    memory = results["memory"]
    for name, idle in memory["idle"].items():
        lines.append(f"| {name} | {idle:.0f} | {memory['load'].get(name, 0):.0f} |")
    return "\n".join(lines)


def fmt_s(seconds: float | None) -> str:
    """Seconds for the text, or 'never'."""
    return "never" if seconds is None else f"{seconds:.3f} s"


def write(results: dict[str, Any], hot: dict[str, Any], scale: dict[str, Any], out: Path) -> None:
    """results.json, results.md, latency.png and burst.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results) + "\n")
    plot_latency(hot, out / "latency.png")
    plot_burst(scale, out / "burst.png")


def plot_latency(hot: dict[str, Any], path: Path) -> None:
    """The distribution of sequential latencies of every system (all rounds), as CDFs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, label in LABELS.items():
        samples = sorted(ms for r in next(iter(hot["rounds"].values()))[name] for ms in r["latency"].samples)
        ax.plot(samples, [(i + 1) / len(samples) for i in range(len(samples))], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("latency of one request (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"Sequential request latency (appendfsync {next(iter(hot['rounds']))})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_burst(scale: dict[str, Any], path: Path) -> None:
    """Queue depth, jobs in flight and replicas over time during the burst."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, waiting, running, ready, replicas_any = zip(*scale["samples"], strict=True)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(t, waiting, label="queue depth")
    ax.plot(t, running, label="running")
    ax.set_xlabel("seconds since the burst began")
    ax.set_ylabel("jobs")
    replicas = ax.twinx()
    replicas.step(t, replicas_any, where="post", color="grey", linestyle="--", label="replicas (starting or ready)")
    replicas.step(t, ready, where="post", color="black", label="ready replicas")
    replicas.set_ylabel("ready replicas")
    replicas.set_ylim(0, max(replicas_any) + 1)
    if scale["first_scale_up_s"] is not None:
        ax.axvline(scale["first_scale_up_s"], color="red", linestyle=":", label="first scale-up decision")
    lines = ax.get_legend_handles_labels()
    more = replicas.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right")
    ax.set_title(f"Burst of {scale['jobs']} jobs from zero replicas")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
