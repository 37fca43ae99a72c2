"""``python -m bench.waiters``: 1,000 clients waiting at once (half on ``?wait``, half on a job's stream) on one
gateway process, gevent worker against threads worker, in one run (bounded: a few minutes).

Both gateways (one gunicorn worker process each, each with its worker's default caps of waiting requests) serve the
same Redis and models file. First the submit latency: interleaved rounds of sequential unwaited submits on each,
the p50 ratio gevent ÷ threads per round, the median of the rounds. Then, for each worker in turn, 1,000 clients
wait while no Celery worker runs (so every job stays waiting): half submit with ``?wait``, half submit and then
hold ``GET /v1/jobs/<id>/stream`` until its ``done`` event (``--streams`` sets how many); the gateway worker
process's OS threads and resident memory are sampled at their peak; then a Celery worker and the autoscaler
start, the jobs run on a slow process-backend model, and the answers are counted (200 or ``done`` with the
client's own output; 202, or 429 for a stream, for a request past the caps, answered at once without waiting).
"""

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import requests

from bench.run import Processes
from workers.embedded import start_embedded_redis
from workers.polling import wait_until
from workers.scaling.backends import free_port

ROOT = Path(__file__).resolve().parent.parent
TEST_MODELS = ROOT / "tests" / "integration" / "images"  # testmodels.Sleepy: answers after SERVICE_TIME, echoing
KINDS = ("gevent", "threads")
MODELS = """
[models.slow]
command = ["python", "-m", "model.server"]
concurrency = 16
max_replicas = 1
idle_timeout = 60
max_queued = 100000
env = { MODEL_CLASS = "testmodels:Sleepy", SERVICE_TIME = "0.005" }
"""


class Rig:
    """Redis, the two gateways and, when asked, a Celery worker and the autoscaler."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.redis_url, self.redis = start_embedded_redis(folder / "redis", fsync="everysec")
        (folder / "models.toml").write_text(MODELS)
        self.env = {**os.environ, "REDIS_URL": self.redis_url, "SM_MODELS_FILE": str(folder / "models.toml"),
                    "SM_DATA_DIR": str(folder / "data"), "SM_BACKEND": "process", "SM_NAMESPACE": "bench-waiters",
                    "PYTHONPATH": os.pathsep.join([str(ROOT), str(TEST_MODELS)])}
        self.processes = Processes(folder, self.env)
        self.ports = {kind: free_port() for kind in KINDS}

    def spawn(self, name: str, *argv: str) -> None:
        """Start one of the platform's processes."""
        self.processes.start(name, [sys.executable, "-m", "workers.cli", *argv])

    def start_gateways(self) -> None:
        """Both gateways, one worker process each."""
        for kind, port in self.ports.items():
            self.spawn(kind, "gateway", "--worker", kind, "--workers", "1", "--port", str(port))
        for kind in KINDS:
            if not wait_until(lambda k=kind: self.healthy(k), 30, interval=0.1):  # type: ignore[misc]
                raise RuntimeError(f"the {kind} gateway did not come up; see {self.folder / kind}.log")

    def healthy(self, kind: str) -> bool:
        """Whether the gateway answers."""
        try:
            return requests.get(f"{self.url(kind)}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def url(self, kind: str) -> str:
        """Where a gateway listens."""
        return f"http://127.0.0.1:{self.ports[kind]}"

    def worker_process(self, kind: str) -> psutil.Process:
        """The gunicorn worker process of a gateway (its arbiter's one child)."""
        return psutil.Process(self.processes.pid(kind)).children()[0]

    def stop(self, *names: str) -> None:
        """Stop processes (SIGTERM, then SIGKILL after 20 s)."""
        self.processes.stop(*names)

    def close(self) -> None:
        """Stop everything, Redis last."""
        self.processes.stop()
        self.redis.terminate()
        self.redis.wait(10)


def submit_p50(rig: Rig, kind: str, count: int) -> float:
    """The median latency (ms) of ``count`` sequential unwaited submits on one kept-alive connection."""
    took = []
    with requests.Session() as session:
        for i in range(count):
            began = time.perf_counter()
            answer = session.post(f"{rig.url(kind)}/v1/models/slow/jobs", json={"i": i}, timeout=30)
            took.append((time.perf_counter() - began) * 1000)
            assert answer.status_code == 202, answer.text
    return statistics.median(took)


def queued(rig: Rig, kind: str) -> int:
    """Jobs of the slow model waiting."""
    return int(requests.get(f"{rig.url(kind)}/v1/models/slow", timeout=10).json()["queue_depth"])


def wait_for_job(url: str, i: int) -> tuple[int, Any]:
    """One client: a job waited for; its status and the input its output echoes."""
    try:
        answer = requests.post(f"{url}/v1/models/slow/jobs?wait=150", json={"n": i}, timeout=180)
        return answer.status_code, (answer.json().get("output") or {}).get("echo")
    except requests.RequestException as exc:
        return 0, str(exc)


def stream_job(url: str, i: int) -> tuple[int, Any]:
    """One client: a job submitted, then its stream held until ``done``; 200 and the input its output echoes (429
    if the stream was refused past the caps). A stream that ends without ``done`` (past SM_MAX_WAIT) is opened
    again."""
    try:
        job = requests.post(f"{url}/v1/models/slow/jobs", json={"n": i}, timeout=60).json()
        while True:
            with requests.get(f"{url}/v1/jobs/{job['id']}/stream", stream=True, timeout=180) as answer:
                if answer.status_code != 200:
                    return answer.status_code, None
                event = ""
                for line in answer.iter_lines(decode_unicode=True):
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: ") and event == "done":
                        return 200, (json.loads(line.removeprefix("data: ")).get("output") or {}).get("echo")
    except requests.RequestException as exc:
        return 0, str(exc)


def peak(process: psutil.Process, until: threading.Event, found: dict[str, int]) -> None:
    """Sample the process's threads and resident memory until told to stop; keep the peaks."""
    while not until.wait(0.1):
        try:
            found["threads"] = max(found.get("threads", 0), process.num_threads())
            found["rss"] = max(found.get("rss", 0), process.memory_info().rss)
        except psutil.Error:
            return


def waiters(rig: Rig, kind: str, clients: int, streams: int) -> dict[str, Any]:
    """``clients`` waiting at once on one gateway (``streams`` of them on a stream), then answered: peaks and
    answers."""
    already = queued(rig, kind)
    found: dict[str, int] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=peak, args=(rig.worker_process(kind), stop, found), daemon=True)
    sampler.start()
    began = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        answers = [pool.submit(stream_job if i < streams else wait_for_job, rig.url(kind), i) for i in range(clients)]
        recorded = wait_until(lambda: queued(rig, kind) - already >= clients, 90, interval=0.25)
        waiting = sum(not answer.done() for answer in answers)
        rig.spawn("worker", "worker", "--concurrency", "16")
        rig.spawn("autoscaler", "autoscaler", "--stop-replicas")
        results = [answer.result() for answer in answers]
    stop.set()
    rig.stop("worker", "autoscaler")
    own = sum(status == 200 and echo == {"n": i} for i, (status, echo) in enumerate(results))
    return {"worker": kind, "clients": clients, "streams": streams, "all_recorded": recorded,
            "waiting_at_once": waiting,
            "threads_peak": found.get("threads", 0), "rss_peak_mib": round(found.get("rss", 0) / 2**20, 1),
            "answered_200_own_output": own, "answered_202": sum(status == 202 for status, _ in results),
            "streams_refused_429": sum(status == 429 for status, _ in results),
            "seconds": round(time.monotonic() - began, 1)}


