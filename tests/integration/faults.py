"""Helpers of the fault-injection suite: load from bounded client threads, the tally every test prints, a census of
replica processes, and a recording of what Redis ran."""

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
import redis
import requests

from workers.job import JobStatus
from workers.polling import wait_until
from workers.store import Store, keys


@dataclass
class Tally:
    """What became of the accepted jobs."""

    submitted: int = 0
    succeeded: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # reason code → count
    lost: list[str] = field(default_factory=list)
    committed_twice: list[str] = field(default_factory=list)

    def line(self, name: str) -> str:
        """The figures on one line."""
        return (f"{name}: submitted={self.submitted} succeeded={self.succeeded} failed={self.failed} "
                f"lost={len(self.lost)} committed_twice={len(self.committed_twice)}")


def tally(client: redis.Redis, job_ids: list[str]) -> Tally:
    """Count outcomes from the job records themselves."""
    store = Store.of(client, 60).jobs
    result = Tally(submitted=len(job_ids))
    for job_id in job_ids:
        job = store.get(job_id)
        if job is None or not job.status.finished:
            result.lost.append(job_id)
            print(f"lost {job_id}: {client.hgetall(keys.job(job_id))}")
            continue
        if job.commits != 1:
            result.committed_twice.append(job_id)
        if job.status is JobStatus.SUCCEEDED:
            result.succeeded += 1
        elif job.error is not None:
            result.failed[job.error.code] = result.failed.get(job.error.code, 0) + 1
    return result


def wait_finished(client: redis.Redis, job_ids: list[str], timeout: float) -> None:
    """Poll until every job finished or ``timeout`` passes (the tally then counts the rest as lost)."""
    store = Store.of(client, 60).jobs
    pending = list(job_ids)

    def all_finished() -> bool:
        pending[:] = [j for j in pending if not ((job := store.get(j)) and job.status.finished)]
        return not pending

    wait_until(all_finished, timeout, interval=0.2)


class Submitter:
    """Submits ``count`` jobs from one thread, retrying refusals (503, connection errors) within ``timeout``."""

    def __init__(self, url: str, count: int, body: Callable[[int], Any], timeout: float = 120) -> None:
        self.url, self.count, self.body, self.timeout = url, count, body, timeout
        self.accepted: list[str] = []
        self.refused = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        for i in range(self.count):
            while time.monotonic() < deadline:
                try:
                    response = requests.post(self.url, json=self.body(i), timeout=10)
                except requests.RequestException:
                    response = None
                if response is not None and response.status_code == 202:
                    self.accepted.append(response.json()["id"])
                    break
                self.refused += 1
                time.sleep(0.2)


def replica_processes(workdir: Path) -> set[int]:
    """The pids of the replica processes running in ``workdir`` now, with a pid file or without one: the process
    group leaders working there that this process did not start (the platform's own processes are its children; a
    replica may clear its environment and its command line, not its working directory)."""
    found = set()
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(process.pid) == process.pid and process.ppid() != os.getpid() and \
                    process.status() != psutil.STATUS_ZOMBIE and Path(process.cwd()) == workdir.resolve():
                found.add(process.pid)
    return found


class Census:
    """Counts, every ``every`` seconds until stopped, a model's replica processes and the registry's records:
    the most processes seen at once, and every sample where two records named one process."""

    def __init__(self, client: redis.Redis, workdir: Path, model: str, every: float = 0.1) -> None:
        self.registry = Store.of(client, 60).replicas
        self.workdir, self.model, self.every = workdir, model, every
        self.most = 0
        self.shared: list[list[str]] = []  # the handles of a sample in which one handle appears twice
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            self.most = max(self.most, len(replica_processes(self.workdir)))
            handles = [replica.handle for replica in self.registry.of(self.model) if replica.handle]
            if len(handles) != len(set(handles)):
                self.shared.append(handles)

    def stop(self) -> None:
        """Stop counting."""
        self.stopping.set()
        self.thread.join(10)


@dataclass(frozen=True)
class Call:
    """A command one client sent, as Redis ran it; a script's call with the commands the script ran."""

    port: str  # the client's port
    command: str  # its name and arguments, space-separated
    inner: tuple[str, ...] = ()  # the commands its script ran, in order


class Recording:
    """Every command the Redis server runs from now until ``stop()`` (MONITOR), each script call with the commands
    it ran (MONITOR shows them right after it: checked with a script of our own)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, decode_responses=True)
        self.monitor = self.client.monitor().__enter__()
        self.marker = f"recording-{uuid.uuid4().hex}"
        self.seen: list[dict[str, Any]] = []
        self.flags: dict[str, list[str]] = {}  # command name → its flags, as Redis tells them
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()
        self.client.eval("return redis.call('EXISTS', KEYS[1])", 1, f"{self.marker}-probe")

    def read(self) -> None:
        while (entry := self.monitor.next_command()) is not None:
            self.seen.append(entry)
            if entry["client_type"] != "lua" and entry["command"] == f"ECHO {self.marker}":
                return

    def stop(self) -> list[Call]:
        """Stop recording: the calls made meanwhile, in the order Redis ran them."""
        self.client.echo(self.marker)
        self.thread.join(30)
        assert not self.thread.is_alive(), "the recording did not see its own end"
        self.monitor.__exit__()
        calls: list[Call] = []
        for entry in self.seen:
            if entry["client_type"] == "lua":
                calls[-1] = replace(calls[-1], inner=(*calls[-1].inner, entry["command"]))
            else:
                calls.append(Call(entry["client_port"], entry["command"]))
        probe = next(call for call in calls if call.command.startswith("EVAL ") and self.marker in call.command)
        assert probe.inner == (f"EXISTS {self.marker}-probe",), f"this Redis shows a script's commands elsewhere: " \
                                                                f"{probe}"
        return calls

    def writes(self, call: Call) -> list[str]:
        """The commands of a call that Redis flags as writes (the call itself, or what its script ran)."""
        return [command for command in (call.command, *call.inner) if self.is_write(command.split(" ", 1)[0])]

    def is_write(self, name: str) -> bool:
        """Whether Redis flags the command as a write."""
        if name.lower() not in self.flags:
            self.flags[name.lower()] = self.client.execute_command("COMMAND", "INFO", name)[name.lower()]["flags"]
        return "write" in self.flags[name.lower()]
