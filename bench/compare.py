"""``python -m bench.compare REV``: the hot path of this tree against the tree of commit REV, in alternating runs.

Each run starts its own Redis, the tree's platform (gateway, worker, autoscaler, one warm replica) and a bare Celery
worker, and measures both systems in interleaved rounds: sequential latency, throughput with 16 clients, CPU per
job of every process that serves the job (from the processes' CPU times) and Redis commands per job (from
``INFO commandstats``, the commands that scripts run included). Figures are printed as ratios against bare Celery
measured in the same run, beside the absolute figures, as medians over every round: one machine's noise moves
both systems of a round alike. REV's tree is a temporary git worktree, removed afterwards; this tree's ``bench``
measures both trees (the platform as ``up`` runs it: Flower watching).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("celery", "ours")
SERVES = {"celery": ("redis", "reference worker"), "ours": ("redis", "gateway", "worker")}


def measure(rounds: int, requests: int, seconds: float, clients: int) -> dict[str, list[dict[str, Any]]]:
    """One run on the tree this module is imported from (``bench`` and ``workers`` of ``PYTHONPATH``)."""
    import redis

    from bench import measure as timing
    from bench import reference
    from bench.run import PAYLOAD, Platform, celery_call, environment, start_reference_worker, wait_until
    from workers.scaling.backends import free_port

    found: dict[str, list[dict[str, Any]]] = {name: [] for name in SYSTEMS}
    with tempfile.TemporaryDirectory(prefix="sm-compare-") as tmp, environment(Path(tmp)) as (processes, url):
        client = redis.Redis.from_url(url, decode_responses=True)
        celery = reference.app_for(url)
        with Platform(processes, "process", free_port()) as ours:
            start_reference_worker(processes, celery)
            wait_until(lambda: ours.ready_replicas("iris") >= 1, 60, "the warm replica of iris")
            pids = {"redis": processes.pid("redis"), "reference worker": processes.pid("reference-worker"),
                    "gateway": processes.pid(ours.names[0]), "worker": processes.pid(ours.names[1])}
            makers: dict[str, Callable[[], timing.Call]] = {
                "celery": celery_call(celery, "bench.echo", PAYLOAD), "ours": lambda: ours.submit_call("iris")}
            for _ in range(rounds):
                for name in SYSTEMS:
                    latency = timing.sequential(makers[name](), requests)
                    trees = {p: timing.descendants(pids[p]) for p in SERVES[name]}
                    load = timing.under_load(makers[name], clients, seconds, trees, client)
                    found[name].append({"p50": latency.p50, "p99": latency.p99, "rate": load.rate,
                                        "cpu": load.cpu_ms, "cpu_ms": sum(load.cpu_ms.values()),
                                        "commands": load.commands})
    return found


def run(tree: Path, args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """One measuring run of ``tree``'s code, in a process of its own."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--measure", "--rounds", str(args.rounds),
            "--requests", str(args.requests), "--seconds", str(args.seconds), "--clients", str(args.clients)]
    done = subprocess.run(argv, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                          capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the run of {tree} failed:\n{done.stderr[-3000:]}")
    result: dict[str, list[dict[str, Any]]] = json.loads(done.stdout.splitlines()[-1])
    return result


def medians(runs: list[dict[str, list[dict[str, Any]]]]) -> dict[str, float]:
    """The medians, over every round of every run, of ours against bare Celery and of ours alone."""
    pairs = [(c, o) for found in runs for c, o in zip(found["celery"], found["ours"], strict=True)]
    figures: dict[str, float] = {}
    for key in ("p50", "p99", "rate", "cpu_ms", "commands"):
        figures[f"{key} ÷ celery"] = statistics.median(o[key] / c[key] for c, o in pairs)
        figures[key] = statistics.median(o[key] for _, o in pairs)
    for process in SERVES["ours"]:
        figures[f"cpu {process}"] = statistics.median(o["cpu"][process] for _, o in pairs)
    figures["jobs per second one Redis core carries"] = 1000 / figures["cpu redis"]  # the ceiling of one Redis
    return figures


def table(trees: dict[str, list[dict[str, list[dict[str, Any]]]]]) -> str:
    """Both trees' medians side by side, and the change."""
    figures = {name: medians(runs) for name, runs in trees.items()}
    old, new = figures.values()
    lines = [f"| figure | {' | '.join(figures)} | change |", "|---|---:|---:|---:|"]
    for key in old:
        lines.append(f"| {key} | {old[key]:.3f} | {new[key]:.3f} | {100 * (new[key] / old[key] - 1):+.1f} % |")
    return "\n".join(lines)


def main() -> None:
    """Alternate runs of REV's tree and this one; print both trees' medians."""
    cli = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    cli.add_argument("rev", nargs="?", help="the commit to compare this tree with")
    cli.add_argument("--runs", type=int, default=3, help="runs of each tree, alternating")
    cli.add_argument("--rounds", type=int, default=3, help="interleaved rounds per run")
    cli.add_argument("--requests", type=int, default=300, help="sequential requests per system and round")
    cli.add_argument("--seconds", type=float, default=3.0, help="length of each throughput measurement")
    cli.add_argument("--clients", type=int, default=16, help="client threads for throughput")
    cli.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # one run, as JSON
    args = cli.parse_args()
    if args.measure:
        print(json.dumps(measure(args.rounds, args.requests, args.seconds, args.clients)))
        return
    if not args.rev:
        cli.error("name the commit to compare with")
    with tempfile.TemporaryDirectory(prefix="sm-compare-tree-") as tmp:
        other = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(other), args.rev], check=True,
                       capture_output=True)
        shutil.rmtree(other / "bench")  # both trees are measured by this tree's benchmark
        shutil.copytree(ROOT / "bench", other / "bench", ignore=shutil.ignore_patterns("results", "__pycache__"))
        try:
            trees: dict[str, list[dict[str, list[dict[str, Any]]]]] = {args.rev: [], "this tree": []}
            for i in range(args.runs):
                for name, tree in ((args.rev, other), ("this tree", ROOT)):
                    trees[name].append(run(tree, args))
                    print(f"run {i + 1} of {name} done", flush=True)
            print(table(trees))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], check=False,
                           capture_output=True)


if __name__ == "__main__":
    main()