def raise_open_files(needed: int) -> None:
    """Raise the soft limit of open files (clients, their gateway sockets and Redis connections) if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures (JSON, and a line of same-run ratios)."""
    cli = argparse.ArgumentParser(prog="python -m bench.waiters", description=__doc__.split("\n\n")[0])
    cli.add_argument("--clients", type=int, default=1000)
    cli.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the submit latency")
    cli.add_argument("--submits", type=int, default=100, help="sequential submits per gateway and round")
    cli.add_argument("--streams", type=int, default=None, help="how many of the clients hold a job's stream "
                                                                "(default: half)")
    args = cli.parse_args(argv)
    streams = args.clients // 2 if args.streams is None else min(args.streams, args.clients)
    raise_open_files(8 * args.clients + 1024)
    with tempfile.TemporaryDirectory(prefix="bench-waiters-") as folder:
        rig = Rig(Path(folder))
        try:
            rig.start_gateways()
            rounds = []
            for _ in range(args.rounds):
                p50 = {kind: submit_p50(rig, kind, args.submits) for kind in KINDS}
                rounds.append(p50)
            results = [waiters(rig, kind, args.clients, streams) for kind in KINDS]
        finally:
            rig.close()
    ratios = [r["gevent"] / r["threads"] for r in rounds]
    report = {"submit_p50_ms": rounds, "submit_p50_ratio_gevent_over_threads": round(statistics.median(ratios), 3),
              "waiters": results}
    print(json.dumps(report, indent=2))
    gevent, threads = results
    print(f"same run: submit p50 gevent/threads = {report['submit_p50_ratio_gevent_over_threads']:.2f} "
          f"(median of {args.rounds} rounds); {args.clients} waiting clients ({streams} on streams): "
          f"threads {gevent['threads_peak']} vs "
          f"{threads['threads_peak']}, RSS {gevent['rss_peak_mib']} vs {threads['rss_peak_mib']} MiB, answered "
          f"200 with own output {gevent['answered_200_own_output']} vs {threads['answered_200_own_output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
