"""Measuring: a keep-alive HTTP client, latency percentiles, throughput at a bounded concurrency and what it cost
(CPU per job of each process, Redis commands and round trips per job), and memory."""

import contextlib
import http.client
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import psutil
import redis

Call = Callable[[], None]  # one request; raises if it did not succeed


class Http:
    """One keep-alive connection (each client thread has its own), reopened once if the server closed it."""

    def __init__(self, url: str, timeout: float = 60) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """The status and body of one request."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body, headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class Latency:
    """Percentiles of sequential requests, in milliseconds."""

    p50: float
    p90: float
    p99: float
    samples: list[float]

    @classmethod
    def of(cls, seconds: list[float]) -> "Latency":
        """Percentiles of the measured durations."""
        ms = sorted(s * 1000 for s in seconds)
        cuts = statistics.quantiles(ms, n=100, method="inclusive")
        return cls(p50=cuts[49], p90=cuts[89], p99=cuts[98], samples=ms)


def sequential(call: Call, count: int, warmup: int = 20) -> Latency:
    """Latency of ``count`` requests one after another, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    durations = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        durations.append(time.perf_counter() - started)
    return Latency.of(durations)


def throughput(make_call: Callable[[], Call], clients: int, seconds: float, limit: int = 20_000) -> float:
    """Requests per second of ``clients`` threads each calling back to back for ``seconds`` (at most ``limit``)."""
    calls = [make_call() for _ in range(clients)]
    done = [0] * clients
    errors: list[BaseException] = []
    start = threading.Barrier(clients + 1)
    deadline = 0.0

    def client(i: int) -> None:
        start.wait()
        try:
            while time.monotonic() < deadline and sum(done) < limit:
                calls[i]()
                done[i] += 1
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    began = time.monotonic()
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed; first: {errors[0]!r}")
    return sum(done) / elapsed


@dataclass(frozen=True)
class Load:
    """Throughput, and what each job cost meanwhile."""

    rate: float  # jobs per second
    cpu_ms: dict[str, float]  # CPU milliseconds (user and system) per job, by process tree
    commands: float  # Redis commands per job, those scripts run included (INFO commandstats)
    round_trips: float  # Redis reads of client requests per job (INFO stats: total_reads_processed)


def under_load(make_call: Callable[[], Call], clients: int, seconds: float, trees: dict[str, list[int]],
               client: redis.Redis) -> Load:
    """``throughput``, and the CPU time of each tree and the work of the Redis behind ``client`` over the run,
    divided by the jobs it did: the costs of everything running meanwhile, background work included."""
    cpu, counted = {name: cpu_seconds(pids) for name, pids in trees.items()}, redis_counts(client)
    began = time.monotonic()
    rate = throughput(make_call, clients, seconds)
    jobs = rate * (time.monotonic() - began)
    after = redis_counts(client)
    return Load(rate, {name: 1000 * (cpu_seconds(pids) - cpu[name]) / jobs for name, pids in trees.items()},
                (after[0] - counted[0]) / jobs, (after[1] - counted[1]) / jobs)


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU seconds the processes used so far (nothing for those gone)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def redis_counts(client: redis.Redis) -> tuple[int, int]:
    """The commands Redis ran so far (scripts' included) and the reads of client requests it processed."""
    stats = client.info("commandstats")
    return (sum(int(found["calls"]) for found in stats.values()),
            int(client.info("stats")["total_reads_processed"]))


def rss_mib(pids: list[int]) -> float:
    """Resident memory of the processes together, in MiB (0 for those gone)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            total += psutil.Process(pid).memory_info().rss
    return total / 2**20


def descendants(pid: int) -> list[int]:
    """The process and every process below it."""
    try:
        process = psutil.Process(pid)
        return [pid, *(child.pid for child in process.children(recursive=True))]
    except psutil.Error:
        return []


class MemorySampler:
    """The peak resident memory of named process trees, sampled in the background while it runs."""

    def __init__(self, trees: Callable[[], dict[str, list[int]]], interval: float = 0.25) -> None:
        self.trees = trees
        self.interval = interval
        self.peak: dict[str, float] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.sample_forever, daemon=True)

    def __enter__(self) -> "MemorySampler":
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join()

    def sample_forever(self) -> None:
        """Keep the largest reading of each tree."""
        while not self.stopping.wait(self.interval):
            for name, pids in self.trees().items():
                self.peak[name] = max(self.peak.get(name, 0.0), rss_mib(pids))
