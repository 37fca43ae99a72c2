"""The autoscaler driven by hand: fakeredis, a fake backend, a fake readiness probe and a fake clock. No Docker,
no processes, no sleeps."""

import logging
import threading
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest

from workers.config import ModelConfig
from workers.scaling.autoscaler import Autoscaler
from workers.scaling.backends import GONE, RUNNING, Launched, StartFailed, Status
from workers.scaling.spec import ReplicaSpec
from workers.store import Store, keys
from workers.store.records import Host, ReplicaState, SeenHosts

pytestmark = pytest.mark.unit
MODEL = ModelConfig(name="m", command=["serve"], concurrency=1, max_replicas=4, idle_timeout=30,
                    cold_start_seed=1.0, service_time_seed=0.2)


class Clock:
    """Time that moves only when told (or by ``step`` on every reading)."""

    def __init__(self, now: float = 1_000_000.0, step: float = 0.0) -> None:
        self.now = now
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeBackend:
    """Replicas that exist as entries of a dict; starts of the models in ``broken`` fail."""

    name = "fake"

    def __init__(self) -> None:
        self.live: dict[str, Launched] = {}
        self.broken: dict[str, Exception] = {}
        self.starts = 0
        self.stops: list[str] = []
        self.failing_scan: Exception | None = None
        self.machines = [Host("node-a", "ready", "10.0.0.1", 8.0, 32 << 30, ("GPU-aaa",), "manager", "active"),
                         Host("node-b", "down", "10.0.0.2", 4.0, 16 << 30, (), "worker", "drain")]
        self.failing_hosts: Exception | None = None

    def start(self, spec: ReplicaSpec) -> Launched:
        self.starts += 1
        if spec.model in self.broken:
            raise self.broken[spec.model]
        self.live[spec.replica_id] = Launched(f"http://fake/{spec.replica_id}", f"handle-{spec.replica_id}")
        return self.live[spec.replica_id]

    def stop(self, handle: str) -> None:
        self.stops.append(handle)
        self.live = {rid: launched for rid, launched in self.live.items() if launched.handle != handle}

    def status(self, handle: str) -> Status:
        return RUNNING if any(launched.handle == handle for launched in self.live.values()) else GONE

    def running(self) -> dict[str, Launched]:
        if self.failing_scan is not None:
            raise self.failing_scan
        return dict(self.live)

    def logs(self, replica_id: str, handle: str, tail: int) -> list[str]:
        return [f"{replica_id}: loading", f"{replica_id}: still loading"][-tail:]

    def hosts(self) -> list[Host]:
        if self.failing_hosts is not None:
            raise self.failing_hosts
        return list(self.machines)


class FakeProbe:
    """Ready at once, unless the model has a verdict."""

    def __init__(self) -> None:
        self.verdicts: dict[str, str] = {}

    def wait(self, model: ModelConfig, endpoint: str, status: Callable[[], Status], timeout: float,
             progress: Callable[[], None] = lambda: None, answered: Callable[[], None] = lambda: None) -> str:
        progress()
        status()
        answered()
        return self.verdicts.get(model.name, "")


class Inline:
    """Actions run at once, in the caller."""

    def spawn(self, name: str, action: Callable[[], None]) -> None:
        action()


class Held:
    """Actions wait until the test runs them."""

    def __init__(self) -> None:
        self.pending: list[Callable[[], None]] = []

    def spawn(self, name: str, action: Callable[[], None]) -> None:
        self.pending.append(action)

    def run(self) -> None:
        while self.pending:
            self.pending.pop(0)()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> Store:
    return Store.of(fakeredis.FakeRedis(decode_responses=True), retention=60, clock=clock)


def scaler(store: Store, backend: FakeBackend | None = None, probe: FakeProbe | None = None,
           actions: Any = None, **models: ModelConfig) -> Autoscaler:
    return Autoscaler(models or {"m": MODEL}, store, backend or FakeBackend(), probe or FakeProbe(),
                      actions or Inline(), clock=store.clock, sweep_every=0)


def submit(store: Store, count: int, model: str = "m") -> list[str]:
    return [store.jobs.submit(store.jobs.new(model, {"i": i}), 0).id for i in range(count)]  # type: ignore[union-attr]


def states(store: Store, model: str = "m") -> list[ReplicaState]:
    return [r.state for r in store.replicas.of(model)]


def kinds(store: Store) -> list[str]:
    return [e.kind for e in reversed(store.events.recent(limit=1000))]


