"""The swarm backend's reading of Swarm's tasks and nodes (pure: the API's objects as Swarm returns them)."""

import time
from typing import Any

import pytest
from pydantic import ValidationError

from workers.config import Settings
from workers.scaling.backends import RUNNING, Phase, StartFailed, Status
from workers.scaling.swarm import Node, SwarmBackend, host_of, port_range, task_status

READY = {"n1": Node("h1", "ready", "10.0.0.11")}


def task(state: str, desired: str = "running", node: str = "n1", **status: Any) -> dict[str, Any]:
    """A task of a service, as the API lists it."""
    return {"NodeID": node, "DesiredState": desired, "Status": {"State": state, **status}}


def test_a_task_runs_only_while_it_is_meant_to_and_its_node_is_not_down() -> None:
    assert task_status([task("running")], READY) == RUNNING
    for state in ("unknown", "disconnected"):  # a new leading manager: every node unknown until it reports
        assert task_status([task("running")], {"n1": Node("h1", state, "10.0.0.11")}) == RUNNING
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


class FakeAPI:
    """Just enough of docker-py's low-level client: services, and tasks that Swarm refuses to filter by a
    service that is gone."""

    def __init__(self, services: list[dict[str, Any]], tasks: list[dict[str, Any]]) -> None:
        self.listed_services, self.listed_tasks = services, tasks

    def services(self, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.listed_services

    def tasks(self, filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        import docker.errors

        known = {service["ID"] for service in self.listed_services}
        wanted = set((filters or {}).get("service", known))
        if wanted - known:
            raise docker.errors.NotFound("service not found")
        return [task for task in self.listed_tasks if task["ServiceID"] in wanted]


class FakeClient:
    def __init__(self, api: FakeAPI) -> None:
        self.api = api


def test_the_tasks_of_services_are_found_when_one_of_them_is_gone() -> None:
    api = FakeAPI([{"ID": "s1"}], [{"ServiceID": "s1", "ID": "t1"}, {"ServiceID": "s9", "ID": "t9"}])
    backend = SwarmBackend(FakeClient(api), "ns")
    assert [task["ID"] for task in backend.tasks("s1", "s2")] == ["t1"]


def test_a_port_freed_a_moment_ago_or_asked_for_by_a_service_is_not_given_again() -> None:
    api = FakeAPI([{"ID": "s1", "Spec": {"EndpointSpec": {"Ports": [{"PublishedPort": 20001}]}}}], [])
    backend = SwarmBackend(FakeClient(api), "ns", ports=range(20000, 20003))
    backend.freed[20000] = time.monotonic()
    assert {backend.free_port() for _ in range(20)} == {20002}
    backend.freed[20002] = time.monotonic()
    with pytest.raises(StartFailed):
        backend.free_port()
