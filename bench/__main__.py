"""``python -m bench``: measure the platform beside its references and write the table, JSON and plots."""

import argparse
import os
import platform as host
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench import measure, reference, report
from bench.run import (
    BARE,
    CONCURRENCY,
    PAYLOAD,
    ROOT,
    Platform,
    Processes,
    answers,
    bare_start,
    burst,
    celery_call,
    direct_call,
    environment,
    from_zero,
    start_reference_worker,
    wait_until,
)
from workers.config import Settings
from workers.embedded import start_embedded_redis
from workers.images import build_images
from workers.scaling.backends import DockerBackend, ProcessBackend, ReplicaBackend, free_port

SYSTEMS = ("direct", "celery", "naive", "ours")
PLATFORM = ("gateway", "worker", "autoscaler", "flower")  # its processes (a replica's work is the model's)
FSYNCS = ("always", "everysec")  # Redis appendfsync of the platform's and bare Celery's Redis, in turn each round


def hot_path(processes: Processes, ours: Platform, args: argparse.Namespace) -> dict[str, Any]:
    """Latency, throughput and the costs per job of every system, in interleaved rounds under each fsync mode of
    the platform's Redis (bare Celery shares it; the naive forward has its own Redis, without append-only file, as
    a team writing it would run it); every round's figures."""
    port = free_port()
    processes.start("direct-replica", [sys.executable, "-m", "model.server"], PORT=str(port),
                    CONCURRENCY=str(CONCURRENCY))
    direct_url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(f"{direct_url}/ok"), 60, "the direct replica")
    durable_url = processes.env["REDIS_URL"]
    plain_url, plain_redis = start_embedded_redis(processes.workdir / "plain-redis")
    processes.started["plain-redis"] = plain_redis
    durable, plain = (redis.Redis.from_url(url, decode_responses=True) for url in (durable_url, plain_url))
    plain.config_set("appendonly", "no")
    celery, naive = reference.app_for(durable_url), reference.app_for(plain_url)
    start_reference_worker(processes, celery)
    start_reference_worker(processes, naive, "naive-worker")
    wait_until(lambda: ours.ready_replicas("iris") == 1, 60, "the warm replica of iris")
    makers: dict[str, Callable[[], measure.Call]] = {
        "direct": lambda: direct_call(direct_url),
        "celery": celery_call(celery, "bench.echo", PAYLOAD),
        "naive": celery_call(naive, "bench.forward", f"{direct_url}/", PAYLOAD),
        "ours": lambda: ours.submit_call("iris"),
    }
    pid = processes.pid
    platform = {name: found for name, found in trees(processes, ours).items() if name in PLATFORM}
    serving = {"direct": {}, "celery": {"redis": [pid("redis")], "worker": [pid("reference-worker")]},
               "naive": {"redis": [pid("plain-redis")], "worker": [pid("naive-worker")]},
               "ours": {"redis": [pid("redis")], **platform}}
    serving = {name: {"client": [os.getpid()], **trees_of} for name, trees_of in serving.items()}  # this process
    redis_of = {"direct": durable, "celery": durable, "naive": plain, "ours": durable}
    idle = memory(processes, ours)
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {f: {name: [] for name in SYSTEMS} for f in FSYNCS}
    with measure.MemorySampler(lambda: trees(processes, ours)) as sampler:
        for round_ in range(args.rounds):
            for fsync in FSYNCS:
                durable.config_set("appendfsync", fsync)
                for name in SYSTEMS:
                    latency = measure.sequential(makers[name](), args.requests)
                    load = measure.under_load(makers[name], args.clients, args.seconds, serving[name],
                                              redis_of[name])
                    rounds[fsync][name].append({"latency": latency, "throughput": load.rate, "cpu_ms": load.cpu_ms,
                                                "commands": load.commands, "round_trips": load.round_trips})
                    print(f"  round {round_ + 1} {fsync:8s} {name:7s} p50 {latency.p50:6.2f} ms  "
                          f"p99 {latency.p99:6.2f} ms  {load.rate:7.0f} req/s  "
                          f"{sum(load.cpu_ms.values()):5.2f} CPU ms/job  {load.commands:5.1f} Redis commands/job",
                          flush=True)
    durable.config_set("appendfsync", args.fsync)
    return {"rounds": rounds, "memory": {"idle": idle, "load": sampler.peak}}