def test_a_burst_from_zero_starts_the_replicas_that_pay_off_and_sends_them_the_waiting_jobs(store: Store) -> None:
    backend = FakeBackend()
    autoscaler = scaler(store, backend)
    ids = submit(store, 40)
    for job_id in ids:  # workers found no slot: the jobs wait, parked
        assert store.jobs.start(job_id, "t", 5, "w", True) == "PARKED"
    store.client.delete(keys.celery_queue("m"))
    autoscaler.lead(store.leadership(3).hold() or "", full=True)

    assert backend.starts == 4 and states(store) == [ReplicaState.READY] * 4  # the policy's worked example
    assert store.client.llen(keys.celery_queue("m")) == 4  # one waiting job sent to each new slot
    assert kinds(store)[:2] == ["scale_up", "ready"]


def test_idle_replicas_go_after_the_idle_timeout_and_not_before(store: Store, clock: Clock) -> None:
    backend = FakeBackend()
    autoscaler = scaler(store, backend)
    token = store.leadership(3).hold() or ""
    submit(store, 1)
    autoscaler.lead(token, full=True)
    store.client.delete(keys.celery_queue("m"), keys.sent("m"))  # the job ran elsewhere; nothing waits
    clock.advance(29)
    autoscaler.lead(token, full=True)
    assert states(store) == [ReplicaState.READY]
    clock.advance(2)
    autoscaler.lead(token, full=True)  # drained
    autoscaler.lead(token, full=True)  # stopped
    assert store.replicas.of("m") == [] and backend.live == {} and "scale_down" in kinds(store)


def test_failed_starts_back_off_and_the_backoff_survives_a_new_leader(store: Store, clock: Clock) -> None:
    backend = FakeBackend()
    backend.broken["m"] = StartFailed("image 'm' not found locally")
    token = store.leadership(3).hold() or ""
    submit(store, 1)
    first = scaler(store, backend)
    first.lead(token, full=True)
    assert backend.starts == 1 and "start_failed" in kinds(store)
    first.lead(token, full=True)  # the failed replica is removed; the next start waits 1 s
    clock.advance(0.5)
    first.lead(token, full=True)
    assert backend.starts == 1
    clock.advance(0.6)
    first.lead(token, full=True)  # 1.1 s after the failure: a second start, which fails too
    assert backend.starts == 2
    clock.advance(1.5)
    scaler(store, backend).lead(token, full=True)  # a new leader goes on waiting 2 s after the second failure
    assert backend.starts == 2
    clock.advance(0.6)
    del backend.broken["m"]
    scaler(store, backend).lead(token, full=True)
    assert backend.starts == 3 and states(store) == [ReplicaState.READY]
    scaler(store, backend).lead(token, full=True)
    assert store.replicas.snapshot("m", {}).scaling["failures"] == "0"  # reset once one is ready


def test_a_setup_that_never_gets_ready_fails_the_start_with_its_reason(store: Store) -> None:
    probe = FakeProbe()
    probe.verdicts["m"] = "setup failed: RuntimeError: cannot load weights"
    job = submit(store, 1)[0]
    assert store.jobs.start(job, "t", 5, "w", True) == "PARKED"
    scaler(store, probe=probe).lead(store.leadership(3).hold() or "", full=True)
    failed = store.jobs.get(job)
    assert failed is not None and failed.error is not None and failed.error.code == "replica_start_failed"
    assert "cannot load weights" in failed.error.message


def test_a_new_leader_adopts_what_runs_forgets_what_vanished_and_stops_strays(store: Store) -> None:
    backend = FakeBackend()
    old = store.leadership(3).hold() or ""
    submit(store, 2)
    scaler(store, backend).lead(old, full=True)
    [running] = store.replicas.of("m")
    assert store.replicas.add(old, "vanished", "m", "fake")  # recorded, never ran
    backend.live["stray"] = Launched("http://fake/stray", "handle-stray")  # runs, never recorded
    store.client.delete(keys.LEADER)  # the old leader died
    scaler(store, backend).sweep(store.leadership(3).hold() or "", adopting=True)

    assert [r.id for r in store.replicas.of("m")] == [running.id]
    assert backend.stops == ["handle-stray"]
    assert {"adopted", "lost", "stray_removed"} <= set(kinds(store))


def test_a_sweep_saves_the_hosts_as_the_backend_sees_them_and_a_former_leaders_sweep_does_not(
        store: Store, clock: Clock) -> None:
    backend = FakeBackend()
    old = store.leadership(3).hold() or ""
    scaler(store, backend).sweep(old, adopting=False)
    seen = store.replicas.hosts()
    assert seen == SeenHosts(at=clock.now, hosts=tuple(backend.machines))

    store.client.delete(keys.LEADER)  # the old leader lost its lease
    new = store.leadership(3).hold() or ""
    clock.advance(5)
    backend.machines = backend.machines[:1]
    scaler(store, backend).sweep(old, adopting=False)  # its sweep, still running, is refused
    assert store.replicas.hosts() == seen
    scaler(store, backend).sweep(new, adopting=False)
    assert store.replicas.hosts() == SeenHosts(at=clock.now, hosts=tuple(backend.machines))


