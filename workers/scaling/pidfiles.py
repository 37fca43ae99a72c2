"""Pid files of process replicas: how a replica process is found again, whatever it does to its title.

A replica may rewrite its command line and environment (``setproctitle``, which gunicorn and Celery use, clears
``/proc/<pid>/environ``), so neither tells which processes are ours. Each replica leads its own process group and
has a pid file ``<dir>/<replica id>.pid`` with its pid, its namespace, its port and its start time; a process is
that replica only while its pid, its start time and its group all match (a reused pid has another start time).
The start time is compared as time since boot: the kernel keeps it so, and psutil's wall-clock start time moves
with every step of the system clock (NTP), which would make every replica a stranger.
"""

import contextlib
import json
import os
import re
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

REPLICA_ID = re.compile(r"[0-9a-f]{12}")  # the ids the autoscaler gives replicas (uuid4 hex, 12 digits)
SUFFIX = ".pid"


def new_replica_id() -> str:
    """A fresh replica id."""
    return uuid.uuid4().hex[:12]


def is_replica_id(text: str) -> bool:
    """Whether ``text`` is an id of the autoscaler's making."""
    return bool(REPLICA_ID.fullmatch(text))


@dataclass(frozen=True)
class PidFile:
    """What a replica's pid file says."""

    replica_id: str
    namespace: str
    pid: int
    created: float  # the process's start time (psutil's create_time), which a reused pid does not share
    port: int
    since_boot: float | None = None  # the same, in seconds since boot (unmoved by clock steps); None: an older file

    def write(self, folder: Path) -> None:
        """Write it whole (a reader never sees half of it), readable by the owner only."""
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".{self.replica_id}{SUFFIX}.tmp"
        temporary.write_text(json.dumps(asdict(self)))
        temporary.chmod(0o600)
        os.replace(temporary, folder / f"{self.replica_id}{SUFFIX}")

    def process(self) -> psutil.Process | None:
        """The replica's process if it still runs (not a zombie), leads its group and started when recorded."""
        try:
            process = psutil.Process(self.pid)
            if not self.started_as(process) or os.getpgid(self.pid) != self.pid:
                return None
            return process if process.status() != psutil.STATUS_ZOMBIE else None
        except (psutil.Error, OSError):
            return None

    def started_as(self, process: psutil.Process) -> bool:
        """Whether ``process`` started when this replica's process did."""
        if self.since_boot is None:
            return abs(process.create_time() - self.created) <= 0.05
        return abs(since_boot(process) - self.since_boot) <= 0.05

    def remove(self, folder: Path) -> None:
        """Delete the pid file (gone already is fine)."""
        (folder / f"{self.replica_id}{SUFFIX}").unlink(missing_ok=True)


def read(path: Path) -> PidFile | None:
    """The pid file at ``path``, or None if it cannot be read or is not a replica's."""
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        found = json.loads(path.read_text())
        booted = found.get("since_boot")
        record = PidFile(str(found["replica_id"]), str(found["namespace"]), int(found["pid"]),
                         float(found["created"]), int(found["port"]), None if booted is None else float(booted))
        if is_replica_id(record.replica_id) and path.name == f"{record.replica_id}{SUFFIX}" and record.pid > 1:
            return record
    return None


def pid_files(folder: Path, namespace: str) -> list[PidFile]:
    """The readable pid files of ``namespace`` in ``folder``."""
    try:
        paths = sorted(folder.glob(f"*{SUFFIX}"))
    except OSError:
        return []
    return [record for path in paths if (record := read(path)) is not None and record.namespace == namespace]


def record_of(pid: int, port: int, replica_id: str, namespace: str) -> PidFile:
    """The pid file of a replica process just started."""
    process = psutil.Process(pid)
    return PidFile(replica_id, namespace, pid, process.create_time(), port, since_boot(process))


def since_boot(process: psutil.Process) -> float:
    """When the process started, in seconds since boot: its wall-clock start less the boot time, which a step of
    the system clock moves alike."""
    return process.create_time() - psutil.boot_time()
