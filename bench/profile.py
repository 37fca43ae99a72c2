"""``python -m bench.profile``: where each of the platform's processes spends its time under load (about a minute;
needs py-spy, in the bench extra, and the right to trace the processes: root, or ptrace allowed).

The platform runs as ``python -m bench`` runs it (``up``'s processes, Flower on, Redis fsync ``always``, one warm
process replica of the example model); 16 keep-alive clients submit with ``?wait=`` for ``--seconds`` while py-spy
samples every process of the gateway, the worker, the autoscaler and Flower for the same seconds: the thread
holding the GIL (the Python work; a thread waiting on a socket or a lock holds none). Printed per process: its CPU
ms per job, the share of its samples whose innermost Python frame is in each package (the C code a frame calls is
its frame's), and its busiest functions.
"""

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench import measure
from bench.run import CONCURRENCY, Platform, environment, wait_until
from workers.scaling.backends import free_port

STARTUP = ("(click/", "(<frozen runpy>", "<module> (", "(celery/bin/", "main (celery/__main__")  # a main's start


def package(frame: str) -> str:
    """The package of a py-spy frame ``function (path:line)``, its path relative to ``sys.path``: its top
    package or module, or ``stdlib``."""
    top = frame.rsplit(" (", 1)[-1].split("/", 1)[0].split(":", 1)[0].removesuffix(".py")
    return "stdlib" if top in sys.stdlib_module_names or top.startswith("<") else top


@dataclass
class Samples:
    """A process tree's samples: by innermost frame, and by every frame they pass through (once per sample)."""

    leaves: collections.Counter[str] = field(default_factory=collections.Counter)
    through: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, raw: Path) -> None:
        """py-spy's raw output (collapsed stacks, outermost frame first, then the count)."""
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")[1:]  # the first is the thread
            if frames:
                self.leaves[frames[-1]] += int(count)
                for frame in set(frames):
                    self.through[frame] += int(count)


def report(name: str, cpu_ms: float, samples: Samples, top: int) -> None:
    """One process tree's figures: packages and functions by their own samples, then the functions most samples
    pass through (those under nearly all left out), which say what a stage costs with what it calls."""
    total = sum(samples.leaves.values()) or 1
    by_package: collections.Counter[str] = collections.Counter()
    for frame, count in samples.leaves.items():
        by_package[package(frame)] += count
    shares = ", ".join(f"{pkg} {100 * n / total:.0f} %" for pkg, n in by_package.most_common(8))
    print(f"\n## {name}: {cpu_ms:.2f} CPU ms per job, {total} samples holding the GIL\nby package: {shares}")
    print("own samples:")
    for frame, count in samples.leaves.most_common(top):
        print(f"  {100 * count / total:5.1f} %  {frame[:150]}")
    print("samples through:")
    inclusive = [(frame, count) for frame, count in samples.through.most_common()
                 if count < 0.9 * total and not any(mark in frame for mark in STARTUP)]
    for frame, count in inclusive[:2 * top]:
        print(f"  {100 * count / total:5.1f} %  {frame[:150]}")


def main() -> int:
    cli = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    cli.add_argument("--seconds", type=float, default=20.0, help="length of the load and of the sampling")
    cli.add_argument("--clients", type=int, default=16)
    cli.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    cli.add_argument("--top", type=int, default=12, help="functions printed per process")
    args = cli.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory(prefix="sm-profile-") as tmp, \
            environment(Path(tmp)) as (processes, redis_url), \
            Platform(processes, "process", free_port()) as ours:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        wait_until(lambda: ours.ready_replicas("iris") == 1, 60, "the warm replica of iris")
        measure.throughput(lambda: ours.submit_call("iris"), args.clients, 2.0)  # warm every path
        found = ours.trees(ours.replica_pids())
        spies = {(name, pid): subprocess.Popen(
                     [spy, "record", "--pid", str(pid), "--duration", str(round(args.seconds)), "--rate",
                      str(args.rate), "--gil", "--nonblocking", "--format", "raw", "-o", f"{tmp}/{pid}.txt"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for name, pids in found.items() for pid in pids}
        load = measure.under_load(lambda: ours.submit_call("iris"), args.clients, args.seconds, found, client)
        for process in spies.values():
            process.wait(60)
        print(f"# {load.rate:.0f} jobs/s with {args.clients} clients (replica concurrency {CONCURRENCY}), "
              f"{load.commands:.0f} Redis commands per job, {load.round_trips:.0f} round trips; "
              f"py-spy at {args.rate} Hz adds its own CPU")
        for name in found:
            samples = Samples()
            for owner, pid in spies:
                if owner == name and Path(f"{tmp}/{pid}.txt").exists():
                    samples.add(Path(f"{tmp}/{pid}.txt"))
            report(name, load.cpu_ms[name], samples, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