def trees(processes: Processes, ours: Platform) -> dict[str, list[int]]:
    """The process trees whose memory is reported."""
    replica_pids = ours.replica_pids()
    return {"redis": [processes.pid("redis")], "direct replica": measure.descendants(processes.pid("direct-replica")),
            "reference worker": measure.descendants(processes.pid("reference-worker")), "replicas": replica_pids,
            **ours.trees(replica_pids)}


def memory(processes: Processes, ours: Platform) -> dict[str, float]:
    """Resident MiB of every process tree now."""
    return {name: measure.rss_mib(pids) for name, pids in trees(processes, ours).items()}


def cold_starts(backend: ReplicaBackend, ours: Platform, rounds: int) -> dict[str, list[float]]:
    """The backend's bare create → ready of a replica against our first result from zero, alternating."""
    model = Settings(models_file=ours.processes.workdir / "models.toml").load_models()["iris-cold"]
    found: dict[str, list[float]] = {"bare": [], "ours": []}
    for round_ in range(rounds):
        wait_until(lambda: not ours.model(model.name)["replicas"], 60, "the platform at zero", interval=0.1)
        time.sleep(0.5)  # the last replica's exit is over: both starts find the machine as quiet
        found["bare"].append(bare_start(backend, model))
        found["ours"].append(from_zero(ours, model.name))
        print(f"  {ours.backend} cold start {round_ + 1}: bare {found['bare'][-1]:.3f} s, "
              f"ours {found['ours'][-1]:.3f} s", flush=True)
    return found


def docker_cold_starts(processes: Processes, rounds: int) -> dict[str, list[float]] | None:
    """The same on the Docker backend; None without an engine."""
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:
        print(f"  no Docker engine ({exc}); Docker cold starts skipped", flush=True)
        return None
    if build_model_image() != 0:
        raise RuntimeError("building the model image failed")
    with Platform(processes, "docker", free_port()) as ours:
        return cold_starts(DockerBackend(docker.from_env(), "host", BARE), ours, rounds)


def build_model_image() -> int:
    """Build the example model's image from ``model/`` (from cache when unchanged)."""
    return build_images(Settings(models_file=ROOT / "models.toml"), ["iris"])


def machine() -> str:
    """What the figures were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), host.machine())
    return f"{os.cpu_count()} cores ({cpu}), Python {host.python_version()}, {host.system()} {host.release()}"


def main() -> None:
    """Run every measurement and write the results."""
    cli = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    cli.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the hot path")
    cli.add_argument("--requests", type=int, default=300, help="sequential requests per system and round")
    cli.add_argument("--clients", type=int, default=16, help="concurrent client threads for throughput")
    cli.add_argument("--seconds", type=float, default=3.0, help="length of each throughput run")
    cli.add_argument("--cold-rounds", type=int, default=3)
    cli.add_argument("--burst", type=int, default=1200, help="jobs in the scale-reaction burst")
    cli.add_argument("--no-docker", action="store_true", help="skip the Docker cold starts")
    cli.add_argument("--fsync", choices=FSYNCS, default="always",
                     help="Redis appendfsync outside the hot path, which measures both (always: the embedded "
                          "default, loses no acknowledged write)")
    cli.add_argument("--out", type=Path, default=Path("bench/results"))
    args = cli.parse_args()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sm-bench-") as tmp, \
            environment(Path(tmp), args.fsync) as (processes, redis_url):
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        with Platform(processes, "process", free_port()) as ours:
            print("hot path (sequential latency, then throughput):", flush=True)
            hot = hot_path(processes, ours, args)
            print("cold starts:", flush=True)
            backend = ProcessBackend(ROOT, Path(tmp) / "data" / "logs", BARE)
            cold = {"process": cold_starts(backend, ours, args.cold_rounds)}
            print("scale reaction:", flush=True)
            scale = burst(ours, client, args.burst)
            print(f"  {scale['succeeded']}/{scale['jobs']} succeeded; first scale-up "
                  f"{scale['first_scale_up_s']:.3f} s, first ready {scale['first_ready_s']:.3f} s", flush=True)
        if not args.no_docker:
            print("docker cold starts:", flush=True)
            docker_cold = docker_cold_starts(processes, args.cold_rounds)
            if docker_cold:
                cold["docker"] = docker_cold
    options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    results = report.summarize(hot, cold, scale, machine(), options, time.monotonic() - began)
    report.write(results, hot, scale, args.out)
    print(report.markdown(results))
    print(f"written to {args.out}/ after {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
