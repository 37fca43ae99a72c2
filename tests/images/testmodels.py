"""Models for the tests: a model with a fixed service time, and one whose setup crashes."""

import os
import time
from typing import Any


class Sleepy:
    """Answers after ``SERVICE_TIME`` seconds (0.2 by default) with what it was sent."""

    def setup(self) -> None:
        """Nothing to load."""

    def predict(self, payload: Any) -> dict[str, Any]:
        """Sleep, then echo."""
        time.sleep(float(os.environ.get("SERVICE_TIME", "0.2")))
        return {"echo": payload, "pid": os.getpid()}


class CrashingSetup:
    """A model whose weights cannot be loaded."""

    def setup(self) -> None:
        """Fail, as a model with a corrupt checkpoint would."""
        raise RuntimeError("cannot load weights: checkpoint.bin is corrupt")

    def predict(self, payload: Any) -> Any:
        """Never reached."""
        raise AssertionError("predict without setup")
