"""``serverless-model``: run the whole platform locally, or one of its processes; the client commands that talk to
a gateway are in ``workers.client``."""

import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time

import click

from workers import client
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    """Run the whole platform locally, or one of its processes; or watch and steer a running one."""
    log_format, host = settings_of()
    configure(log_format, ctx.invoked_subcommand or "serverless-model", host)


@main.result_callback()
@click.pass_context
def exit_with(ctx: click.Context, code: int | None) -> None:
    """Exit with the status the command returned."""
    ctx.exit(code or 0)


@main.command()
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--flower-port", type=int, default=5555, show_default=True)
def up(port: int, flower_port: int) -> int:
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
        ("gateway", spawn("gateway", [*me, "gateway", "--port", str(port)], env)),
        ("worker", spawn("worker", [*me, "worker", "--task-events"], env)),  # Flower sees even the first job
        ("autoscaler", spawn("autoscaler", [*me, "autoscaler", "--stop-replicas"], env)),
        ("flower", spawn("flower", [*me, "flower", "--port", str(flower_port)], env)),
    ]
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    print(f"gateway  http://127.0.0.1:{port}  (try: curl http://127.0.0.1:{port}/v1/models)")
    print(f"flower   http://127.0.0.1:{flower_port}")
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


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--worker", "worker_class", type=click.Choice(sorted(WAITERS)), default="gevent", show_default=True,
              help="gevent: a waiting request holds no OS thread; threads: 32 threads per process")
@click.option("--connections", type=int, default=2000, show_default=True, help="connections per gevent worker process")
def gateway(host: str, port: int, workers: int, worker_class: str, connections: int) -> int:
    """Serve the REST gateway with gunicorn: gevent workers (a waiting request holds no OS thread), or threads."""
    if worker_class == "gevent":
        worker = ["--worker-class", "gateway.green.GreenWorker", "--worker-connections", str(connections)]
    else:
        worker = ["--worker-class", "gateway.threaded.GatewayWorker", "--threads", "32"]
    if settings_of()[0] == "json":  # gunicorn's lines and the app's, as JSON (gunicorn reads logconfig_dict)
        worker += ["--config", "python:gateway.json_logs"]
    total, per_key = WAITERS[worker_class]
    os.environ.setdefault("SM_MAX_WAITERS", total)  # the caps of waiting requests, unless set
    os.environ.setdefault("SM_MAX_WAITERS_PER_KEY", per_key)
    argv = ["gunicorn", *worker, "--workers", str(workers), "--bind", f"{host}:{port}",
            "--limit-request-line", "8190", "--graceful-timeout", "10",
            *(["--worker-tmp-dir", "/dev/shm"] if os.path.isdir("/dev/shm") else []),  # heartbeat off the disk
            "gateway.app:serve()"]
    os.execvp(sys.executable, [sys.executable, "-m", *argv])


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--concurrency", type=int, default=16, show_default=True)
@click.option("--name", default="worker@%h", show_default=True, help="the Celery node name (unique per host)")
@click.option("--task-events", is_flag=True,
              help="send task events from the first task (else only once Flower turns them on)")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(concurrency: int, name: str, task_events: bool, celery_args: tuple[str, ...]) -> int:
    """Run a Celery worker on every model's queue (CELERY_ARGS: more arguments for celery worker)."""
    settings = Settings()
    queues = ",".join(keys.celery_queue(model) for model in settings.load_models())
    quiet = ["--quiet"] if settings.log_format == "json" else []  # no banner printed beside the JSON lines
    argv = ["celery", "-A", CELERY_APP, *quiet, "worker", "-Q", queues,
            "--concurrency", str(concurrency), "--loglevel", "INFO", "--without-gossip",
            "--without-mingle", "--hostname", name, *(["--task-events"] if task_events else []), *celery_args]
    os.execvp(sys.executable, [sys.executable, "-m", *argv])


@main.command()
@click.option("--stop-replicas", is_flag=True, help="stop every replica on the way out")
def autoscaler(stop_replicas: bool) -> int:
    """Run the scaling loop until SIGTERM; replicas keep serving unless ``--stop-replicas``."""
    from workers.scaling.service import run_autoscaler

    run_autoscaler(Settings(), stop_replicas=stop_replicas)
    return 0


@main.command()
@click.option("--port", type=int, default=5555, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True)
def flower(port: int, address: str) -> int:
    """Run Celery Flower on the platform's broker (basic auth from ``FLOWER_BASIC_AUTH``, if set)."""
    argv = ["celery", "-A", CELERY_APP, "flower", f"--port={port}", f"--address={address}"]
    os.execvp(sys.executable, [sys.executable, "-m", *argv])


@main.command("hash-key")
@click.argument("key")
def hash_key(key: str) -> int:
    """Print the SHA-256 digest of an API key, for SM_API_KEYS."""
    from gateway.auth import digest

    print(digest(key))
    return 0


@main.command("webhook-secret")
def webhook_secret() -> int:
    """Print a new secret to sign webhooks with, for SM_WEBHOOK_SECRET."""
    from gateway.webhooks import new_secret

    print(new_secret())
    return 0


@main.command()
@click.argument("models", nargs=-1)
def build(models: tuple[str, ...]) -> int:
    """Build the models' images from their build folders (never pulls); MODELS: only these."""
    from workers.images import build_images

    return build_images(Settings(), list(models) or None)


for command in client.COMMANDS:
    main.add_command(command)


if __name__ == "__main__":
    main(prog_name="serverless-model")
