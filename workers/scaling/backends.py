"""Replica backends: how a replica process or container is started, found and stopped.

Both implement ``ReplicaBackend`` and start replicas from a ``ReplicaSpec`` (``workers.scaling.spec``).
``process`` (the default) runs the command as a local process on a free 127.0.0.1 port, with a clean
environment, and finds it again by its pid file (``workers.scaling.pidfiles``); ``docker`` runs the image with
docker-py, labelled so that the containers themselves say which are ours. Neither ever pulls an image, and
neither stops a process or container that is not provably ours: of this
namespace and with an id of the autoscaler's making.
"""

import contextlib
import enum
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

from workers.polling import wait_until
from workers.scaling import pidfiles
from workers.scaling.spec import ReplicaSpec
from workers.store.records import Host

LABEL = "serverless-model"  # every container we start carries this label (value: the model)
REPLICA_LABEL = "serverless-model.replica"
NAMESPACE_LABEL = "serverless-model.namespace"
ENDPOINT_LABEL = "serverless-model.endpoint"
REPLICA_ENV = "SM_REPLICA_ID"  # a process replica is told its id and namespace (it is found by its pid file)
NAMESPACE_ENV = "SM_REPLICA_NAMESPACE"
INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH",
             "VIRTUAL_ENV")  # all a process replica gets of the platform's environment: never its secrets
STOP_GRACE = 5.0  # seconds a process replica has to exit on SIGTERM before it is killed


class StartFailed(Exception):
    """A replica could not be started at all (image missing, command not found, log not writable)."""


class Phase(enum.Enum):
    """Where a replica's process or container is in its life, as its backend sees it."""

    PENDING = "pending"  # accepted, not running yet (waiting for a node, an image, resources)
    RUNNING = "running"
    EXITED = "exited"  # it ran (or was created) and will not run again
    GONE = "gone"  # nothing of it is left, or nothing that is provably ours


@dataclass(frozen=True)
class Status:
    """A replica's phase, and why it is in it (an exit code, what it waits for)."""

    phase: Phase
    reason: str = ""

    @property
    def live(self) -> bool:
        """Whether it runs or is on its way to running."""
        return self.phase in (Phase.PENDING, Phase.RUNNING)


RUNNING = Status(Phase.RUNNING)
GONE = Status(Phase.GONE)


@dataclass(frozen=True)
class Launched:
    """Where a started replica runs."""

    endpoint: str  # base URL of the replica's HTTP server
    handle: str  # the backend's own id: a pid, a container id or a Swarm service id
    status: Status = RUNNING
    host: str = ""  # the hostname of the machine it runs on (workers there prefer it)
    placed_in: float = 0.0  # seconds of the start before it had its host (Swarm: until its task got a node)


def this_host() -> Host:
    """The machine the autoscaler runs on (the process and docker backends' only host)."""
    return Host(name=socket.gethostname(), state="ready", address="127.0.0.1", cpus=float(os.cpu_count() or 1),
                memory=int(psutil.virtual_memory().total))


class ReplicaBackend(Protocol):
    """Starts, finds and stops replicas of models."""

    name: str

    def start(self, spec: ReplicaSpec) -> Launched:
        """Start a replica; it still has to become ready."""
        ...

    def stop(self, handle: str) -> None:
        """Stop a replica and free what it held; idempotent."""
        ...

    def status(self, handle: str) -> Status:
        """Where the replica's process or container is now."""
        ...

    def running(self) -> dict[str, Launched]:
        """Every replica of this namespace that exists now, found without the registry: id → where it runs."""
        ...

    def logs(self, replica_id: str, handle: str, tail: int) -> list[str]:
        """The last ``tail`` lines the replica printed."""
        ...

    def hosts(self) -> list[Host]:
        """The machines replicas may run on."""
        ...


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def last_lines(text: str, tail: int) -> list[str]:
    """The last ``tail`` lines of ``text``."""
    return text.splitlines()[-tail:] if tail > 0 else []


