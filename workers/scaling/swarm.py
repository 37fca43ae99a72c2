"""The ``swarm`` backend: replicas as Docker Swarm services, placed by Swarm across the nodes of a swarm.

The manager is ``DOCKER_HOST`` as docker-py reads it (a local socket, ``tcp://`` with TLS, or ``ssh://``). Swarm
does what it does well: node membership and failure detection, reservations (a node is never oversubscribed),
placement constraints, GPUs as generic resources. The autoscaler keeps the rest in its own hands:

- **one service per replica** (one task, restart condition ``none``): the autoscaler chooses which replica stops
  (the idlest) and replaces a failed one itself; a service is never scaled or updated.
- **host networking** with a host-mode port in the service's endpoint spec, so Swarm never puts two replicas on
  one port of a node; the endpoint is the node's address and that port (no ingress, no virtual IPs).
- **routing only to a task that runs, is meant to run, and sits on a Ready node**: a node whose engine died keeps
  its containers answering, so its replicas leave routing as soon as the manager sees the node down.
- **images by ID** (nothing is pulled: ``serverless-model build`` loads them onto every node), unless
  ``SM_SWARM_PULL`` lets nodes pull the image by name from the registry it names.
"""

import contextlib
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from workers.scaling import pidfiles
from workers.scaling.backends import (
    GONE,
    LABEL,
    NAMESPACE_LABEL,
    REPLICA_ENV,
    REPLICA_LABEL,
    RUNNING,
    STOP_GRACE,
    Launched,
    Phase,
    StartFailed,
    Status,
    last_lines,
)
from workers.scaling.spec import ReplicaSpec
from workers.store.records import Host

PORT_LABEL = "serverless-model.port"
PLACEMENT = 10.0  # seconds a new replica may wait for Swarm to give it a node
FREED_FOR = 60.0  # seconds a stopped replica's port is not given to another
LOGS_WITHIN = 5.0  # seconds a read of a replica's last lines may take
WAITING = ("new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting")  # task states


@dataclass(frozen=True)
class Node:
    """What a replica needs to know of its node."""

    hostname: str
    state: str  # "ready", "down", "unknown", "disconnected"
    address: str

    @classmethod
    def of(cls, node: dict[str, Any]) -> "Node":
        """From the Swarm API's node object."""
        status = node.get("Status") or {}
        return cls(hostname=(node.get("Description") or {}).get("Hostname", node.get("ID", "")),
                   state=status.get("State", "unknown"), address=status.get("Addr", ""))


def task_status(tasks: list[dict[str, Any]], nodes: dict[str, Node]) -> Status:
    """A replica's status from its service's tasks: RUNNING only while its one task runs, is meant to run, and its
    node is not down; PENDING while Swarm places and starts it (with Swarm's reason); else EXITED with the reason.
    A node ``unknown`` or ``disconnected`` keeps its tasks (every node is unknown for a moment after a manager
    restarts or a new one leads): only Swarm's verdict ``down``, or a node gone from the swarm, ends them."""
    if not tasks:
        return Status(Phase.PENDING, "no task yet")
    if len(tasks) > 1:  # restart condition none: a second task means Swarm moved it, and its endpoint is stale
        return Status(Phase.EXITED, "Swarm replaced its task")
    task = tasks[0]
    status = task.get("Status") or {}
    state, error, node_id = status.get("State", ""), status.get("Err", ""), task.get("NodeID", "")
    node = nodes.get(node_id)
    if node_id and state in (*WAITING, "running") and (node is None or node.state == "down"):
        return Status(Phase.EXITED, f"its node {node.hostname if node else node_id} is "
                                    f"{node.state if node else 'gone'}")  # Swarm may not have noticed it yet
    if task.get("DesiredState") != "running":
        return Status(Phase.EXITED, f"stopped by Swarm (task {state}" + (f": {error})" if error else ")"))
    if state in WAITING:
        return Status(Phase.PENDING, error or status.get("Message", state))
    if state == "running":
        return RUNNING
    code = (status.get("ContainerStatus") or {}).get("ExitCode")
    why = [f"task {state}"] + ([f"exit code {code}"] if code else []) + ([error] if error else [])
    return Status(Phase.EXITED, ", ".join(why))


def node_id(task: dict[str, Any]) -> str:
    """The node a task was given ("" before it has one)."""
    return str(task.get("NodeID", ""))


def port_range(text: str) -> range:
    """``"20000-29999"`` (checked by the settings) as a range of ports."""
    low, high = (int(part) for part in text.split("-"))
    return range(low, high + 1)


