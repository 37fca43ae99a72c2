"""``serverless-model``: run the whole platform locally, or one of its processes, or submit a job."""

import argparse
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import requests

from workers.config import ConfigError, Settings
from workers.logs import configure, settings_of
from workers.store import keys

log = logging.getLogger("serverless-model")
CELERY_APP = "workers.execution.celery_app"


def start_redis(settings: Settings) -> tuple[str, subprocess.Popen[bytes] | None]:
    """Redis for ``up``: REDIS_URL if set; else the bundled Valkey server, with a password made for this run
    (written, with the URL, to ``<data>/redis/url``, readable only by you)."""
    if "REDIS_URL" in os.environ or "SM_REDIS_URL" in os.environ:
        return settings.redis_url, None
    from workers.embedded import start_embedded_redis

    folder = settings.data_dir / "redis"
    url, process = start_embedded_redis(folder, fsync=settings.redis_fsync, password=secrets.token_urlsafe(24),
                                        max_memory=settings.redis_max_memory)
    secret = folder / "url"
    secret.touch(mode=0o600)
    secret.chmod(0o600)
    secret.write_text(url + "\n")
    return url, process


def masked(url: str) -> str:
    """A Redis URL with its password hidden."""
    scheme, found, rest = url.partition("://")
    credentials, at, hosts = rest.rpartition("@")
    if not (found and at and ":" in credentials):
        return url
    return f"{scheme}://{credentials.partition(':')[0]}:***@{hosts}"


