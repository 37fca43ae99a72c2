"""Helpers of the fault-injection suite: load from bounded client threads, and the tally every test prints."""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
import requests

from workers.polling import wait_until
from workers.store import Store, keys
from workers.store.records import JobStatus


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
