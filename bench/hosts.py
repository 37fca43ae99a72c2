"""``python -m bench.hosts``: throughput with 1, 2 and 3 worker hosts on a swarm, beside one host as today.

It builds the many-hosts rig of the tests (three network-namespace hosts with their own engines, in one swarm;
root needed) and measures, in one run and in alternating rounds:

- **reference**: a bare Celery worker calling nothing (``.delay().get()`` of an echo task), the floor;
- **today**: the platform on one host (process backend: gateway, worker, autoscaler and a warm replica here);
- **N hosts**: the platform on the swarm, three warm replicas (one per node), Celery workers inside the first N
  hosts (each preferring its own host's replica), the gateway and autoscaler here.

The hosts share this machine's cores, so more hosts cannot mean more throughput here: what the figures show is
what each job costs (CPU of the whole machine per job, Redis commands and Redis CPU per job) and whether spreading
the workers over hosts costs more per job. The jobs a second one Redis core carries follow from Redis's CPU per
job. Figures are medians over the rounds, and throughput is also given as a ratio against the reference.
"""

import argparse
import functools
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import redis

from bench import measure as timing
from bench import reference
from bench.run import (
    PAYLOAD,
    Platform,
    Processes,
    answers,
    celery_call,
    environment,
    start_reference_worker,
    wait_until,
)
from workers.embedded import start_embedded_redis
from workers.scaling.backends import free_port

IMAGE = "serverless-model/iris:latest"
SWARM_MODELS = f"""
[models.iris]
image = "{IMAGE}"
concurrency = 8
min_replicas = 3
max_replicas = 3
idle_timeout = 600
cpus = 0.2
memory = "512m"
"""


def machine_cpu() -> float:
    """Seconds of CPU the whole machine has spent, all cores, all processes."""
    times = psutil.cpu_times()
    return float(times.user + times.system + getattr(times, "nice", 0.0) + getattr(times, "softirq", 0.0)
                 + getattr(times, "irq", 0.0))


def redis_figures(client: redis.Redis) -> tuple[int, float]:
    """Commands Redis ran so far (scripts' commands included) and its CPU seconds."""
    stats = client.info("commandstats")
    cpu = client.info("cpu")
    return sum(int(stat["calls"]) for stat in stats.values()), float(cpu["used_cpu_user"] + cpu["used_cpu_sys"])


