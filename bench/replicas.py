"""``python -m bench.replicas``: what a job's start and finish cost in Redis with 1 READY replica of its model
against 50 (bounded: well under a minute).

A job's start takes a slot on the READY replica with the most free slots and its finish gives the slot back and
sends the next parked job: if either looked at every replica of the model, its cost would grow with the replica
count. The replicas are records only (READY, one slot each): the scripts never call a replica, so no process is
needed to measure them. Each round, for each replica count in turn (the order alternating), it records the replicas
and a batch of jobs on a fresh Redis database, then starts and finishes the jobs one after another, and reads from
``INFO commandstats`` the Redis commands and the microseconds Redis spent per job in those scripts (their inner
commands included). Printed: the medians of the rounds, and the ratio 50 ÷ 1 (1.0: no growth).
"""

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import redis

from workers.embedded import start_embedded_redis
from workers.job import Job, JobStatus, Outcome
from workers.store import Store
from workers.store.records import Started

COUNTS = (1, 50)
OK = Outcome(JobStatus.SUCCEEDED, output='{"y": 1}', service_time=0.001)


def script_cost(client: redis.Redis) -> tuple[int, float]:
    """The commands Redis ran so far (scripts' inner commands included) and the microseconds its scripts took."""
    stats = client.info("commandstats")
    calls = sum(int(found["calls"]) for found in stats.values())
    usec = sum(float(found["usec"]) for name, found in stats.items() if name in ("cmdstat_evalsha", "cmdstat_eval"))
    return calls, usec


def one_round(client: redis.Redis, replicas: int, jobs: int) -> dict[str, float]:
    """Per job: Redis commands and script microseconds of its start and finish, with ``replicas`` READY replicas."""
    client.flushdb()
    store = Store.of(client, retention=60)
    token = store.leadership(30).hold() or ""
    for n in range(replicas):
        rid = f"r{n}"
        assert store.replicas.add(token, rid, "m", "fake")
        assert store.replicas.launched(token, rid, f"http://127.0.0.1/{rid}", rid)
        assert store.replicas.ready(token, rid, concurrency=1) is not None
    submitted = [store.jobs.submit(store.jobs.new("m", {"x": n})) for n in range(jobs)]
    client.config_resetstat()
    before = script_cost(client)
    for job in submitted:
        assert isinstance(job, Job)
        started = store.jobs.start(job.id, "t", lease=5, worker="w", fail_on_start_failure=True)
        assert isinstance(started, Started), started
        assert store.jobs.finish(job.id, "t", OK) == "OK"
    after = script_cost(client)
    return {"commands": (after[0] - before[0]) / jobs, "script_us": (after[1] - before[1]) / jobs}


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__.splitlines()[0])
    cli.add_argument("--rounds", type=int, default=5, help="rounds, each measuring every replica count")
    cli.add_argument("--jobs", type=int, default=500, help="jobs started and finished per count and round")
    cli.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = cli.parse_args(argv)
    found: dict[int, list[dict[str, float]]] = {count: [] for count in COUNTS}
    with tempfile.TemporaryDirectory(prefix="sm-replicas-") as tmp:
        url, process = start_embedded_redis(Path(tmp) / "redis", fsync="everysec")
        try:
            client = redis.Redis.from_url(url, decode_responses=True)
            for n in range(args.rounds):
                for count in COUNTS if n % 2 == 0 else reversed(COUNTS):
                    found[count].append(one_round(client, count, args.jobs))
        finally:
            process.terminate()
            process.wait(20)
    medians: dict[str, Any] = {str(count): {figure: statistics.median(r[figure] for r in rounds)
                                             for figure in ("commands", "script_us")}
                               for count, rounds in found.items()}
    few, many = medians[str(COUNTS[0])], medians[str(COUNTS[-1])]
    medians["ratio"] = {figure: many[figure] / few[figure] for figure in few}
    if args.json:
        print(json.dumps(medians, indent=2))
        return 0
    print(f"| per job (start + finish) | {COUNTS[0]} replica | {COUNTS[-1]} replicas | {COUNTS[-1]} ÷ {COUNTS[0]} |")
    print("|---|---:|---:|---:|")
    for figure, label in (("commands", "Redis commands"), ("script_us", "script µs in Redis")):
        print(f"| {label} | {few[figure]:.1f} | {many[figure]:.1f} | {medians['ratio'][figure]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
