"""Process replicas: a group that outlives its leader (a shell running the model server), a step of the system
clock, a replica starting as the platform shuts down."""

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from workers.config import ModelConfig
from workers.polling import wait_until
from workers.scaling.autoscaler import Autoscaler
from workers.scaling.backends import Launched, ProcessBackend
from workers.scaling.readiness import ReadinessProbe
from workers.scaling.spec import ReplicaSpec
from workers.store import Store

pytestmark = pytest.mark.integration
STUBBORN = ("import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)")


@pytest.fixture
def group_members() -> Iterator[list[psutil.Process]]:
    """Processes to kill after the test, whatever it left running (psutil refuses a pid reused meanwhile)."""
    processes: list[psutil.Process] = []
    yield processes
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()


def shell_replica(tmp_path: Path) -> tuple[ModelConfig, Path]:
    """A model whose command is a shell running a server that ignores SIGTERM (``; true``: the shell waits)."""
    marker = tmp_path / "child.pid"
    script = f"{sys.executable} -c \"{STUBBORN}\" {marker}; true"
    return ModelConfig(name="m", command=["sh", "-c", script], start_timeout=30), marker


def started_shell_replica(backend: ProcessBackend, tmp_path: Path, replica_id: str,
                          group_members: list[psutil.Process]) -> tuple[Launched, int]:
    """Start ``shell_replica`` on ``backend``: where it runs, and its server child's pid (killed after the test)."""
    model, marker = shell_replica(tmp_path)
    launched = backend.start(ReplicaSpec.of(model, replica_id))
    assert wait_until(lambda: marker.exists() and marker.read_text().strip() != "", 20, interval=0.05)
    child = int(marker.read_text())
    group_members.append(psutil.Process(child))
    return launched, child


def gone(pid: int) -> bool:
    """Whether the process no longer runs (a zombie does not)."""
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_review3_stopping_a_replica_stops_its_whole_group(tmp_path: Path, group_members: list[psutil.Process]) -> None:
    """The shell leads the group and exits on SIGTERM; its child ignores it: stop must not leave the child running
    (it holds the replica's port and memory, and nothing would ever find it again)."""
    backend = ProcessBackend(tmp_path, tmp_path / "logs", "rev3", grace=1.0)
    launched, child = started_shell_replica(backend, tmp_path, "0123456789ab", group_members)
    backend.stop(launched.handle)
    assert wait_until(lambda: gone(child), 5, interval=0.05), "the replica's child outlived stop"


def test_review3_a_restarted_autoscaler_stops_a_replicas_whole_group(tmp_path: Path,
                                                                     group_members: list[psutil.Process]) -> None:
    """The same, stopped by a backend that did not start it (the autoscaler restarted): found by its pid file."""
    backend = ProcessBackend(tmp_path, tmp_path / "logs", "rev3", grace=1.0)
    launched, child = started_shell_replica(backend, tmp_path, "0123456789af", group_members)
    group_members.append(psutil.Process(int(launched.handle)))
    ProcessBackend(tmp_path, tmp_path / "logs", "rev3", grace=1.0).stop(launched.handle)
    assert wait_until(lambda: gone(child), 5, interval=0.05), "the replica's child outlived stop"


def test_review3_a_replica_whose_leader_died_has_its_group_stopped(tmp_path: Path,
                                                                   group_members: list[psutil.Process]) -> None:
    """The shell dies (killed) and leaves its child serving in the group: the sweep's look at what runs reaps the
    leader and forgets the replica; what is left of its group must not run on, found by nobody."""
    backend = ProcessBackend(tmp_path, tmp_path / "logs", "rev3", grace=1.0)
    launched, child = started_shell_replica(backend, tmp_path, "0123456789ac", group_members)
    os.kill(int(launched.handle), signal.SIGKILL)
    leader = psutil.Process(int(launched.handle))
    assert wait_until(lambda: leader.status() == psutil.STATUS_ZOMBIE, 5, interval=0.02)  # dead, not reaped yet
    assert "0123456789ac" not in backend.running()  # the sweep's look: the leader is reaped, its record goes
    assert wait_until(lambda: gone(child), 5, interval=0.05), \
        "the replica's child outlived stop once its leader had died"


def test_review3_a_replica_is_still_ours_after_a_step_of_the_system_clock(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """psutil's start time of a process is the boot time plus its time since boot, and the boot time moves with
    every step of the system clock (NTP): a restarted autoscaler must still find, and stop, its replicas."""
    model = ModelConfig(name="m", command=[sys.executable, "-c", "import time; time.sleep(120)"], start_timeout=30)
    backend = ProcessBackend(tmp_path, tmp_path / "logs", "rev3", grace=1.0)
    launched = backend.start(ReplicaSpec.of(model, "0123456789ad"))
    try:
        stepped = psutil.boot_time() + 0.5  # the clock was stepped half a second since the replica started
        monkeypatch.setattr(psutil, "boot_time", lambda: stepped)
        monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: stepped)  # what Process.create_time adds
        restarted = ProcessBackend(tmp_path, tmp_path / "logs", "rev3", grace=1.0)
        assert "0123456789ad" in restarted.running()
        restarted.stop(launched.handle)
        assert not restarted.status(launched.handle).live
    finally:
        backend.stop(launched.handle)


def test_review3_shutting_down_stops_a_replica_whose_start_was_not_recorded_yet(
        tmp_path: Path, store: Store) -> None:
    """``up`` is stopped (Ctrl-C) while a replica starts: its record is STARTING with no handle yet, its process
    runs. Stopping every replica must stop it too (else it outlives ``up``, found by nobody's registry)."""
    model = ModelConfig(name="m", command=[sys.executable, "-c", "import time; time.sleep(120)"], start_timeout=30)
    backend = ProcessBackend(tmp_path, tmp_path / "logs", "rev3", grace=1.0)
    scaler = Autoscaler({"m": model}, store, backend, ReadinessProbe())
    token = store.leadership(30).hold()
    assert token and store.replicas.add(token, "0123456789ae", "m", backend.name)
    launched = backend.start(ReplicaSpec.of(model, "0123456789ae"))  # its launch returned; not recorded yet
    try:
        scaler.stop_all(token)
        assert not backend.status(launched.handle).live, "a replica starting at shutdown outlived it"
    finally:
        backend.stop(launched.handle)