def one(make_call: Callable[[], timing.Call], client: redis.Redis, clients: int, seconds: float) -> dict[str, float]:
    """Throughput of ``clients`` callers, with the machine's and Redis's cost per job."""
    commands, redis_cpu = redis_figures(client)
    cpu, began = machine_cpu(), time.monotonic()
    rate = timing.throughput(make_call, clients, seconds)
    jobs = rate * (time.monotonic() - began)
    commands_after, redis_cpu_after = redis_figures(client)
    return {"rate": rate, "cpu_ms": 1000 * (machine_cpu() - cpu) / jobs,
            "commands": (commands_after - commands) / jobs, "redis_cpu_ms": 1000 * (redis_cpu_after - redis_cpu) / jobs}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hosts", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0, help="of each throughput measurement")
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.integration.swarm_rig import SwarmRig, missing

    if why := missing():
        sys.exit(f"cannot build the hosts: {why}")
    found: dict[str, list[dict[str, float]]] = {}
    rig = SwarmRig(Path("/tmp/smb-rig"), prefix="smb", net="10.90.0")
    with tempfile.TemporaryDirectory(prefix="sm-hosts-") as tmp, environment(Path(tmp)) as (processes, url):
        work = Path(tmp)
        try:
            rig.up(images=[IMAGE])
            swarm_url, swarm_redis = start_embedded_redis(work / "swarm-redis", address=rig.gateway,
                                                          password=secrets.token_hex(16))
            processes.started["swarm-redis"] = swarm_redis
            celery = reference.app_for(url)
            start_reference_worker(processes, celery)
            client = redis.Redis.from_url(url, decode_responses=True)
            swarm_client = redis.Redis.from_url(swarm_url, decode_responses=True)
            (work / "swarm.toml").write_text(SWARM_MODELS)
            swarm_env = {"REDIS_URL": swarm_url, "SM_MODELS_FILE": str(work / "swarm.toml"), "SM_BACKEND": "swarm",
                         "DOCKER_HOST": rig.socket(1), "SM_NAMESPACE": "bench-hosts"}
            me = [sys.executable, "-m", "workers.cli"]
            port = free_port()
            processes.start("swarm-gateway", [*me, "gateway", "--port", str(port)], **swarm_env)
            processes.start("swarm-autoscaler", [*me, "autoscaler"], **swarm_env)
            swarm = Platform(processes, "swarm", port)
            wait_until(lambda: answers(f"{swarm.url}/healthz"), 60, "the swarm's gateway", interval=0.2)
            wait_until(lambda: swarm.ready_replicas("iris") == 3, 120, "three replicas on the swarm", interval=0.2)
            with Platform(processes, "process", free_port()) as today:
                wait_until(lambda: today.ready_replicas("iris") >= 1, 60, "the warm replica of iris")
                for _ in range(args.rounds):
                    found.setdefault("reference", []).append(
                        one(celery_call(celery, "bench.echo", PAYLOAD), client, args.clients, args.seconds))
                    found.setdefault("today (1 host)", []).append(
                        one(lambda: today.submit_call("iris"), client, args.clients, args.seconds))
                    for hosts in (1, 2, 3):
                        workers = [start_worker(rig, processes, host, swarm_env, work) for host in range(1, hosts + 1)]
                        wait_until(functools.partial(workers_at_least, swarm_url, hosts), 60, "the workers",
                                   interval=0.5)
                        found.setdefault(f"swarm, {hosts} worker host(s)", []).append(
                            one(lambda: swarm.submit_call("iris"), swarm_client, args.clients, args.seconds))
                        processes.stop(*workers)
        finally:
            for service in (rig.engine(1).services.list() if rig.answers(1) else []):
                service.remove()
            rig.down()
    print(table(found, args))


def start_worker(rig: Any, processes: Processes, host: int, env: dict[str, str], work: Path) -> str:
    """A Celery worker inside ``host``, telling its host's name; its process name."""
    name = f"worker-h{host}"
    processes.started[name] = rig.spawn(
        host, [sys.executable, "-m", "workers.cli", "worker", "--concurrency", "16", "--name", f"{name}@%h"],
        {**processes.env, **env, "SM_HOST": rig.name(host)}, work / f"{name}.log")
    return name


def workers_at_least(url: str, count: int) -> bool:
    """Whether ``count`` Celery workers answer a ping on the broker at ``url``."""
    from workers.config import Settings
    from workers.execution.celery_app import create_celery

    return len(create_celery(Settings(redis_url=url)).control.ping(timeout=1.0) or []) >= count


def table(found: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> str:
    """The medians, as a table."""
    base = statistics.median(run["rate"] for run in found["reference"])
    lines = [f"{args.rounds} round(s) of {args.seconds:g} s with {args.clients} clients on {os.cpu_count()} cores",
             "| system | jobs/s | ÷ reference | machine CPU ms/job | Redis cmds/job | Redis CPU ms/job | "
             "jobs/s per Redis core |", "|---|---|---|---|---|---|---|"]
    for name, runs in found.items():
        figure = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        ceiling = 1000 / figure["redis_cpu_ms"] if figure["redis_cpu_ms"] > 0 else float("inf")
        lines.append(f"| {name} | {figure['rate']:.0f} | {figure['rate'] / base:.3f} | {figure['cpu_ms']:.2f} | "
                     f"{figure['commands']:.1f} | {figure['redis_cpu_ms']:.2f} | {ceiling:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
