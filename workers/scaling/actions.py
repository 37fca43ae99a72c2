"""Blocking actions (a start, a stop, a readiness wait, a scan) run off the autoscaler's loop, at most one at a
time per name (a replica id)."""

import threading
from collections.abc import Callable
from typing import Protocol

from workers.scaling.backends import StartFailed


class Actions(Protocol):
    """Runs actions somewhere."""

    def spawn(self, name: str, action: Callable[[], None]) -> None:
        """Run ``action``."""
        ...


class Threads:
    """Each action on a daemon thread of its own."""

    def spawn(self, name: str, action: Callable[[], None]) -> None:
        """Start ``action`` on a thread."""
        threading.Thread(target=action, name=name, daemon=True).start()


def reason_of(exc: BaseException) -> str:
    """An exception as an event's reason."""
    return str(exc) if isinstance(exc, StartFailed) else f"{type(exc).__name__}: {exc}"


class ActionRunner:
    """Actions by name: a name is busy from ``reserve`` (or ``spawn``) until its action is done."""

    def __init__(self, actions: Actions, failed: Callable[[str, BaseException], None]) -> None:
        self.actions = actions
        self.failed = failed  # told of an action that raised
        self.names: set[str] = set()
        self.lock = threading.Lock()

    def spawn(self, name: str, action: Callable[[], None]) -> None:
        """Run ``action`` unless ``name`` is busy."""
        if self.reserve(name):
            self.run_reserved(name, action)

    def reserve(self, name: str) -> bool:
        """Mark ``name`` busy; False if it was."""
        with self.lock:
            if name in self.names:
                return False
            self.names.add(name)
            return True

    def release(self, name: str) -> None:
        """``name`` is no longer busy."""
        with self.lock:
            self.names.discard(name)

    def run_reserved(self, name: str, action: Callable[[], None]) -> None:
        """Run ``action`` for the reserved ``name``, which is released when it is done."""
        def run() -> None:
            try:
                action()
            except Exception as exc:
                self.failed(name, exc)
            finally:
                self.release(name)

        self.actions.spawn(name, run)

    def busy(self, name: str) -> bool:
        """Whether an action on ``name`` is in flight."""
        with self.lock:
            return name in self.names
