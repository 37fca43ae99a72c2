"""``python -m bench.reads``: how long a job read to be shown (``jobs.get``; ``jobs.wait`` reads the same) takes
by the size of the job's input, against a job whose input is 20 bytes (under a minute).

Reads that show a job leave its input out, so their time should not grow with it; with the whole record read
(HGETALL: this project before, measured with this file on that tree) it grew with the input. Each size is one job
recorded on a fresh Redis; each of 7 rounds reads it and the 20-byte one 400 times each, alternating, and takes
the ratio of the two times (the client's decoding included). Printed: the median ratio per size (1.0: no growth).
"""

import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

from workers.embedded import start_embedded_redis
from workers.job import Job
from workers.store import Store

SIZES = (1_000, 10_000, 100_000, 1_000_000)
SMALL = 20


def seconds(store: Store, job_id: str, times: int = 400) -> float:
    """How long ``times`` reads of the job take."""
    began = time.perf_counter()
    for _ in range(times):
        store.jobs.get(job_id)
    return time.perf_counter() - began


def recorded(store: Store, size: int) -> str:
    """A job whose input holds ``size`` bytes; its id."""
    job = store.jobs.submit(store.jobs.new("m", {"x": "a" * size}))
    assert isinstance(job, Job)
    return job.id


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="sm-reads-") as tmp:
        url, process = start_embedded_redis(Path(tmp) / "redis", fsync="everysec")
        try:
            store = Store.of(redis.Redis.from_url(url, decode_responses=True), retention=60)
            small = recorded(store, SMALL)
            print(f"| input bytes | a read's time ÷ one of a {SMALL}-byte input's |")
            print("|---:|---:|")
            for size in SIZES:
                large = recorded(store, size)
                ratios = [seconds(store, large) / seconds(store, small) for _ in range(7)]
                print(f"| {size:,} | {statistics.median(ratios):.2f} |")
        finally:
            process.terminate()
            process.wait(20)
    return 0


if __name__ == "__main__":
    sys.exit(main())
