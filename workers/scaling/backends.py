"""Replica backends: how a replica process or container is started and stopped.

Both implement ``ReplicaBackend``. ``process`` (the default) runs the model server as a local
subprocess on a free 127.0.0.1 port; ``docker`` runs the model image with docker-py, labelled so the
containers themselves say which are ours. Neither ever pulls an image.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from workers.config import ModelConfig

LABEL = "serverless-model"  # every container we start carries this label (value: the model)
REPLICA_LABEL = "serverless-model.replica"
NAMESPACE_LABEL = "serverless-model.namespace"
REPLICA_ENV = "SM_REPLICA_ID"  # process replicas carry their id and namespace in their environment
NAMESPACE_ENV = "SM_REPLICA_NAMESPACE"


class StartFailed(Exception):
    """A replica could not be started at all (image missing, command not found)."""


@dataclass(frozen=True)
class Launched:
    """What a backend hands back for a started replica."""

    endpoint: str  # base URL of the replica's HTTP server
    handle: str  # the backend's own id: a pid or a container id


class ReplicaBackend(Protocol):
    """Starts and stops replicas of a model."""

    name: str

    def start(self, model: ModelConfig, replica_id: str) -> Launched:
        """Start a replica; it still has to become ready."""
        ...

    def stop(self, handle: str) -> None:
        """Stop a replica and free what it held; idempotent."""
        ...

    def alive(self, handle: str) -> bool:
        """Whether the replica's process or container is still running."""
        ...

    def shutdown(self) -> None:
        """Stop whatever this backend object started and still runs (on the autoscaler's exit)."""
        ...

    def running(self) -> dict[str, str]:
        """Every replica of this namespace that runs now, found without the registry: id → handle."""
        ...


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def replica_env(model: ModelConfig, host: str, port: int) -> dict[str, str]:
    """The environment every replica gets."""
    return {"HOST": host, "PORT": str(port), "CONCURRENCY": str(model.concurrency), **model.env}


class ProcessBackend:
    """Replicas as local subprocesses, each in its own process group."""

    name = "process"

    def __init__(self, workdir: Path, log_dir: Path, namespace: str = "default") -> None:
        self.workdir = workdir
        self.log_dir = log_dir
        self.namespace = namespace
        self.children: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, model: ModelConfig, replica_id: str) -> Launched:
        """Run the model's command with PORT set to a free port."""
        if not model.command:
            raise StartFailed(f"model {model.name!r} declares no command for the process backend")
        command = [sys.executable if model.command[0] == "python" else model.command[0], *model.command[1:]]
        port = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{replica_id}.log", "ab") as log:
            try:
                child = subprocess.Popen(
                    command, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    env={**os.environ, **replica_env(model, "127.0.0.1", port),
                         REPLICA_ENV: replica_id, NAMESPACE_ENV: self.namespace},
                )
            except OSError as exc:
                raise StartFailed(f"cannot run {command[0]!r}: {exc}") from exc
        self.children[child.pid] = child
        return Launched(endpoint=f"http://127.0.0.1:{port}", handle=str(child.pid))

    def stop(self, handle: str) -> None:
        """SIGTERM the replica's process group, SIGKILL it after 5 s."""
        pid = int(handle)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        child = self.children.pop(pid, None)
        deadline = time.monotonic() + 5
        while (child.poll() is None) if child else self.alive(handle):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                if child:
                    child.wait()
                return
            time.sleep(0.02)

    def shutdown(self) -> None:
        """Stop every replica process this backend started."""
        for pid in list(self.children):
            self.stop(str(pid))

    def running(self) -> dict[str, str]:
        """Replica processes of this namespace, found by the marks in their environment."""
        found = {}
        wanted = f"{NAMESPACE_ENV}={self.namespace}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                leader = os.getpgid(int(entry.name)) == int(entry.name)
            except OSError:
                continue
            marks = [v for v in environ if v.startswith(REPLICA_ENV.encode() + b"=")]
            if wanted in environ and marks and leader:
                found[marks[0].split(b"=", 1)[1].decode()] = entry.name
        return found

    def alive(self, handle: str) -> bool:
        """Whether the process still runs."""
        child = self.children.get(int(handle))
        if child is not None:
            return child.poll() is None
        try:  # not our child (adopted): a zombie counts as dead
            stat = Path(f"/proc/{int(handle)}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"


class DockerBackend:
    """Replicas as hardened Docker containers, found again by their labels."""

    name = "docker"

    def __init__(self, client: Any, network: str = "host", namespace: str = "default") -> None:
        self.client = client  # a docker.DockerClient
        self.network = network
        self.namespace = namespace

    def start(self, model: ModelConfig, replica_id: str) -> Launched:
        """Create and start a container of the model's image (never pulls)."""
        import docker.errors

        host_network = self.network == "host"
        port = free_port() if host_network else model.port
        name = f"sm-{model.name}-{replica_id}"
        try:
            container = self.client.containers.create(
                model.image, name=name, detach=True, network_mode=self.network,
                environment=replica_env(model, "127.0.0.1" if host_network else "0.0.0.0", port),
                labels={LABEL: model.name, REPLICA_LABEL: replica_id, NAMESPACE_LABEL: self.namespace},
                read_only=True, tmpfs={"/tmp": "size=64m"}, cap_drop=["ALL"],
                security_opt=["no-new-privileges"], user="65534:65534",
                mem_limit=model.memory, nano_cpus=int(model.cpus * 1e9), pids_limit=model.pids,
            )
            container.start()
        except docker.errors.ImageNotFound as exc:
            raise StartFailed(f"image {model.image!r} not found locally (build it; images are never pulled)") from exc
        except docker.errors.APIError as exc:
            raise StartFailed(f"docker could not start {model.image!r}: {exc.explanation or exc}") from exc
        endpoint_host = "127.0.0.1" if host_network else name
        return Launched(endpoint=f"http://{endpoint_host}:{port}", handle=str(container.id))

    def stop(self, handle: str) -> None:
        """Remove the container (SIGKILL after a short grace)."""
        import docker.errors

        try:
            container = self.client.containers.get(handle)
            with contextlib.suppress(docker.errors.APIError):  # a paused (frozen) one cannot stop cleanly
                container.stop(timeout=3)
            container.remove(force=True)
        except docker.errors.NotFound:
            pass

    def alive(self, handle: str) -> bool:
        """Whether the container is running."""
        import docker.errors

        try:
            return bool(self.client.containers.get(handle).status == "running")
        except docker.errors.NotFound:
            return False

    def shutdown(self) -> None:
        """Nothing to do: containers outlive this object and are stopped through the registry."""

    def running(self) -> dict[str, str]:
        """Containers of this namespace, running or not, by their labels."""
        found = self.client.api.containers(all=True, filters={"label": f"{NAMESPACE_LABEL}={self.namespace}"})
        return {c["Labels"][REPLICA_LABEL]: str(c["Id"]) for c in found}
