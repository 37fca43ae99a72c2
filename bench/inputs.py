"""``python -m bench.inputs``: a worker's work on a job's input between start.lua's reply and the replica's request
(the reply decoded, then the request built, as the runner does), by the input's size and protocol (seconds; no Redis).

Printed per protocol and size: microseconds per job, and the ratio to a 20-byte input's in the same run. An input
parsed and dumped again costs time in proportion to its size; one passed on as the recorded text costs the copy.
Run this file on another tree (``git show REV:bench/inputs.py > /tmp/inputs.py``) to compare.
"""

import json
import statistics
import sys
import time
from typing import Any

from workers.protocols.base import ReplicaProtocol
from workers.protocols.cog import CogProtocol
from workers.protocols.kserve import KServeProtocol
from workers.protocols.native import NativeProtocol
from workers.protocols.runpod import RunPodProtocol
from workers.store import replies
from workers.store.records import Started

SIZES = (20, 1_000, 100_000, 1_000_000)
PROTOCOLS: dict[str, ReplicaProtocol] = {"native": NativeProtocol(), "cog": CogProtocol(), "runpod": RunPodProtocol(),
                                         "kserve": KServeProtocol("m")}


def reply(size: int) -> list[Any]:
    """start.lua's reply for a job whose input holds ``size`` bytes, as redis-py decodes it."""
    fields = {"id": "0" * 32, "model": "m", "status": "RUNNING", "created_at": "1.0", "started_at": "2.0",
              "attempts": "1", "owner": "o", "worker": "w", "input": json.dumps({"x": "a" * size})}
    return ["RUNNING", "r1", "http://10.0.0.2:9000", *(item for pair in fields.items() for item in pair)]


def seconds_per_job(protocol: ReplicaProtocol, found: list[Any], times: int) -> float:
    """The best of 5 runs of ``times`` jobs, per job."""
    runs = []
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(times):
            started = replies.start(found)
            assert isinstance(started, Started)
            protocol.request(started.job.id, started.job.input or "null")  # as the runner does
        runs.append((time.perf_counter() - began) / times)
    return min(runs)


def main() -> int:
    print("| protocol | " + " | ".join(f"{size:,} B: µs (÷ 20 B)" for size in SIZES) + " |")
    print("|---|" + "---:|" * len(SIZES))
    for name, protocol in PROTOCOLS.items():
        cells = []
        small = 0.0
        for size in SIZES:
            per_job = statistics.median(seconds_per_job(protocol, reply(size), max(5, 20_000_000 // (size + 2_000)))
                                        for _ in range(3))
            small = small or per_job
            cells.append(f"{per_job * 1e6:,.1f} ({per_job / small:.1f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