class ProcessBackend:
    """Replicas as local processes, each the leader of its own process group, found again by their pid files."""

    name = "process"

    def __init__(self, workdir: Path, log_dir: Path, namespace: str = "default", grace: float = STOP_GRACE) -> None:
        self.workdir = workdir
        self.log_dir = log_dir  # each replica's log and pid file
        self.namespace = namespace
        self.grace = grace  # seconds a replica has to exit on SIGTERM before it is killed
        self.children: dict[int, subprocess.Popen[bytes]] = {}  # reaped once they exit (no zombies)

    def start(self, spec: ReplicaSpec) -> Launched:
        """Run the model's command with ``PORT`` set to a free port and only the environment it needs."""
        if not spec.command:
            raise StartFailed(f"model {spec.model!r} declares no command for the process backend")
        port, replica_id = free_port(), spec.replica_id
        command = [*spec.entrypoint("127.0.0.1", port), *spec.arguments("127.0.0.1", port)]
        command[0] = sys.executable if command[0] == "python" else command[0]
        inherited = {name: os.environ[name] for name in INHERITED if name in os.environ}
        env = {**inherited, **spec.environment("127.0.0.1", port), REPLICA_ENV: replica_id,
               NAMESPACE_ENV: self.namespace}
        try:
            self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = self.log_dir / f"{replica_id}.log"  # the replica's output: its owner's alone (0600)
            with open(path, "ab", opener=lambda name, flags: os.open(name, flags, 0o600)) as log:
                child = subprocess.Popen(command, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=env)
        except OSError as exc:
            raise StartFailed(f"cannot run {command[0]!r} with its log in {self.log_dir}: {exc}") from exc
        self.children[child.pid] = child
        try:
            pidfiles.record_of(child.pid, port, replica_id, self.namespace).write(self.log_dir)
        except (OSError, psutil.Error) as exc:  # a replica nobody could find again is not started
            self.stop(str(child.pid))
            raise StartFailed(f"cannot write the pid file of {replica_id} in {self.log_dir}: {exc}") from exc
        return Launched(endpoint=f"http://127.0.0.1:{port}", handle=str(child.pid), host=socket.gethostname())

    def stop(self, handle: str) -> None:
        """SIGTERM the replica's process group, SIGKILL it after the grace; a process that is not provably
        ours (our child, or our pid file's pid, start time and group) is left alone."""
        pid = int(handle)
        child = self.children.get(pid)
        process = self.process_of(pid)
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            if not wait_until(lambda: exited(child, process), self.grace, interval=0.02):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                wait_until(lambda: exited(child, process), self.grace, interval=0.02)
        if child is not None or process is not None:  # its leader gone, the rest of its group (a shell's server)
            self.end_group(pid)
        if child is not None:
            child.wait()
            self.children.pop(pid, None)
        self.forget(pid)

    def status(self, handle: str) -> Status:
        """RUNNING while the replica's process runs (a zombie does not); EXITED with its exit code once our child
        exited; else GONE."""
        pid = int(handle)
        if self.process_of(pid) is not None:
            return RUNNING
        child = self.children.get(pid)
        if child is not None and child.returncode is not None:
            return Status(Phase.EXITED, exit_reason(child.returncode))
        return GONE

    def end_group(self, pid: int) -> None:
        """SIGTERM what is left of our replica's process group, SIGKILL it after the grace (the group keeps the
        leader's pid taken while any of it runs, so it is still ours)."""
        if not group_runs(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        if not wait_until(lambda: not group_runs(pid), self.grace, interval=0.02):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            wait_until(lambda: not group_runs(pid), self.grace, interval=0.02)

    def process_of(self, pid: int) -> psutil.Process | None:
        """The running process ``pid`` if it is one of our replicas: our child, or our pid file's process."""
        child = self.children.get(pid)
        if child is not None:
            with contextlib.suppress(psutil.Error):
                return psutil.Process(pid) if child.poll() is None else None
            return None
        return next((process for record in pidfiles.pid_files(self.log_dir, self.namespace)
                     if record.pid == pid and (process := record.process()) is not None), None)

    def forget(self, pid: int) -> None:
        """Remove the pid file of a replica process that was stopped or exited."""
        for record in pidfiles.pid_files(self.log_dir, self.namespace):
            if record.pid == pid:
                record.remove(self.log_dir)

    def reap(self) -> None:
        """Wait for children that exited (no zombie stays) and remove their pid files."""
        for pid, child in list(self.children.items()):
            if child.poll() is not None:  # the replica ended with its leader: what is left of its group too
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                self.children.pop(pid, None)
                self.forget(pid)

    def logs(self, replica_id: str, handle: str, tail: int) -> list[str]:
        """The end of the replica's log file."""
        try:
            with open(self.log_dir / f"{replica_id}.log", "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 200 * max(tail, 1)))
                return last_lines(log.read().decode(errors="replace"), tail)
        except OSError:
            return []

    def running(self) -> dict[str, Launched]:
        """Replica processes of this namespace, found by their pid files; children that exited are reaped and
        pid files whose process is gone removed."""
        self.reap()
        found = {}
        for record in pidfiles.pid_files(self.log_dir, self.namespace):
            if record.process() is not None:
                found[record.replica_id] = Launched(f"http://127.0.0.1:{record.port}", str(record.pid),
                                                    host=socket.gethostname())
            elif record.pid not in self.children:
                record.remove(self.log_dir)
        return found

    def hosts(self) -> list[Host]:
        """This machine."""
        return [this_host()]


def exit_reason(code: int) -> str:
    """A process's exit code, told as a person would."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def group_runs(pgid: int) -> bool:
    """Whether any process is left in the process group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exited(child: subprocess.Popen[bytes] | None, process: psutil.Process) -> bool:
    """Whether a replica process is gone: a child reaped, any other no longer running (or a zombie)."""
    if child is not None:
        return child.poll() is not None
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def container_options(spec: ReplicaSpec, host: str, port: int) -> dict[str, Any]:
    """What the spec adds to a container: entrypoint and command, read-only volumes, /dev/shm, GPUs."""
    import docker.types

    options: dict[str, Any] = {}
    if spec.command:
        options["entrypoint"] = spec.entrypoint(host, port)
    if spec.args:
        options["command"] = spec.arguments(host, port)
    if spec.volumes:
        options["volumes"] = [f"{volume}:ro" for volume in spec.volumes]
    if spec.resources.shm_size:
        options["shm_size"] = spec.resources.shm_size
    if spec.gpus:
        chosen = {"device_ids": list(spec.gpus)} if isinstance(spec.gpus, tuple) else {"count": spec.gpus}
        options["device_requests"] = [docker.types.DeviceRequest(capabilities=[["gpu"]], **chosen)]
    return options


def container_status(state: dict[str, Any]) -> Status:
    """A container's state as a replica's: a paused one runs (frozen); one created but never started never will
    (this backend starts what it creates at once)."""
    status = state.get("Status") or ""
    if status in ("running", "paused", "restarting"):
        return RUNNING
    if status == "created":
        return Status(Phase.EXITED, "created, never started")
    why = [f"exit code {state['ExitCode']}"] if isinstance(state.get("ExitCode"), int) else []
    why += ["out of memory"] if state.get("OOMKilled") else []
    why += [str(state["Error"])] if state.get("Error") else []
    return Status(Phase.EXITED, ", ".join(why) or status or "not running")


class DockerBackend:
    """Replicas as hardened Docker containers, found again by their labels."""

    name = "docker"

    def __init__(self, client: Any, network: str = "host", namespace: str = "default") -> None:
        self.client = client  # a docker.DockerClient
        self.network = network
        self.namespace = namespace

    def start(self, spec: ReplicaSpec) -> Launched:
        """Create and start a container of the spec's image (never pulls)."""
        import docker.errors

        host_network = self.network == "host"
        port = free_port() if host_network else spec.port
        host = "127.0.0.1" if host_network else "0.0.0.0"
        name = f"sm-{spec.model}-{spec.replica_id}"
        endpoint = f"http://{'127.0.0.1' if host_network else name}:{port}"
        labels = {LABEL: spec.model, REPLICA_LABEL: spec.replica_id, NAMESPACE_LABEL: self.namespace,
                  ENDPOINT_LABEL: endpoint}
        resources = spec.resources
        try:
            container = self.client.containers.create(
                spec.image, name=name, detach=True, network_mode=self.network, labels=labels,
                environment={"HOME": "/tmp", **spec.environment(host, port)},
                read_only=True, tmpfs={"/tmp": "size=64m"}, cap_drop=["ALL"],
                security_opt=["no-new-privileges"], user="65534:65534",
                mem_limit=resources.memory, nano_cpus=int(resources.cpus * 1e9), pids_limit=resources.pids,
                **container_options(spec, host, port),
            )
        except docker.errors.ImageNotFound as exc:
            raise StartFailed(f"image {spec.image!r} not found locally (build it; images are never pulled)") from exc
        except docker.errors.APIError as exc:
            raise StartFailed(f"docker could not create a container of {spec.image!r}: "
                              f"{exc.explanation or exc}") from exc
        try:
            container.start()
        except docker.errors.APIError as exc:
            container.remove(force=True)
            raise StartFailed(f"docker could not start {spec.image!r}: {exc.explanation or exc}") from exc
        return Launched(endpoint=endpoint, handle=str(container.id), host=socket.gethostname())

    def stop(self, handle: str) -> None:
        """Remove the container (SIGKILL after a short grace), if it is provably ours."""
        import docker.errors

        try:
            container = self.client.containers.get(handle)
            if not self.ours(container.labels):
                return
            with contextlib.suppress(docker.errors.APIError):  # a paused (frozen) one cannot stop cleanly
                container.stop(timeout=3)
            container.remove(force=True)
        except docker.errors.NotFound:
            pass

    def status(self, handle: str) -> Status:
        """The container's state, if it is ours (else GONE)."""
        import docker.errors

        try:
            container = self.client.containers.get(handle)
        except docker.errors.NotFound:
            return GONE
        if not self.ours(container.labels):
            return GONE
        return container_status(container.attrs.get("State") or {})

    def logs(self, replica_id: str, handle: str, tail: int) -> list[str]:
        """The end of the container's output."""
        import docker.errors

        try:
            output = self.client.containers.get(handle).logs(tail=tail)
        except docker.errors.DockerException:
            return []
        return last_lines(output.decode(errors="replace"), tail)

    def running(self) -> dict[str, Launched]:
        """Containers of this namespace, running or not, by their labels (only those that are provably ours)."""
        found = self.client.api.containers(all=True, filters={"label": f"{NAMESPACE_LABEL}={self.namespace}"})
        return {c["Labels"][REPLICA_LABEL]: Launched(c["Labels"].get(ENDPOINT_LABEL, ""), str(c["Id"]),
                                                     container_status({"Status": c.get("State")}),
                                                     socket.gethostname())
                for c in found if self.ours(c.get("Labels") or {})}

    def hosts(self) -> list[Host]:
        """This machine."""
        return [this_host()]

    def ours(self, labels: dict[str, str]) -> bool:
        """Whether a container's labels say it is a replica of this namespace: our namespace and our id scheme."""
        return labels.get(NAMESPACE_LABEL) == self.namespace and LABEL in labels and \
            pidfiles.is_replica_id(labels.get(REPLICA_LABEL, ""))