class SwarmBackend:
    """Replicas as one-task Swarm services, found again by their labels."""

    name = "swarm"

    def __init__(self, client: Any, namespace: str = "default", pull: bool = False,
                 ports: range = range(20000, 30000), placement: float = PLACEMENT, grace: float = STOP_GRACE) -> None:
        self.client = client  # a docker.DockerClient of a swarm manager
        self.namespace = namespace
        self.pull = pull  # nodes pull the image by name; else it is given by its ID on the manager's engine
        self.ports = ports
        self.placement = placement
        self.grace = grace
        self.freed: dict[int, float] = {}  # ports of replicas stopped lately → when (monotonic)

    def start(self, spec: ReplicaSpec) -> Launched:
        """Create the replica's service and wait until Swarm gives it a node; a replica no node can take (no
        resources, no node matching its constraints) is a failed start with Swarm's reason."""
        import docker.errors
        import docker.types
        import docker.utils

        if isinstance(spec.gpus, tuple):
            raise StartFailed("the swarm backend takes a count of GPUs (gpus = N): Swarm chooses the devices")
        begun = time.monotonic()
        image = self.image(spec.image)
        port = self.free_port()
        labels = {LABEL: spec.model, REPLICA_LABEL: spec.replica_id, NAMESPACE_LABEL: self.namespace,
                  PORT_LABEL: str(port)}
        mounts = [docker.types.Mount("/tmp", None, type="tmpfs", tmpfs_size=64 * 2 ** 20)]
        mounts += [docker.types.Mount(target, source, type="bind", read_only=True)
                   for source, target in (volume.split(":", 1) for volume in spec.volumes)]
        if spec.resources.shm_size:
            mounts.append(docker.types.Mount("/dev/shm", None, type="tmpfs",
                                             tmpfs_size=docker.utils.parse_bytes(spec.resources.shm_size)))
        memory = docker.utils.parse_bytes(spec.resources.memory)
        cpus = int(spec.resources.cpus * 1e9)
        resources = docker.types.Resources(cpu_limit=cpus, mem_limit=memory, cpu_reservation=cpus,
                                           mem_reservation=memory,
                                           generic_resources={"gpu": spec.gpus} if spec.gpus else None)
        resources["Limits"]["Pids"] = spec.resources.pids
        try:
            service = self.client.services.create(
                image, name=f"sm-{spec.replica_id}", labels=labels, container_labels=labels,
                command=spec.entrypoint("0.0.0.0", port) or None, args=spec.arguments("0.0.0.0", port) or None,
                env={"HOME": "/tmp", **spec.environment("0.0.0.0", port), REPLICA_ENV: spec.replica_id},
                networks=["host"], endpoint_spec=docker.types.EndpointSpec(ports={port: (port, "tcp", "host")}),
                resources=resources, restart_policy=docker.types.RestartPolicy(condition="none"),
                constraints=list(spec.constraints) or None,
                mounts=mounts, read_only=True, user="65534:65534", cap_drop=["ALL"],
                stop_grace_period=int(self.grace * 1e9))
        except docker.errors.APIError as exc:
            raise StartFailed(f"Swarm could not create a service of {spec.image!r}: {exc.explanation or exc}") from exc
        try:
            launched = self.placed(str(service.id), port)
            return replace(launched, placed_in=time.monotonic() - begun)
        except BaseException:
            self.stop(str(service.id))
            raise

    def placed(self, service_id: str, port: int) -> Launched:
        """Where the service's task was placed, once Swarm gave it a node; StartFailed if Swarm found none within
        the placement time (with the scheduler's reason), or its task failed first. A pending task is waited for:
        a stopped replica's reservations (its GPU) are free only once its container is down."""
        deadline = time.monotonic() + self.placement
        while True:
            tasks = self.tasks(service_id)
            task = tasks[0] if tasks else {}
            state, error = (task.get("Status") or {}).get("State", "new"), (task.get("Status") or {}).get("Err", "")
            if len(tasks) > 1 or state not in (*WAITING, "running"):
                raise StartFailed(f"Swarm could not run it: {task_status(tasks, {}).reason}")
            if task.get("NodeID") and state not in ("new", "allocated", "pending"):
                node = Node.of(self.client.api.inspect_node(task["NodeID"]))
                return Launched(f"http://{node.address}:{port}", service_id, task_status(tasks, {node_id(task): node}),
                                node.hostname)
            if time.monotonic() >= deadline:
                if error:  # Swarm's scheduler found no node (resources, constraints): it says why
                    raise StartFailed(f"no node can take it: {error}")
                raise StartFailed(f"Swarm gave it no node within {self.placement:g} s (task {state})")
            time.sleep(0.1)

    def image(self, name: str) -> str:
        """The image as the service names it: its ID on the manager's engine (nodes hold it by ID, nothing is
        pulled), or its name when nodes may pull."""
        import docker.errors

        if self.pull:
            return name
        try:
            return str(self.client.images.get(name).id)
        except docker.errors.ImageNotFound:
            raise StartFailed(f"image {name!r} is not on the manager's engine (serverless-model build puts it on "
                              f"every node; SM_SWARM_PULL=1 pulls it from its registry)") from None

    def free_port(self) -> int:
        """A random port of the range that no service of the swarm asks for, and none of ours freed in the last
        minute (its container may still hold it on its way out, or on a node that is away)."""
        now = time.monotonic()
        self.freed = {port: at for port, at in self.freed.items() if now - at < FREED_FOR}
        taken = set(self.freed) | {port.get("PublishedPort") for service in self.client.api.services()
                                   for port in ((service.get("Spec") or {}).get("EndpointSpec") or {}).get("Ports")
                                   or []}
        free = [port for port in random.sample(self.ports, min(len(self.ports), len(taken) + 64)) if port not in taken]
        if not free:
            raise StartFailed(f"no free port in {self.ports.start}-{self.ports.stop - 1}")
        return free[0]

    def service(self, handle: str) -> dict[str, Any] | None:
        """The service ``handle``, if it exists and is ours."""
        import docker.errors

        try:
            service: dict[str, Any] = self.client.api.inspect_service(handle)
        except docker.errors.NotFound:
            return None
        return service if self.ours(service["Spec"].get("Labels") or {}) else None

    def stop(self, handle: str) -> None:
        """Remove the service, if it is ours: its node stops the container (SIGKILL after the grace); a node that
        is down does so when it is back."""
        import docker.errors

        service = self.service(handle)
        if service is None:
            return
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_service(handle)
        self.freed[int(service["Spec"]["Labels"][PORT_LABEL])] = time.monotonic()

    def tasks(self, *services: str) -> list[dict[str, Any]]:
        """The tasks of these services (none of one that is removed)."""
        import docker.errors

        try:
            found: list[dict[str, Any]] = self.client.api.tasks(filters={"service": list(services)})
        except docker.errors.NotFound:  # one of them is gone: Swarm refuses the whole filter, so list them all
            wanted = set(services)
            return [task for task in self.client.api.tasks() if task.get("ServiceID") in wanted]
        return found

    def status(self, handle: str) -> Status:
        """The replica's task and node, if the service is ours (else GONE)."""
        if self.service(handle) is None:
            return GONE
        return task_status(self.tasks(handle), self.nodes())

    def nodes(self) -> dict[str, Node]:
        """The swarm's nodes by id."""
        return {node["ID"]: Node.of(node) for node in self.client.api.nodes()}

    def running(self) -> dict[str, Launched]:
        """Services of this namespace, with their tasks' status and where they run (three API calls)."""
        services = [service for service in self.client.api.services(
            filters={"label": f"{NAMESPACE_LABEL}={self.namespace}"}) if self.ours(service["Spec"].get("Labels") or {})]
        if not services:
            return {}
        tasks: dict[str, list[dict[str, Any]]] = {service["ID"]: [] for service in services}
        for task in self.tasks(*tasks):
            tasks.setdefault(task["ServiceID"], []).append(task)
        nodes = self.nodes()
        found = {}
        for service in services:
            labels, its = service["Spec"]["Labels"], tasks[service["ID"]]
            node = nodes.get(its[0].get("NodeID", "")) if len(its) == 1 else None
            endpoint = f"http://{node.address}:{labels.get(PORT_LABEL, '')}" if node else ""
            found[labels[REPLICA_LABEL]] = Launched(endpoint, service["ID"], task_status(its, nodes),
                                                    node.hostname if node else "")
        return found

    def logs(self, replica_id: str, handle: str, tail: int) -> list[str]:
        """The end of the replica's output, as the manager gathers it from its node."""
        import docker.errors

        if self.service(handle) is None:
            return []
        read: list[bytes] = []

        def gather() -> None:
            with contextlib.suppress(docker.errors.DockerException, OSError, ValueError):
                read.append(b"".join(self.client.api.service_logs(handle, stdout=True, stderr=True, tail=tail)))

        reader = threading.Thread(target=gather, daemon=True)  # a log stream has no timeout of its own, and the
        reader.start()  # manager answers only once every node that holds the task has sent its part
        reader.join(LOGS_WITHIN)
        return last_lines(read[0].decode(errors="replace"), tail) if read else []

    def hosts(self) -> list[Host]:
        """The swarm's nodes: state, address, what they offer."""
        return [host_of(node) for node in self.client.api.nodes()]

    def ours(self, labels: dict[str, str]) -> bool:
        """Whether a service's labels say it is a replica of this namespace: our namespace and our id scheme."""
        return labels.get(NAMESPACE_LABEL) == self.namespace and LABEL in labels and \
            pidfiles.is_replica_id(labels.get(REPLICA_LABEL, "")) and labels.get(PORT_LABEL, "").isdigit()


def host_of(node: dict[str, Any]) -> Host:
    """A Swarm node as a host."""
    description = node.get("Description") or {}
    resources = description.get("Resources") or {}
    gpus = tuple(named["Value"] for named in generic(resources.get("GenericResources") or [], "gpu"))
    found = Node.of(node)
    return Host(name=found.hostname, state=found.state, address=found.address,
                cpus=resources.get("NanoCPUs", 0) / 1e9, memory=int(resources.get("MemoryBytes", 0)), gpus=gpus,
                role=(node.get("Spec") or {}).get("Role", ""),
                availability=(node.get("Spec") or {}).get("Availability", ""))


def generic(resources: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The named generic resources of one kind ("gpu")."""
    return [named for resource in resources if (named := resource.get("NamedResourceSpec") or {})
            and named.get("Kind") == kind]
