"""The benchmark's results: medians and ratios, the targets, a markdown table, JSON and PNG plots."""

import json
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

LABELS = {"direct": "direct (a)", "celery": "bare Celery (b)", "naive": "naive Celery forward", "ours": "ours (c)"}


def summarize(hot: dict[str, Any], cold: dict[str, dict[str, list[float]]], scale: dict[str, Any], machine: str,
              options: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Every figure of the run: medians over rounds, overheads, ratios and targets."""
    systems: dict[str, dict[str, float]] = {name: {stat: statistics.median(getattr(r["latency"], stat) for r in rounds)
                      for stat in ("p50", "p90", "p99")}
               | {"throughput": statistics.median(r["throughput"] for r in rounds)}
               for name, rounds in hot["rounds"].items()}
    a, b, naive, c = (systems[n] for n in ("direct", "celery", "naive", "ours"))
    starts: dict[str, dict[str, Any]] = {
        backend: {"bare_s": statistics.median(found["bare"]), "ours_s": statistics.median(found["ours"]),
                  "bare_all_s": found["bare"], "ours_all_s": found["ours"]} for backend, found in cold.items()}
    for start in starts.values():
        start["extra_ms"] = (start["ours_s"] - start["bare_s"]) * 1000
    figures = {"overhead_p50_ms": c["p50"] - a["p50"], "overhead_p99_ms": c["p99"] - a["p99"],
               "throughput_vs_direct": c["throughput"] / a["throughput"],
               "throughput_vs_celery": c["throughput"] / b["throughput"],
               "throughput_vs_naive": c["throughput"] / naive["throughput"]}
    targets: list[tuple[str, str, str, bool | None]] = [
        ("overhead p50 (c - a)", f"{figures['overhead_p50_ms']:.2f} ms", "≤ 3 ms", figures["overhead_p50_ms"] <= 3),
        ("overhead p99 (c - a)", f"{figures['overhead_p99_ms']:.2f} ms", "≤ 10 ms", figures["overhead_p99_ms"] <= 10),
        ("p50 below the naive Celery forward", f"{c['p50']:.2f} vs {naive['p50']:.2f} ms", "c < naive",
         c["p50"] < naive["p50"]),
        ("throughput c / a", f"{figures['throughput_vs_direct']:.0%}", "≥ 50 %",
         figures["throughput_vs_direct"] >= 0.5),
        ("throughput c / naive", f"{figures['throughput_vs_naive']:.2f}x", "> 2x", figures["throughput_vs_naive"] > 2),
        ("throughput c / b", f"{figures['throughput_vs_celery']:.2f}x", "(reported)", None),
    ]
    for backend, start in starts.items():
        targets.append((f"first result from zero - bare create → ready ({backend})", f"{start['extra_ms']:+.0f} ms",
                        "≤ +50 ms", start["extra_ms"] <= 50))
    if scale["first_scale_up_s"] is not None:
        targets.append(("burst → first scale-up decision", f"{scale['first_scale_up_s'] * 1000:.0f} ms", "≤ 500 ms",
                        scale["first_scale_up_s"] <= 0.5))
    return {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine, "options": options,
            "seconds": seconds, "systems": systems, "figures": figures, "cold_start": starts,
            "scale": {k: v for k, v in scale.items() if k != "samples"}, "memory": hot["memory"],
            "targets": [{"target": t, "measured": m, "goal": g, "met": ok} for t, m, g, ok in targets]}


def markdown(results: dict[str, Any]) -> str:
    """The results as markdown tables."""
    s = results["systems"]
    o = results["options"]
    lines = [f"Measured {results['date']} on {results['machine']}; medians of {o['rounds']} interleaved rounds "
             f"({o['requests']} sequential requests, then {o['clients']} client threads for {o['seconds']:g} s); "
             f"Redis appendfsync {o.get('fsync', 'always')}.", "",
             "| | " + " | ".join(LABELS.values()) + " |", "|---|" + "---:|" * len(LABELS)]
    for stat in ("p50", "p90", "p99"):
        lines.append(f"| {stat} latency (ms) | " + " | ".join(f"{s[n][stat]:.2f}" for n in LABELS) + " |")
    lines.append("| throughput (req/s) | " + " | ".join(f"{s[n]['throughput']:.0f}" for n in LABELS) + " |")
    lines.append("| throughput / direct | " + " | ".join(f"{s[n]['throughput'] / s['direct']['throughput']:.0%}"
                                                       for n in LABELS) + " |")
    lines += ["", "| target | measured | goal | met |", "|---|---:|---:|:---:|"]
    for t in results["targets"]:
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['measured']} | {t['goal']} | {met} |")
    lines += ["", "| cold start (median) | bare create → ready | ours: submit → first result | difference |",
              "|---|---:|---:|---:|"]
    for backend, start in results["cold_start"].items():
        lines.append(f"| {backend} | {start['bare_s'] * 1000:.0f} ms | {start['ours_s'] * 1000:.0f} ms | "
                     f"{start['extra_ms']:+.0f} ms |")
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
        samples = sorted(ms for r in hot["rounds"][name] for ms in r["latency"].samples)
        ax.plot(samples, [(i + 1) / len(samples) for i in range(len(samples))], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("latency of one request (ms, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("Sequential request latency")
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
