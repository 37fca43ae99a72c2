"""Redis high availability: a primary, a replica and a Sentinel (Debian's redis-sentinel); the primary SIGKILLed
under load, the replica promoted, and every accepted job still there and run once."""

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.integration.faults import Submitter, tally, wait_finished
from tests.integration.platform import Platform, unavailable
from tests.integration.test_holes import sleepy
from workers.polling import wait_until
from workers.scaling.backends import free_port
from workers.store import Store, connect
from workers.store.jobs import Unreplicated

pytestmark = [pytest.mark.faults, pytest.mark.integration]
PASSWORD = "sentinel-test-password"
SLEEPY = sleepy(env='{ MODEL_CLASS = "testmodels:Sleepy", SERVICE_TIME = "0.1" }')


class Servers:
    """A Redis primary and replica, and one Sentinel watching them, on loopback."""

    def __init__(self, folder: Path, fsync: str) -> None:
        self.folder, self.fsync = folder, fsync
        self.ports = {"a": free_port(), "b": free_port()}
        self.sentinel_port = free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, primary: str = "") -> None:
        """Start server ``name`` (a replica of ``primary`` if given)."""
        data = self.folder / name
        data.mkdir(parents=True, exist_ok=True)
        (data / "redis.conf").write_text(f"requirepass {PASSWORD}\nmasterauth {PASSWORD}\n")
        argv = ["redis-server", str(data / "redis.conf"), "--port", str(self.ports[name]), "--bind", "127.0.0.1",
                "--dir", str(data), "--appendonly", "yes", "--appendfsync", self.fsync, "--save", ""]
        argv += ["--replicaof", "127.0.0.1", str(self.ports[primary])] if primary else []
        with open(data / "server.log", "ab") as log:
            self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.ports[name], password=PASSWORD, socket_connect_timeout=1)
        assert wait_until(lambda: answers(client), 20, interval=0.1), f"redis {name} did not start"

    def start_sentinel(self) -> None:
        """The Sentinel: the primary is down after 1 s without an answer, a failover takes at most 5 s."""
        config = self.folder / "sentinel.conf"
        config.write_text(f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.folder}\n"
                          f"sentinel monitor sm 127.0.0.1 {self.ports['a']} 1\n"
                          f"sentinel auth-pass sm {PASSWORD}\n"
                          "sentinel down-after-milliseconds sm 1000\nsentinel failover-timeout sm 5000\n")
        with open(self.folder / "sentinel.log", "ab") as log:
            self.processes["sentinel"] = subprocess.Popen(["redis-sentinel", str(config)], stdout=log,
                                                          stderr=subprocess.STDOUT)
        sentinel = redis.Redis(port=self.sentinel_port, socket_connect_timeout=1)
        assert wait_until(lambda: answers(sentinel) and len(sentinel.sentinel_slaves("sm")) == 1, 30,
                          interval=0.2), "the Sentinel does not see the replica"

    @property
    def url(self) -> str:
        """The platform's REDIS_URL: the Sentinel, and the primary's name."""
        return f"sentinel://:{PASSWORD}@127.0.0.1:{self.sentinel_port}/0?master=sm"

    def primary(self) -> int:
        """The port of the primary the Sentinel names now."""
        sentinel = redis.Redis(port=self.sentinel_port, socket_connect_timeout=1)
        return int(sentinel.sentinel_get_master_addr_by_name("sm")[1])

    def stop(self) -> None:
        """Kill everything, and wait for it."""
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
            process.wait()


def answers(client: "redis.Redis") -> bool:
    """Whether a server answers a PING."""
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["always", "everysec"])
def servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Servers]:
    """A primary with a replica and a Sentinel, persisting with the parameter's appendfsync."""
    if shutil.which("redis-sentinel") is None or shutil.which("redis-server") is None:
        unavailable("no redis-server and redis-sentinel")
    found = Servers(tmp_path / "redis", request.param)
    try:
        found.start("a")
        found.start("b", primary="a")
        found.start_sentinel()
        yield found
    finally:
        found.stop()


def test_the_primary_killed_under_load_the_replica_takes_over_and_no_accepted_job_is_lost(
        servers: Servers, make_platform: Callable[..., Platform]) -> None:
    platform = make_platform(models=SLEEPY)
    platform.env.update(REDIS_URL=servers.url, SM_REDIS_REPLICAS="1", SM_JOB_LEASE="3")
    platform.start("gateway", "autoscaler", "worker", "worker2")
    submitter = Submitter(f"{platform.url}/v1/models/sleepy/jobs", 120, lambda i: {"i": i}, timeout=180)
    submitter.thread.start()
    platform.wait_until(lambda: len(submitter.accepted) >= 40, 90, "jobs were not accepted")
    killed_at = time.monotonic()
    servers.processes["a"].send_signal(signal.SIGKILL)
    servers.processes["a"].wait()
    platform.wait_until(lambda: servers.primary() == servers.ports["b"], 30, "the replica was not promoted")
    promoted = time.monotonic() - killed_at
    servers.start("a")  # back, the old primary is made a replica of the new one by the Sentinel
    submitter.thread.join()
    client = connect(servers.url)
    wait_finished(client, submitter.accepted, 120)
    result = tally(client, submitter.accepted)
    print(result.line(f"primary SIGKILL, Sentinel failover (appendfsync {servers.fsync})")
          + f" promoted_after={promoted:.1f}s refused_meanwhile={submitter.refused}")
    assert result.lost == [] and result.committed_twice == []
    assert result.succeeded == len(submitter.accepted) == 120
    assert all(platform.processes[name].poll() is None for name in ("gateway", "autoscaler", "worker", "worker2"))


def test_a_submit_no_replica_holds_in_time_is_taken_back(client: "redis.Redis") -> None:
    store = Store.of(client, 60, replicas=1, replicas_within=0.05)  # a Redis with no replica at all
    job = store.jobs.new("m", {"x": 1})
    with pytest.raises(Unreplicated):
        store.jobs.submit(job)
    assert store.jobs.withdraw(job) == "WITHDRAWN"  # no replica is connected: none can bring it back
    assert store.jobs.get(job.id) is None
