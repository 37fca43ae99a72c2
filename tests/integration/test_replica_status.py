"""A replica's phase from a real backend: a process replica that exits before it is ready fails its start with
its exit code, and one that is stopped is gone."""

from pathlib import Path

import pytest

from workers.config import ModelConfig
from workers.scaling.backends import GONE, RUNNING, Phase, ProcessBackend
from workers.scaling.readiness import ReadinessProbe
from workers.scaling.spec import ReplicaSpec

pytestmark = pytest.mark.integration


def test_a_process_replica_that_exits_before_it_is_ready_fails_its_start_with_its_exit_code(tmp_path: Path) -> None:
    backend = ProcessBackend(tmp_path, tmp_path / "logs", namespace="status-test")
    model = ModelConfig(name="m", command=["python", "-c", "import sys, time; time.sleep(0.5); sys.exit(3)"])
    launched = backend.start(ReplicaSpec.of(model, "r1"))
    try:
        reason = ReadinessProbe().wait(model, launched.endpoint, lambda: backend.status(launched.handle), 60)
        assert reason == "exited before it was ready (exit code 3)"
        assert backend.status(launched.handle).phase is Phase.EXITED
    finally:
        backend.stop(launched.handle)
    assert backend.status(launched.handle) == GONE


def test_a_running_process_replica_runs_until_it_is_stopped(tmp_path: Path) -> None:
    backend = ProcessBackend(tmp_path, tmp_path / "logs", namespace="status-test")
    model = ModelConfig(name="m", command=["python", "-c", "import time; time.sleep(60)"])
    launched = backend.start(ReplicaSpec.of(model, "r2"))
    try:
        assert backend.status(launched.handle) == RUNNING
    finally:
        backend.stop(launched.handle)
    assert backend.status(launched.handle) == GONE
