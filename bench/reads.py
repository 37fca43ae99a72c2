"""``python -m bench.reads``: a job read to be shown (``jobs.get``, ``jobs.wait``: HMGET of its viewed fields,
without the input) against reading its whole record (HGETALL), by the size of the input (under a minute).

Each size is one job recorded on a fresh Redis; each round reads it 400 times each way, alternating, and takes the
ratio of the two times (the client's decoding included); printed: the median ratio of 7 rounds per size (below 1:
leaving the input out is faster).
"""

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import redis

from workers.embedded import start_embedded_redis
from workers.job import Job
from workers.store import Store, keys

SIZES = (20, 1_000, 10_000, 100_000, 1_000_000)


def seconds(read: Callable[[], object], times: int = 400) -> float:
    """How long ``times`` reads take."""
    began = time.perf_counter()
    for _ in range(times):
        read()
    return time.perf_counter() - began


def ratio(store: Store, job_id: str) -> float:
    """One round: the time of the store's reads (without the input) ÷ that of the whole record's."""
    key = keys.job(job_id)
    return (seconds(lambda: store.jobs.get(job_id))
            / seconds(lambda: Job.from_hash(cast(dict[str, str], store.client.hgetall(key)))))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="sm-reads-") as tmp:
        url, process = start_embedded_redis(Path(tmp) / "redis", fsync="everysec")
        try:
            store = Store.of(redis.Redis.from_url(url, decode_responses=True), retention=60)
            print("| input bytes | viewed fields ÷ whole record |")
            print("|---:|---:|")
            for size in SIZES:
                job = store.jobs.submit(store.jobs.new("m", {"x": "a" * size}))
                assert isinstance(job, Job)
                ratios = [ratio(store, job.id) for _ in range(7)]
                print(f"| {size:,} | {statistics.median(ratios):.2f} |")
        finally:
            process.terminate()
            process.wait(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