def spawn(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start one of the platform's processes in its own session (Ctrl-C reaches only ``up``)."""
    log.info("starting %s: %s", name, " ".join(argv))
    return subprocess.Popen(argv, env=env, start_new_session=True)


def stop_all(children: list[tuple[str, subprocess.Popen[bytes]]], grace: float = 15) -> None:
    """Stop the platform's processes, then Redis last (the autoscaler needs it to remove replicas)."""
    services = [(name, child) for name, child in children if name != "redis"]
    stop_processes(services, grace)
    stop_processes([(name, child) for name, child in children if name == "redis"], grace)


def stop_processes(children: list[tuple[str, subprocess.Popen[bytes]]], grace: float) -> None:
    """SIGTERM the children together, then SIGKILL any still running after ``grace`` seconds."""
    for _, child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + grace
    for name, child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in time; killing it", name)
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def up(args: argparse.Namespace) -> int:
    """Run Redis, the gateway, a worker, the autoscaler and Flower until Ctrl-C."""
    settings = Settings()
    try:
        settings.load_models()  # a models file that says something impossible: nothing starts
    except (ConfigError, OSError) as exc:
        print(f"cannot serve the models: {exc}", file=sys.stderr, flush=True)
        return 1
    try:
        redis_url, redis_process = start_redis(settings)
    except RuntimeError as exc:
        print(f"cannot start the embedded Redis: {exc}", file=sys.stderr, flush=True)
        return 1
    env = {**os.environ, "REDIS_URL": redis_url, "SM_MODELS_FILE": str(settings.models_file.resolve())}
    me = [sys.executable, "-m", "workers.cli"]
    children = [("redis", redis_process)] if redis_process else []
    children += [
        ("gateway", spawn("gateway", [*me, "gateway", "--port", str(args.port)], env)),
        ("worker", spawn("worker", [*me, "worker", "--task-events"], env)),  # Flower sees even the first job
        ("autoscaler", spawn("autoscaler", [*me, "autoscaler", "--stop-replicas"], env)),
        ("flower", spawn("flower", [*me, "flower", "--port", str(args.flower_port)], env)),
    ]
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    print(f"gateway  http://127.0.0.1:{args.port}  (try: curl http://127.0.0.1:{args.port}/v1/models)")
    print(f"flower   http://127.0.0.1:{args.flower_port}")
    print(f"redis    {masked(redis_url)}" + (f" (full URL in {settings.data_dir / 'redis' / 'url'})"
                                                  if redis_process else ""))
    print("Ctrl-C stops everything.", flush=True)
    code = 0
    while not stopping.wait(0.5):
        exited = [name for name, child in children if child.poll() is not None]
        if exited:
            log.error("%s exited; stopping everything", ", ".join(exited))
            code = 1
            break
    stop_all(children)
    return code


WAITERS = {"gevent": ("1000", "250"), "threads": ("24", "16")}  # SM_MAX_WAITERS, SM_MAX_WAITERS_PER_KEY by worker


def gateway(args: argparse.Namespace) -> int:
    """Serve the gateway with gunicorn: gevent workers (a waiting request holds no OS thread), or threads."""
    if args.worker == "gevent":
        worker = ["--worker-class", "gateway.green.GreenWorker", "--worker-connections", str(args.connections)]
    else:
        worker = ["--worker-class", "gateway.threaded.GatewayWorker", "--threads", "32"]
    if settings_of()[0] == "json":  # gunicorn's lines and the app's, as JSON (gunicorn reads logconfig_dict)
        worker += ["--config", "python:gateway.json_logs"]
    total, per_key = WAITERS[args.worker]
    os.environ.setdefault("SM_MAX_WAITERS", total)  # the caps of waiting requests, unless set
    os.environ.setdefault("SM_MAX_WAITERS_PER_KEY", per_key)
    argv = ["gunicorn", *worker, "--workers", str(args.workers), "--bind", f"{args.host}:{args.port}",
            "--limit-request-line", "8190", "--graceful-timeout", "10",
            *(["--worker-tmp-dir", "/dev/shm"] if os.path.isdir("/dev/shm") else []),  # heartbeat off the disk
            "gateway.app:serve()"]
    os.execvp(sys.executable, [sys.executable, "-m", *argv])


def worker(args: argparse.Namespace) -> int:
    """Run a Celery worker on every declared model's queue."""
    settings = Settings()
    queues = ",".join(keys.celery_queue(name) for name in settings.load_models())
    quiet = ["--quiet"] if settings.log_format == "json" else []  # no banner printed beside the JSON lines
    argv = ["celery", "-A", CELERY_APP, *quiet, "worker", "-Q", queues,
            "--concurrency", str(args.concurrency), "--loglevel", "INFO", "--without-gossip",
            "--without-mingle", "--hostname", args.name, *(["--task-events"] if args.task_events else []),
            *args.celery_args]
    os.execvp(sys.executable, [sys.executable, "-m", *argv])


def autoscaler(args: argparse.Namespace) -> int:
    """Run the scaling loop until SIGTERM; replicas keep serving unless ``--stop-replicas``."""
    from workers.scaling.service import run_autoscaler

    run_autoscaler(Settings(), stop_replicas=args.stop_replicas)
    return 0


def flower(args: argparse.Namespace) -> int:
    """Run Celery Flower on the platform's broker (basic auth from ``FLOWER_BASIC_AUTH``, if set)."""
    argv = ["celery", "-A", CELERY_APP, "flower", f"--port={args.port}", f"--address={args.address}"]
    os.execvp(sys.executable, [sys.executable, "-m", *argv])


def submit(args: argparse.Namespace) -> int:
    """Submit a job, wait for it and print it."""
    try:
        payload: Any = json.loads(args.input)
    except json.JSONDecodeError as exc:
        print(f"input is not JSON: {exc}", file=sys.stderr)
        return 2
    url = f"{args.url}/v1/models/{args.model}/jobs"
    response = requests.post(url, json=payload, params={"wait": args.wait}, headers=auth_header(),
                             timeout=args.wait + 10)
    print(json.dumps(response.json(), indent=2))
    return 0 if response.status_code in (200, 202) and response.json().get("status") != "FAILED" else 1


def hash_key(args: argparse.Namespace) -> int:
    """Print the digest to put in SM_API_KEYS for an API key."""
    from gateway.auth import digest

    print(digest(args.key))
    return 0


def webhook_secret(args: argparse.Namespace) -> int:
    """Print a new secret to sign webhooks with, for SM_WEBHOOK_SECRET."""
    from gateway.webhooks import new_secret

    print(new_secret())
    return 0


def build(args: argparse.Namespace) -> int:
    """Build the models' images from their ``build`` folders (never pulls)."""
    from workers.images import build_images

    return build_images(Settings(), args.models or None)


def logs(args: argparse.Namespace) -> int:
    """Print the last lines a replica printed."""
    response = requests.get(f"{args.url}/v1/models/{args.model}/replicas/{args.replica}/logs",
                            params={"tail": args.tail}, headers=auth_header(), timeout=30)
    body = response.json()
    if response.status_code != 200:
        print(f"{response.status_code}: {body.get('error', {}).get('message', body)}", file=sys.stderr)
        return 1
    print("\n".join(body["lines"]))
    return 0


def auth_header() -> dict[str, str]:
    """The API key in ``SM_API_KEY``, if set, as a bearer header."""
    key = os.environ.get("SM_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def parser() -> argparse.ArgumentParser:
    """The command line."""
    cli = argparse.ArgumentParser(prog="serverless-model", description=__doc__)
    sub = cli.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="run everything locally until Ctrl-C")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--flower-port", type=int, default=5555)
    p.set_defaults(func=up)
    p = sub.add_parser("gateway", help="serve the REST gateway (gunicorn)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--worker", choices=sorted(WAITERS), default="gevent",
                   help="gevent: a waiting request holds no OS thread (default); threads: 32 threads per process")
    p.add_argument("--connections", type=int, default=2000, help="connections per gevent worker process")
    p.set_defaults(func=gateway)
    p = sub.add_parser("worker", help="run a Celery worker on every model's queue")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--name", default="worker@%h", help="the Celery node name (unique per host)")
    p.add_argument("--task-events", action="store_true",
                   help="send task events from the first task (else only once Flower turns them on)")
    p.add_argument("celery_args", nargs=argparse.REMAINDER, help="more arguments for celery worker")
    p.set_defaults(func=worker)
    p = sub.add_parser("autoscaler", help="run the scaling loop")
    p.add_argument("--stop-replicas", action="store_true", help="stop every replica on the way out")
    p.set_defaults(func=autoscaler)
    p = sub.add_parser("flower", help="run Celery Flower to watch jobs")
    p.add_argument("--port", type=int, default=5555)
    p.add_argument("--address", default="127.0.0.1")
    p.set_defaults(func=flower)
    p = sub.add_parser("submit", help="submit a job and print its result")
    p.add_argument("model")
    p.add_argument("input", help="the model's input as JSON")
    p.add_argument("--wait", type=float, default=60)
    p.add_argument("--url", default=os.environ.get("SM_GATEWAY_URL", "http://127.0.0.1:8080"))
    p.set_defaults(func=submit)
    p = sub.add_parser("hash-key", help="print the SHA-256 digest of an API key, for SM_API_KEYS")
    p.add_argument("key")
    p.set_defaults(func=hash_key)
    p = sub.add_parser("webhook-secret", help="print a new secret to sign webhooks with, for SM_WEBHOOK_SECRET")
    p.set_defaults(func=webhook_secret)
    p = sub.add_parser("build", help="build the models' images from their build folders (never pulls)")
    p.add_argument("models", nargs="*", help="only these models")
    p.set_defaults(func=build)
    p = sub.add_parser("logs", help="print the last lines a replica printed")
    p.add_argument("model")
    p.add_argument("replica")
    p.add_argument("--tail", type=int, default=100)
    p.add_argument("--url", default=os.environ.get("SM_GATEWAY_URL", "http://127.0.0.1:8080"))
    p.set_defaults(func=logs)
    return cli


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``serverless-model`` command."""
    args = parser().parse_args(argv)
    log_format, host = settings_of()
    configure(log_format, args.command, host)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
