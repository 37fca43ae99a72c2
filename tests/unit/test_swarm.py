"""The swarm backend's reading of Swarm's tasks and nodes (pure: the API's objects as Swarm returns them)."""

from typing import Any

import pytest
from pydantic import ValidationError

from workers.config import Settings
from workers.scaling.backends import RUNNING, Phase, Status
from workers.scaling.swarm import Node, host_of, port_range, task_status

READY = {"n1": Node("h1", "ready", "10.0.0.11")}


def task(state: str, desired: str = "running", node: str = "n1", **status: Any) -> dict[str, Any]:
    """A task of a service, as the API lists it."""
    return {"NodeID": node, "DesiredState": desired, "Status": {"State": state, **status}}


def test_a_task_runs_only_while_it_is_meant_to_and_its_node_is_ready() -> None:
    assert task_status([task("running")], READY) == RUNNING
    assert task_status([task("running")], {"n1": Node("h1", "down", "10.0.0.11")}) == \
        Status(Phase.EXITED, "its node h1 is down")
    assert task_status([task("running", node="n9")], READY) == Status(Phase.EXITED, "its node n9 is gone")
    assert task_status([task("running", desired="shutdown")], {"n1": Node("h1", "down", "10.0.0.11")}) == \
        Status(Phase.EXITED, "its node h1 is down")  # Swarm gave up on it: the node is why
    assert task_status([task("running", desired="shutdown")], READY).phase is Phase.EXITED
    assert task_status([task("running"), task("running")], READY).phase is Phase.EXITED  # Swarm moved it


def test_a_task_on_its_way_is_pending_with_swarms_reason() -> None:
    assert task_status([], READY) == Status(Phase.PENDING, "no task yet")
    assert task_status([task("pending", node="", Err="no suitable node (insufficient resources on 3 nodes)")],
                       READY) == Status(Phase.PENDING, "no suitable node (insufficient resources on 3 nodes)")
    assert task_status([task("preparing", Message="preparing")], READY) == Status(Phase.PENDING, "preparing")


def test_a_task_that_ended_says_how() -> None:
    assert task_status([task("failed", Err="task: non-zero exit (3)", ContainerStatus={"ExitCode": 3})], READY) == \
        Status(Phase.EXITED, "task failed, exit code 3, task: non-zero exit (3)")
    assert task_status([task("rejected", Err="No such image: sha256:abc")], READY) == \
        Status(Phase.EXITED, "task rejected, No such image: sha256:abc")


def test_a_node_as_a_host_shows_its_gpus() -> None:
    node = {"ID": "n3", "Spec": {"Role": "worker", "Availability": "active"},
            "Description": {"Hostname": "gpu-box", "Resources": {
                "NanoCPUs": 8_000_000_000, "MemoryBytes": 2 ** 34,
                "GenericResources": [{"NamedResourceSpec": {"Kind": "gpu", "Value": "GPU-aaa"}},
                                     {"DiscreteResourceSpec": {"Kind": "ssd", "Value": 2}},
                                     {"NamedResourceSpec": {"Kind": "gpu", "Value": "GPU-bbb"}}]}},
            "Status": {"State": "ready", "Addr": "10.0.0.13"}}
    host = host_of(node)
    assert (host.name, host.state, host.address, host.cpus, host.memory, host.gpus, host.role) == \
        ("gpu-box", "ready", "10.0.0.13", 8.0, 2 ** 34, ("GPU-aaa", "GPU-bbb"), "worker")


def test_the_port_range_is_checked() -> None:
    assert port_range(Settings(swarm_ports="20000-20009").swarm_ports) == range(20000, 20010)
    for wrong in ("80-90", "30000-20000", "20000-70000", "1-2-3"):
        with pytest.raises(ValidationError):
            Settings(swarm_ports=wrong)
