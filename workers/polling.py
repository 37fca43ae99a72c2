"""The one wait-until loop: production code, the benchmark and the tests all poll through it."""

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], timeout: float, interval: float = 0.05,
               sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> bool:
    """Poll ``condition`` every ``interval`` seconds until it holds (True) or ``timeout`` passes (False)."""
    deadline = clock() + timeout
    while not condition():
        if clock() >= deadline:
            return False
        sleep(interval)
    return True
