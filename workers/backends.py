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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from workers.config import ModelConfig

LABEL = "serverless-model"  # every container we start carries this label (value: the model)
REPLICA_LABEL = "serverless-model.replica"


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

    def __init__(self, workdir: Path, log_dir: Path) -> None:
        self.workdir = workdir
        self.log_dir = log_dir
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
                    env={**os.environ, **replica_env(model, "127.0.0.1", port)},
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
        if child is None:
            return
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)
            child.wait()

    def shutdown(self) -> None:
        """Stop every replica process this backend started."""
        for pid in list(self.children):
            self.stop(str(pid))

    def alive(self, handle: str) -> bool:
        """Whether the process still runs."""
        child = self.children.get(int(handle))
        if child is not None:
            return child.poll() is None
        try:
            os.kill(int(handle), 0)
        except OSError:
            return False
        return True


class DockerBackend:
    """Replicas as hardened Docker containers, found again by their labels."""

    name = "docker"

    def __init__(self, client: Any, network: str = "host") -> None:
        self.client = client  # a docker.DockerClient
        self.network = network

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
                labels={LABEL: model.name, REPLICA_LABEL: replica_id},
                read_only=True, tmpfs={"/tmp": "size=64m"}, cap_drop=["ALL"],
                security_opt=["no-new-privileges"], user="65534:65534", pids_limit=256,
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

    def containers(self) -> list[Any]:
        """Every container we started, found by label."""
        return list(self.client.containers.list(all=True, filters={"label": LABEL}))
