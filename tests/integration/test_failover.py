"""Failover between two autoscalers under load: a standby takes over a killed or paused leader within the lease,
every accepted job runs once, no replica is doubled, and a paused leader, resumed, writes nothing.

Each test prints the seconds from the leader's end until the standby held the lease; the assertions allow 5 s (a
lease of 3 s and a tick of 0.5 s).
"""

import os
import signal
import time
from collections.abc import Callable

import psutil
import pytest
import redis

from tests.integration.faults import Call, Census, Recording, Submitter, replica_processes, tally, wait_finished
from tests.integration.platform import Platform
from tests.integration.test_holes import sleepy
from workers.scaling.backends import ProcessBackend
from workers.store import Store, keys
from workers.store.records import ReplicaState
from workers.store.scripts import Scripts

pytestmark = [pytest.mark.integration, pytest.mark.faults]
LEASE = 3.0  # SM_LEADER_LEASE
TICK = 0.5  # SM_SCALE_INTERVAL
JOB_LEASE = 3.0  # SM_JOB_LEASE
TAKEOVER = 5.0  # seconds the standby may take to lead
MAX_REPLICAS = 3
SETUP = 15  # seconds a slow replica takes to start: it is still starting when its paused leader resumes
SLEEPY = sleepy(concurrency=1, max_replicas=MAX_REPLICAS, cold_start_seed=1, service_time_seed=0.3,
                env='{ MODEL_CLASS = "testmodels:Sleepy", SERVICE_TIME = "0.3" }')
SLOW = sleepy("slow", concurrency=1, max_replicas=MAX_REPLICAS, cold_start_seed=1,
              env=f'{{ MODEL_CLASS = "testmodels:SlowSetup", SETUP_SECONDS = "{SETUP}" }}')


def two_autoscalers(make_platform: Callable[..., Platform], models: str, *workers: str) -> Platform:
    """A platform whose first autoscaler leads and whose second stands by, ready to take over."""
    platform = make_platform(models=models)
    platform.env.update(SM_LEADER_LEASE=str(LEASE), SM_SCALE_INTERVAL=str(TICK), SM_JOB_LEASE=str(JOB_LEASE))
    platform.start("gateway", "worker", *workers, "autoscaler")
    platform.wait_until(lambda: "leading" in platform.log("autoscaler"), 30, "the first autoscaler did not lead")
    platform.start("autoscaler2")
    platform.wait_until(lambda: "autoscaler up" in platform.log("autoscaler2"), 30, "the standby did not start")
    return platform


def leader(client: "redis.Redis") -> str | None:
    """The token the lease is held with now, if held."""
    token = client.get(keys.LEADER)
    return str(token) if token is not None else None


def takeover(client: "redis.Redis", old: str, since: float) -> tuple[str, float]:
    """The lease's next token, and the seconds from ``since`` (monotonic) until it was taken."""
    deadline = since + 30
    while (token := leader(client)) in (None, old):
        assert time.monotonic() < deadline, "nobody took the lease over"
        time.sleep(0.01)
    assert token is not None
    return token, time.monotonic() - since


def adoptions(store: Store, since: float) -> list[float]:
    """When replicas were adopted (Redis time) since ``since``."""
    return [event.at for event in store.events.recent() if event.kind == "adopted" and event.at >= since]


def replicas(store: Store, model: str) -> list[ReplicaState]:
    """The states of the model's replica records."""
    return [replica.state for replica in store.replicas.of(model)]


def assert_one_process_per_record(platform: Platform, store: Store, census: Census, model: str) -> None:
    """No replica was doubled: never more processes than max_replicas, each running one with a record of its own
    (its pid file and the processes working in the platform's folder agree), no two records for one process."""
    census.stop()
    records = {replica.id: replica.handle for replica in store.replicas.of(model)}
    running = ProcessBackend(platform.workdir, platform.workdir / "data" / "logs", platform.namespace).running()
    print(f"replica processes: at most {census.most} at once; at the end {len(running)}, records {len(records)}")
    assert census.most <= MAX_REPLICAS and census.shared == []
    assert {replica_id: launched.handle for replica_id, launched in running.items()} == records
    assert replica_processes(platform.workdir) == {int(handle) for handle in records.values()}


def test_leader_killed_under_load_the_standby_leads_within_5_s_and_nothing_is_doubled(
        make_platform: Callable[..., Platform], client: "redis.Redis", store: Store) -> None:
    platform = two_autoscalers(make_platform, SLEEPY)
    counted = Census(client, platform.workdir, "sleepy")
    submitter = Submitter(f"{platform.url}/v1/models/sleepy/jobs", 90, lambda i: {"i": i})
    submitter.thread.start()
    platform.wait_until(lambda: ReplicaState.READY in replicas(store, "sleepy"), 60, "no replica became ready")
    old, at_kill = leader(client), replicas(store, "sleepy")
    assert old is not None
    platform.stop("autoscaler", sig=signal.SIGKILL)
    killed, killed_at = time.monotonic(), store.now()
    _, took = takeover(client, old, killed)
    platform.wait_until(lambda: adoptions(store, killed_at), 10, "the standby adopted no replica")
    adopted = min(adoptions(store, killed_at)) - killed_at
    submitter.thread.join()
    wait_finished(client, submitter.accepted, 120)
    platform.wait_until(lambda: set(replicas(store, "sleepy")) == {ReplicaState.READY}, 30, "replicas did not settle")

    result = tally(client, submitter.accepted)
    print(result.line("leader SIGKILL") + f" replicas_at_kill={sorted(s.value for s in at_kill)} "
                                          f"standby_lease_after={took:.2f}s standby_adopted_after={adopted:.2f}s")
    assert "leading" in platform.log("autoscaler2")
    assert took < TAKEOVER and adopted < TAKEOVER
    assert result.lost == [] and result.committed_twice == []
    assert result.succeeded == result.submitted == 90
    assert_one_process_per_record(platform, store, counted, "sleepy")


