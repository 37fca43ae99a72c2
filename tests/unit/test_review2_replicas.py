"""Replicas, second review: impossible replica bounds, whose replicas are ours, stopping them all at once."""

import threading
from typing import Any

import fakeredis
import pytest
import redis

from tests.unit.test_autoscaler import MODEL, Clock, FakeBackend, FakeProbe, Inline, scaler, submit
from workers.config import ConfigError, ModelConfig, Settings, parse_models
from workers.scaling.autoscaler import Autoscaler
from workers.scaling.backends import (
    GONE,
    LABEL,
    NAMESPACE_LABEL,
    REPLICA_LABEL,
    RUNNING,
    DockerBackend,
    Launched,
    Status,
)
from workers.scaling.spec import ReplicaSpec
from workers.store import Store
from workers.store.records import ReplicaState

pytestmark = pytest.mark.unit
OURS = "0123456789ab"  # an id of the autoscaler's scheme


def test_review2_hole17_min_replicas_above_max_replicas_is_refused_at_start() -> None:
    for table in ({"min_replicas": 3, "max_replicas": 2}, {"min_replicas": 2}):  # the maximum given, or its default
        with pytest.raises(ConfigError) as refused:
            parse_models({"models": {"warm": {"command": ["serve"], **table}}})
        assert "model 'warm'" in str(refused.value)
        assert "max_replicas" in str(refused.value) and "min_replicas" in str(refused.value)
    assert parse_models({"models": {"warm": {"command": ["serve"], "min_replicas": 2, "max_replicas": 2}}})


def test_review2_hole06_each_redis_gives_its_platform_a_namespace_of_its_own() -> None:
    assert Settings().namespace == ""  # no fixed default: derived from the platform's Redis
    one, other = (Store.of(fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True))
                  for _ in range(2))
    first = one.replicas.namespace()
    assert first and first == one.replicas.namespace()  # kept: every autoscaler of the platform agrees
    assert other.replicas.namespace() != first


class Container:
    """What docker-py's containers.get answers."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self.status = "running"
        self.removed = False

    def stop(self, timeout: int) -> None:
        self.status = "exited"

    def remove(self, force: bool) -> None:
        self.removed = True


class Engine:
    """A Docker engine's containers, by id (the parts of docker-py's client the backend uses)."""

    def __init__(self, found: dict[str, Container]) -> None:
        self.found = found
        self.containers = self
        self.api = Listing(found)

    def get(self, handle: str) -> Container:
        return self.found[handle]


class Listing:
    """docker-py's low-level ``api.containers``."""

    def __init__(self, found: dict[str, Container]) -> None:
        self.found = found

    def containers(self, all: bool, filters: dict[str, str]) -> list[dict[str, Any]]:
        key, _, value = filters["label"].partition("=")
        return [{"Id": handle, "Labels": c.labels, "State": c.status} for handle, c in self.found.items()
                if c.labels.get(key) == value]


def test_review2_hole06_containers_that_are_not_provably_ours_are_neither_listed_nor_removed() -> None:
    mark = {LABEL: "m", NAMESPACE_LABEL: "mine"}
    engine = Engine({"ours": Container({**mark, REPLICA_LABEL: OURS}),
                     "odd-id": Container({**mark, REPLICA_LABEL: "my-own-thing"}),
                     "theirs": Container({LABEL: "m", NAMESPACE_LABEL: "theirs", REPLICA_LABEL: "fedcba987654"})})
    backend = DockerBackend(engine, namespace="mine")
    assert list(backend.running()) == [OURS]
    for handle in ("odd-id", "theirs"):
        backend.stop(handle)
        assert not engine.found[handle].removed and not backend.status(handle).live
    backend.stop("ours")
    assert engine.found["ours"].removed


class SlowToStop:
    """Replicas that each take a while to stop: a stop returns only once every replica is being stopped."""

    name = "slow"

    def __init__(self, count: int) -> None:
        self.together = threading.Barrier(count, timeout=20)
        self.stopped: list[str] = []

    def start(self, spec: ReplicaSpec) -> Launched:
        raise AssertionError("not started here")

    def stop(self, handle: str) -> None:
        self.together.wait()  # one at a time, the first stop would wait here forever (BrokenBarrierError)
        self.stopped.append(handle)

    def status(self, handle: str) -> Status:
        return GONE if handle in self.stopped else RUNNING

    def running(self) -> dict[str, Launched]:
        return {}

    def logs(self, replica_id: str, handle: str, tail: int) -> list[str]:
        return []


def test_review2_hole15_shutting_down_stops_every_replica_at_once() -> None:
    store = Store.of(fakeredis.FakeRedis(decode_responses=True))
    token = store.leadership(3).hold() or ""
    for replica_id in ("aaaaaaaaaaa1", "aaaaaaaaaaa2", "aaaaaaaaaaa3", "aaaaaaaaaaa4"):
        assert store.replicas.add(token, replica_id, "m", "slow")
        store.replicas.launched(token, replica_id, "http://x", f"handle-{replica_id}")
    backend = SlowToStop(4)
    Autoscaler({"m": ModelConfig(name="m", command=["serve"], max_replicas=4)}, store, backend,
               probe=None).stop_all(token)  # type: ignore[arg-type]
    assert sorted(backend.stopped) == [f"handle-aaaaaaaaaaa{i}" for i in range(1, 5)]
    assert store.replicas.of("m") == []


def test_replicas_of_a_removed_model_are_stopped_once_idle_past_the_grace_and_the_model_forgotten() -> None:
    clock = Clock()
    store = Store.of(fakeredis.FakeRedis(decode_responses=True), retention=60, clock=clock)
    backend = FakeBackend()
    token = store.leadership(3).hold() or ""
    warm = MODEL.model_copy(update={"scaling": MODEL.scaling.model_copy(update={"min_replicas": 1})})
    scaler(store, backend, m=warm).lead(token, full=True)
    [replica] = store.replicas.of("m")
    assert replica.state is ReplicaState.READY and store.jobs.models_held() == {"m"}

    removed = Autoscaler({}, store, backend, FakeProbe(), Inline(), clock=clock, sweep_every=0, removed_after=60)
    removed.sweep(token, adopting=False)
    assert backend.stops == [] and [r.id for r in store.replicas.of("m")] == [replica.id]  # within the grace
    clock.advance(61)
    removed.sweep(token, adopting=False)
    assert backend.stops == [replica.handle] and store.replicas.of("m") == []
    assert "replica_removed" in [e.kind for e in store.events.recent("m")]
    removed.reap_jobs()
    assert store.jobs.models_held() == set()  # nothing of the model is left


def test_a_full_store_stops_the_janitor_but_not_the_scaling(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store.of(fakeredis.FakeRedis(decode_responses=True), retention=60, clock=Clock())
    backend = FakeBackend()
    token = store.leadership(3).hold() or ""
    submit(store, 1)

    def full(*_: Any) -> None:
        raise redis.OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'")

    monkeypatch.setattr(store.jobs, "resend_lost", full)
    scaler(store, backend).lead(token, full=True)
    assert backend.starts == 1  # the queued job's model got its replica all the same
