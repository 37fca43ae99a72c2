"""Models for the tests: a model with a fixed service time, and one whose setup crashes."""

import os
import time
from typing import Any


class Sleepy:
    """Answers after ``SERVICE_TIME`` seconds (0.2 by default; a payload's "sleep" overrides) with what it got."""

    def setup(self) -> None:
        """Nothing to load."""

    def predict(self, payload: Any) -> dict[str, Any]:
        """Sleep, then echo."""
        seconds = payload.get("sleep") if isinstance(payload, dict) else None
        time.sleep(float(seconds if seconds is not None else os.environ.get("SERVICE_TIME", "0.2")))
        return {"echo": payload, "pid": os.getpid()}


class CrashingSetup:
    """A model whose weights cannot be loaded."""

    def setup(self) -> None:
        """Fail, as a model with a corrupt checkpoint would."""
        raise RuntimeError("cannot load weights: checkpoint.bin is corrupt")

    def predict(self, payload: Any) -> Any:
        """Never reached."""
        raise AssertionError("predict without setup")


class Exclusive:
    """A model that needs a device only one replica can hold (``DEVICE_LOCK``): a second replica fails setup."""

    def setup(self) -> None:
        """Take the device, or fail as a model would on a busy accelerator."""
        import fcntl

        self.device = open(os.environ["DEVICE_LOCK"], "a")  # noqa: SIM115 - held for the replica's life
        try:
            fcntl.flock(self.device, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError("device busy: another replica holds it") from None

    def predict(self, payload: Any) -> dict[str, Any]:
        """Like Sleepy."""
        return Sleepy().predict(payload)


class Environment:
    """Answers with the names of the environment variables the replica got."""

    def setup(self) -> None:
        """Nothing to load."""

    def predict(self, payload: Any) -> dict[str, Any]:
        """The environment's names."""
        return {"names": sorted(os.environ)}


class SlowSetup:
    """A model that takes ``SETUP_SECONDS`` (20) to load, saying how far it got every second."""

    def setup(self) -> None:
        """Load slowly."""
        seconds = int(os.environ.get("SETUP_SECONDS", "20"))
        for second in range(1, seconds + 1):
            time.sleep(1)
            print(f"loading shard {second}/{seconds}", flush=True)

    def predict(self, payload: Any) -> dict[str, Any]:
        """Echo."""
        return {"echo": payload}


class Counting:
    """Like Sleepy, and appends a line per request it runs to the file ``COUNT_FILE`` names (executions counted
    on the model's side)."""

    def setup(self) -> None:
        """Nothing to load."""

    def predict(self, payload: Any) -> dict[str, Any]:
        """Count, then answer as Sleepy does."""
        with open(os.environ["COUNT_FILE"], "a") as counted:
            counted.write(f"{payload.get('mark', '') if isinstance(payload, dict) else ''}\n")
        return Sleepy().predict(payload)


class Streaming:
    """Streams ``{"i": 0}`` … ``{"i": n-1}``, a part every ``every`` seconds (0.02 by default)."""

    def setup(self) -> None:
        """Nothing to load."""

    def predict(self, payload: Any) -> Any:
        """The parts, one by one."""
        for i in range(int(payload.get("n", 50))):
            time.sleep(float(payload.get("every", 0.02)))
            yield {"i": i}