def test_leader_paused_past_its_lease_writes_nothing_once_resumed(
        make_platform: Callable[..., Platform], client: "redis.Redis", store: Store, redis_url: str) -> None:
    platform = two_autoscalers(make_platform, SLOW)
    counted = Census(client, platform.workdir, "slow")
    submitter = Submitter(f"{platform.url}/v1/models/slow/jobs", 30, lambda i: {"i": i})
    submitter.thread.start()
    platform.wait_until(lambda: [r.state for r in store.replicas.of("slow") if r.handle] ==
                        [ReplicaState.STARTING] * MAX_REPLICAS, 30, "the leader did not start its replicas")
    old, paused = leader(client), platform.processes["autoscaler"]
    assert old is not None
    os.killpg(paused.pid, signal.SIGSTOP)  # its replicas are left starting, each watched by one of its threads
    stopped = time.monotonic()
    try:
        new, took = takeover(client, old, stopped)
        time.sleep(max(0.0, stopped + 2 * LEASE - time.monotonic()))
        recording = Recording(redis_url)
        assert replicas(store, "slow") == [ReplicaState.STARTING] * MAX_REPLICAS  # SETUP outlasts the pause
        said = len(platform.log("autoscaler"))
    finally:
        os.killpg(paused.pid, signal.SIGCONT)
    platform.wait_until(lambda: "leadership lost; standing by" in platform.log("autoscaler")[said:], 10,
                        "the resumed leader did not stand by")
    submitter.thread.join()
    wait_finished(client, submitter.accepted, 120)
    platform.wait_until(lambda: set(replicas(store, "slow")) == {ReplicaState.READY}, 60, "replicas did not settle")
    ports = {str(c.laddr.port) for c in psutil.Process(paused.pid).net_connections("tcp")
             if c.raddr and c.raddr.port == client.connection_pool.connection_kwargs["port"]}
    calls = recording.stop()

    result = tally(client, submitter.accepted)
    names = {script.sha: name for name, script in Scripts(client, 60).scripts.items()}
    tried = [script_name(call, names) for call in calls if old in call.command]
    print(result.line("leader SIGSTOP") + f" standby_lease_after={took:.2f}s "
                                          f"resumed_leader_tried={sorted(tried)}")
    assert leader(client) == new
    assert "note" in tried  # its threads watching starting replicas still tried to write, with its token
    written = [write for call in calls if old in call.command for write in recording.writes(call)]
    assert written == [], "a registry write went through with the old leader's token"
    events = [call.command for call in calls if call.port in ports and call.command.startswith("XADD")]
    assert events == [], "the resumed leader recorded events"
    assert "leading" not in platform.log("autoscaler")[said:]
    assert took < TAKEOVER
    assert result.lost == [] and result.committed_twice == []
    assert result.succeeded == result.submitted == 30
    assert_one_process_per_record(platform, store, counted, "slow")


def script_name(call: Call, names: dict[str, str]) -> str:
    """Which of the platform's scripts (``names``: by SHA) a call ran; "lock" for the lease's own."""
    parts = call.command.split(" ")
    return names.get(parts[1], "lock") if parts[0].upper() == "EVALSHA" else parts[0]


def test_after_a_leader_change_the_new_leader_takes_back_the_jobs_of_a_killed_worker(
        make_platform: Callable[..., Platform], client: "redis.Redis", store: Store) -> None:
    platform = two_autoscalers(make_platform, SLEEPY, "worker2")
    old = leader(client)
    assert old is not None
    platform.stop("autoscaler", sig=signal.SIGKILL)
    _, took = takeover(client, old, time.monotonic())
    submitter = Submitter(f"{platform.url}/v1/models/sleepy/jobs", 40, lambda i: {"i": i})
    submitter.thread.start()
    victim = platform.processes["worker"].pid
    platform.wait_until(lambda: any((job := store.jobs.get(j)) and job.worker.endswith(f":{victim}")
                                    for j in client.smembers(keys.running("sleepy"))), 60, "the worker ran no job")
    platform.stop("worker", sig=signal.SIGKILL)
    killed_at = store.now()
    platform.start("worker")
    submitter.thread.join()
    wait_finished(client, submitter.accepted, 120)

    result = tally(client, submitter.accepted)
    orphans = [job for j in submitter.accepted if (job := store.jobs.get(j)) and job.requeued_at]
    after = max((job.requeued_at or 0) - killed_at for job in orphans) if orphans else None
    print(result.line("worker SIGKILL after a leader change") + f" standby_lease_after={took:.2f}s "
                                                                f"requeued={len(orphans)} after={after or 0:.2f}s")
    assert result.lost == [] and result.committed_twice == []
    assert result.succeeded == result.submitted == 40
    assert orphans and after is not None and after <= JOB_LEASE + TICK + 1.0
    assert any(e.kind == "job_requeued" for e in store.events.recent("sleepy"))  # by the one autoscaler left
