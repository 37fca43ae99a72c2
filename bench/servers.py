"""``python -m bench.servers``: the same gateway app (``gateway.app:serve()``) under three servers, in one run (about
3 minutes): gunicorn's gevent worker (the default), gunicorn's threads worker, and granian's WSGI interface (in the
bench extra; left out when not installed), each with two worker processes, in front of the same Redis, Celery worker
and warm replica (``python -m bench``'s platform: fsync ``always``, Flower on).

Rounds are interleaved: in each, each server in turn answers sequential submits with ``?wait=`` (p50) and then 16
keep-alive clients for a few seconds (jobs per second, and its process tree's CPU per job). Printed: each server's
medians, and the medians of its rounds' ratios to gevent's in the same round.
"""

import argparse
import functools
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import redis

from bench import measure
from bench.run import Platform, environment, submit_call, wait_until
from bench.run import answers as answering
from workers.scaling.backends import free_port


def main() -> int:
    cli = argparse.ArgumentParser(prog="python -m bench.servers", description=__doc__)
    cli.add_argument("--rounds", type=int, default=5)
    cli.add_argument("--requests", type=int, default=200, help="sequential submits per server and round")
    cli.add_argument("--clients", type=int, default=16)
    cli.add_argument("--seconds", type=float, default=3.0)
    args = cli.parse_args()
    granian = shutil.which("granian") or str(Path(sys.executable).with_name("granian"))
    me = [sys.executable, "-m", "workers.cli", "gateway"]
    with tempfile.TemporaryDirectory(prefix="sm-servers-") as tmp, \
            environment(Path(tmp)) as (processes, redis_url), Platform(processes, "process", free_port()) as ours:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        urls = {"gevent": ours.url}
        port = free_port()
        processes.start("threads", [*me, "--worker", "threads", "--port", str(port)], SM_BACKEND="process")
        urls["threads"] = f"http://127.0.0.1:{port}"
        if Path(granian).exists():
            port = free_port()
            processes.start("granian", [granian, "--interface", "wsgi", "--workers", "2", "--blocking-threads", "32",
                                        "--host", "127.0.0.1", "--port", str(port), "--factory",
                                        "gateway.app:serve"], SM_BACKEND="process", SM_MAX_WAITERS="64",
                            SM_MAX_WAITERS_PER_KEY="32")
            urls["granian"] = f"http://127.0.0.1:{port}"
        else:
            print("granian is not installed (pip install -e '.[bench]'): measured without it", flush=True)
        for url in urls.values():
            wait_until(functools.partial(answering, f"{url}/healthz"), 60, url)
        wait_until(lambda: ours.ready_replicas("iris") == 1, 60, "the warm replica of iris")
        trees = {"gevent": processes.pid(ours.names[0]), "threads": processes.pid("threads"),
                 **({"granian": processes.pid("granian")} if "granian" in urls else {})}
        found: dict[str, dict[str, list[float]]] = {kind: {"p50": [], "rate": [], "cpu": []} for kind in urls}
        for round_ in range(args.rounds):
            for kind, url in urls.items():
                latency = measure.sequential(submit_call(url, "iris"), args.requests)
                pids = {"gateway": measure.descendants(trees[kind])}
                load = measure.under_load(functools.partial(submit_call, url, "iris"), args.clients, args.seconds,
                                          pids, client)
                found[kind]["p50"].append(latency.p50)
                found[kind]["rate"].append(load.rate)
                found[kind]["cpu"].append(load.cpu_ms["gateway"])
                print(f"  round {round_ + 1} {kind:8s} p50 {latency.p50:6.2f} ms  {load.rate:6.0f} jobs/s  "
                      f"gateway {load.cpu_ms['gateway']:5.2f} CPU ms/job", flush=True)
        print("\n| server | p50 ms | ÷ gevent | jobs/s | ÷ gevent | gateway CPU ms/job | ÷ gevent |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for kind, figures in found.items():
            cells = []
            for figure in ("p50", "rate", "cpu"):
                ratios = [mine / theirs for mine, theirs in zip(figures[figure], found["gevent"][figure], strict=True)]
                cells += [f"{statistics.median(figures[figure]):.2f}", f"{statistics.median(ratios):.2f}"]
            print(f"| {kind} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