def test_a_backend_that_cannot_list_its_hosts_is_logged_and_the_sweep_goes_on(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    backend = FakeBackend()
    backend.failing_hosts = TimeoutError("docker daemon did not answer in 30 s")
    backend.live["stray"] = Launched("http://fake/stray", "handle-stray")  # runs, never recorded
    with caplog.at_level(logging.WARNING):
        scaler(store, backend).sweep(store.leadership(3).hold() or "", adopting=False)
    assert backend.stops == ["handle-stray"]
    assert store.replicas.hosts() is None
    assert "cannot save the hosts: TimeoutError: docker daemon did not answer in 30 s" in caplog.text


def test_hole02_a_leader_that_lost_the_lease_mid_start_undoes_its_start(store: Store) -> None:
    backend = FakeBackend()
    held = Held()
    old = scaler(store, backend, actions=held)
    submit(store, 1)
    old_token = store.leadership(3).hold() or ""
    old.lead(old_token, full=True)  # records a STARTING replica; its start is still to run (a slow Docker call)
    store.client.delete(keys.LEADER)  # ... during which its lease lapses
    new_token = store.leadership(3).hold() or ""
    new = scaler(store, backend)
    new.sweep(new_token, adopting=True)  # the old leader's record runs nowhere: lost
    new.lead(new_token, full=True)  # the new leader starts its own
    held.run()  # the old leader's start returns: its writes are refused, and it stops what it started

    assert len(backend.live) == 1 and [r.id for r in store.replicas.of("m")] == list(backend.live)
    assert "start_abandoned" in kinds(store)


def test_hole09_a_standby_leaves_the_wake_ups_to_the_leader(store: Store) -> None:
    store.leadership(3).hold()  # another autoscaler leads
    submit(store, 1)

    class Once(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            self.set()
            return True

    scaler(store).run(Once(), interval=0.5, leadership=store.leadership(3))
    assert store.client.lrange(keys.SCALE, 0, -1) == ["m"]  # still there for the leader


def test_hole04_failing_backend_calls_are_events_and_the_loop_goes_on(store: Store) -> None:
    backend = FakeBackend()
    backend.broken["m"] = RuntimeError("docker daemon: 500 Server Error")
    backend.failing_scan = TimeoutError("docker daemon did not answer in 30 s")
    autoscaler = scaler(store, backend)
    token = store.leadership(3).hold() or ""
    submit(store, 1)
    autoscaler.lead(token, full=True)
    autoscaler.lead(token, full=True)
    events = store.events.recent(limit=100)
    assert any(e.kind == "start_failed" and "500 Server Error" in e.reason for e in events)
    assert any(e.kind == "action_failed" and "did not answer" in e.reason for e in events)


def test_no_fresh_observation_no_decision(store: Store) -> None:
    jumpy = Clock(step=10.0)  # every reading is 10 s after the last: each snapshot is stale when judged
    stale_store = Store.of(store.client, retention=60, clock=jumpy)
    backend = FakeBackend()
    submit(stale_store, 3)
    scaler(stale_store, backend).lead(stale_store.leadership(3).hold() or "", full=True)
    assert backend.starts == 0


def test_shutting_down_with_stop_replicas_stops_them_all(store: Store) -> None:
    backend = FakeBackend()
    autoscaler = scaler(store, backend)
    token = store.leadership(3).hold() or ""
    submit(store, 3)
    autoscaler.lead(token, full=True)
    autoscaler.stop_all(token)
    assert backend.live == {} and store.replicas.of("m") == []


def test_hole02_a_former_leader_leaves_a_replica_it_started_to_the_leader_that_adopted_it(store: Store) -> None:
    backend = FakeBackend()
    old_actions, new_actions = Held(), Held()
    old = scaler(store, backend, actions=old_actions)
    job = submit(store, 1)[0]
    assert store.jobs.start(job, "t", 5, "w", True) == "PARKED"
    old.lead(store.leadership(3).hold() or "", full=True)
    launch = old_actions.pending[0]  # its start (then its sweep, left undone)
    real_launched = store.replicas.launched

    def lease_lapses_mid_start(*args: Any) -> int:  # the old leader pauses after its container started
        store.replicas.launched = real_launched  # type: ignore[method-assign]
        store.client.delete(keys.LEADER)
        new_token = store.leadership(3).hold() or ""
        new = scaler(store, backend, actions=new_actions)
        new.sweep(new_token, adopting=True)
        new.lead(new_token, full=True)
        return real_launched(*args)

    store.replicas.launched = lease_lapses_mid_start  # type: ignore[method-assign]
    launch()
    new_actions.run()
    assert len(backend.live) == 1 and backend.stops == []  # the former leader stopped nothing
    assert states(store) == [ReplicaState.READY] and store.client.llen(keys.celery_queue("m")) == 2
