"""A Docker Swarm of hosts on this one machine, built by the tests that need many hosts and removed afterwards,
even when they fail.

Each host is a network namespace (a veth pair on a bridge of its own, an address on a private 10.x range, no
default route: no packet leaves it) with its own ``dockerd`` (own data, own ``/etc/docker`` and so its own engine
id, its own hostname), joined into one swarm whose manager is host 1. The root namespace reaches every host over
the bridge, so Redis, the gateway and the autoscaler run there; workers run inside the hosts.

Two pitfalls shape it: ``ip netns exec`` remounts ``/sys`` without the cgroup tree and dockerd dies ("Devices
cgroup isn't mounted"), so each dockerd is started with ``nsenter`` into the netns plus a private mount and UTS
namespace that remounts ``/sys`` with the cgroups moved back under it; and a dockerd killed with SIGKILL leaves its
containerd and shims (and so its containers) running, which ``down`` ends by pid, only ours.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from workers.polling import wait_until

PREFIX = "smt"  # names of our namespaces, bridge, veths, sockets and cgroups
NET = "10.89.0"  # the rig's private /24: the bridge is .1, host N is .1N


def run(*argv: str, check: bool = True, input: bytes | None = None, timeout: float = 60) -> str:
    """Run a command; its output."""
    done = subprocess.run(argv, capture_output=True, input=input, timeout=timeout, check=False)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode(errors="replace")


def missing() -> str:
    """What this machine lacks to build the rig ("" if nothing)."""
    if os.geteuid() != 0:
        return "building hosts of network namespaces needs root"
    for tool in ("ip", "nsenter", "unshare", "dockerd", "docker"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH"
    return ""


class SwarmRig:
    """``hosts`` hosts in one swarm; ``gpus`` gives host numbers synthetic GPUs (Swarm generic resources)."""

    def __init__(self, base: Path, hosts: int = 3, gpus: dict[int, Sequence[str]] | None = None,
                 heartbeat: str = "1s", prefix: str = PREFIX, net: str = NET) -> None:
        self.base = base
        self.hosts = list(range(1, hosts + 1))
        self.gpus = gpus or {}
        self.heartbeat = heartbeat
        self.prefix, self.net = prefix, net  # two rigs of different prefixes and ranges can run side by side
        self.bridge = f"{prefix}br"
        self.gateway = f"{net}.1"  # the root namespace's address on the bridge
        self.clients: dict[int, Any] = {}

    def name(self, host: int) -> str:
        """The host's netns, hostname and Swarm node name."""
        return f"{self.prefix}{host}"

    def address(self, host: int) -> str:
        """The host's address on the bridge."""
        return f"{self.net}.1{host}"

    def socket(self, host: int) -> str:
        """The host's engine, as ``DOCKER_HOST`` names it."""
        return f"unix:///run/{self.name(host)}.sock"

    def up(self, images: Sequence[str] = ()) -> "SwarmRig":
        """Network, engines, ``images`` of the root engine loaded into every host (same IDs), and the swarm."""
        self.down()  # what a killed earlier run left
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "type", "bridge", "nf_call_iptables", "0")  # whatever the firewall does
        run("ip", "link", "set", self.bridge, "up")
        for host in self.hosts:
            name = self.name(host)
            run("ip", "netns", "add", name)
            run("ip", "link", "add", f"v{name}", "type", "veth", "peer", "name", "eth0", "netns", name)
            run("ip", "link", "set", f"v{name}", "master", self.bridge, "up")
            run("ip", "-n", name, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            run("ip", "-n", name, "link", "set", "eth0", "up")
            run("ip", "-n", name, "link", "set", "lo", "up")
        for host in self.hosts:
            self.start_engine(host)
        for image in images:
            for host in self.hosts:
                self.load(host, image)
        manager = self.engine(1)
        manager.swarm.init(advertise_addr=self.address(1), listen_addr=f"{self.address(1)}:2377",
                           dispatcher_heartbeat_period=self.seconds(self.heartbeat))
        token = manager.swarm.attrs["JoinTokens"]["Worker"]
        for host in self.hosts[1:]:
            self.engine(host).swarm.join(remote_addrs=[f"{self.address(1)}:2377"], join_token=token,
                                         advertise_addr=self.address(host), listen_addr=f"{self.address(host)}:2377")
        if not wait_until(lambda: len(self.ready_nodes()) == len(self.hosts), 30, interval=0.2):
            raise RuntimeError(f"the swarm did not form: {self.ready_nodes()}")
        return self

    @staticmethod
    def seconds(text: str) -> int:
        """A "1s" heartbeat in nanoseconds, as the Swarm API takes it."""
        return int(float(text.rstrip("s")) * 1e9)

    def ready_nodes(self) -> list[str]:
        """Hostnames of the Ready nodes, as the manager sees them."""
        return sorted(node["Description"]["Hostname"] for node in self.engine(1).api.nodes()
                      if node["Status"]["State"] == "ready")

    def load(self, host: int, image: str) -> None:
        """Put ``image`` of the root engine onto the host's engine (``docker save | docker load`` keeps its ID)."""
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "-H", self.socket(host), "load", "-q"], stdin=save.stdout,
                              capture_output=True, timeout=300, check=False)
        save.wait(60)
        if save.returncode or load.returncode:
            raise RuntimeError(f"cannot load {image} into {self.name(host)}: {load.stderr.decode(errors='replace')}")

    def dir(self, host: int) -> Path:
        """The host's own files: engine data, its /etc/docker, logs."""
        return self.base / self.name(host)

    def start_engine(self, host: int) -> None:
        """Start (or restart) the host's dockerd in its namespace, and wait until it answers."""
        name, folder = self.name(host), self.dir(host)
        for sub in ("data", "x", "etc", "cg"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        resources = [f"gpu={device}" for device in self.gpus.get(host, ())]
        (folder / "etc" / "daemon.json").write_text(json.dumps({"node-generic-resources": resources}
                                                               if resources else {}))
        script = (f"mount --bind {folder}/etc /etc/docker && "
                  "mkdir -p /run/containerd && mount -t tmpfs tmpfs /run/containerd && "  # never the system's
                  f"mount --rbind /sys/fs/cgroup {folder}/cg && mount -t sysfs sysfs /sys && "
                  f"mount --move {folder}/cg /sys/fs/cgroup && hostname {name} && "
                  f"exec dockerd --data-root {folder}/data --exec-root {folder}/x --pidfile {folder}/dockerd.pid "
                  f"-H unix:///run/{name}.sock --bridge=none --iptables=false --ip6tables=false --ip-masq=false "
                  f"--cgroup-parent=/{name}")
        with open(folder / "dockerd.log", "ab") as log:
            subprocess.Popen(["nsenter", f"--net=/run/netns/{name}", "unshare", "--mount", "--propagation", "slave",
                              "--uts", "--", "sh", "-c", script], stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True, env={**os.environ, "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"})
        self.clients.pop(host, None)
        if not wait_until(lambda: self.answers(host), 40, interval=0.25):
            raise RuntimeError(f"dockerd of {name} did not come up:\n{self.log_tail(host)}")

    def log_tail(self, host: int, lines: int = 20) -> str:
        """The end of the host's dockerd log."""
        with contextlib.suppress(OSError):
            return "\n".join((self.dir(host) / "dockerd.log").read_text(errors="replace").splitlines()[-lines:])
        return ""

    def answers(self, host: int) -> bool:
        """Whether the host's engine answers."""
        try:
            return bool(self.engine(host).ping())
        except Exception:
            self.clients.pop(host, None)
            return False

    def engine(self, host: int) -> Any:
        """A docker-py client of the host's engine."""
        import docker

        if host not in self.clients:
            self.clients[host] = docker.DockerClient(base_url=self.socket(host), timeout=30)
        return self.clients[host]

    def engine_pid(self, host: int) -> int | None:
        """The pid of the host's dockerd, if it is ours and runs."""
        try:
            pid = int((self.dir(host) / "dockerd.pid").read_text())
            if f"{self.name(host)}.sock" in Path(f"/proc/{pid}/cmdline").read_text():
                return pid
        except (OSError, ValueError):
            pass
        return None

    def kill_engine(self, host: int, signum: int = signal.SIGKILL) -> None:
        """Signal the host's dockerd (SIGKILL: as a crash, leaving its containers running) and wait until it is
        gone."""
        pid = self.engine_pid(host)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        wait_until(lambda: not Path(f"/proc/{pid}").exists() or "zombie" in status_of(pid), 30, interval=0.1)
        self.clients.pop(host, None)

    def cgroups(self, host: int) -> list[Path]:
        """The cgroup folders of the host's containers (cgroup v1: one per controller; v2: one)."""
        root = Path("/sys/fs/cgroup")
        return [*root.glob(f"*/{self.name(host)}"), *root.glob(self.name(host))]

    def contained(self, host: int) -> list[int]:
        """Pids in the host's container cgroups."""
        pids: set[int] = set()
        for group in self.cgroups(host):
            for procs in group.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(line) for line in procs.read_text().split())
        return sorted(pids)

    def spawn(self, host: int, argv: Sequence[str], env: dict[str, str], log: Path) -> "subprocess.Popen[bytes]":
        """Run a process inside the host's network namespace (a worker of that host)."""
        with open(log, "ab") as output:
            return subprocess.Popen(["nsenter", f"--net=/run/netns/{self.name(host)}", "--", *argv], env=env,
                                    stdout=output, stderr=subprocess.STDOUT, start_new_session=True)

    def down(self) -> None:
        """Remove everything of the rig: containers, engines and what they left, namespaces, links, cgroups."""
        for host in self.hosts:
            if self.engine_pid(host) is not None:
                with contextlib.suppress(Exception):
                    for container in self.engine(host).containers.list(all=True):
                        container.remove(force=True)
            self.kill_engine(host, signal.SIGTERM)
            self.kill_engine(host, signal.SIGKILL)
            for pid in [*leftovers(self.dir(host)), *self.contained(host)]:  # a dead engine's shims and containers
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            run("ip", "netns", "del", self.name(host), check=False)
            run("ip", "link", "del", f"v{self.name(host)}", check=False)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/run/{self.name(host)}.sock")
        run("ip", "link", "del", self.bridge, check=False)
        self.clients.clear()
        groups = [group for host in self.hosts for group in self.cgroups(host)]
        wait_until(lambda: not any([remove_cgroup(group) for group in groups]), 10, interval=0.2)
        shutil.rmtree(self.base, ignore_errors=True)


def remove_cgroup(group: Path) -> bool:
    """Remove a cgroup folder, deepest first; whether some of it is left."""
    for folder in sorted((p for p in group.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()
    with contextlib.suppress(OSError):
        group.rmdir()
    return group.exists()


def status_of(pid: int) -> str:
    """The state line of a process ("" if it is gone)."""
    with contextlib.suppress(OSError):
        return next((line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                     if line.startswith("State:")), "").lower()
    return ""


def leftovers(folder: Path) -> Iterator[int]:
    """Pids of the containerd and shims that a host's engine started (its exec root is in their command line)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            exe = os.path.basename(os.readlink(proc / "exe"))
            if exe in ("containerd", "containerd-shim-runc-v2", "containerd-shim") and \
                    str(folder / "x") in (proc / "cmdline").read_text():
                yield int(proc.name)
