"""Many hosts, in the store: a worker takes a free slot on a replica of its own host first, else any."""

from workers.store import Store
from workers.store.records import Started


def replicas_on(store: Store, hosts: dict[str, str], concurrency: int = 1) -> str:
    """READY replicas of model m, id → hostname; the leader's token."""
    token = store.leadership(30).hold()
    assert token
    for replica_id, host in hosts.items():
        assert store.replicas.add(token, replica_id, "m", "swarm")
        assert store.replicas.launched(token, replica_id, f"http://10.0.0.1/{replica_id}", replica_id, host)
        assert store.replicas.ready(token, replica_id, concurrency) is not None
    return token


def started_on(store: Store, host: str, token: str) -> Started:
    """Submit a job and start it from a worker on ``host``."""
    job = store.jobs.submit(store.jobs.new("m", {"x": 1}), 0)
    assert job is not None
    started = store.jobs.start(job.id, token, 5, f"w@{host}", True, host)
    assert isinstance(started, Started), started
    return started


def test_a_worker_takes_a_slot_on_its_own_host_first_then_the_least_loaded_elsewhere(store: Store) -> None:
    replicas_on(store, {"ra": "a", "rb": "b", "rc": "c"}, concurrency=2)
    assert [started_on(store, "b", f"t{n}").slot.replica_id for n in range(2)] == ["rb", "rb"]  # while it has room
    assert started_on(store, "b", "t2").slot.replica_id in ("ra", "rc")  # then any, the least loaded
    assert started_on(store, "c", "t3").slot.replica_id == "rc"
    assert started_on(store, "", "t4").slot.replica_id == "ra"  # a worker of no known host: the least loaded
    assert {r.id: r.host for r in store.replicas.of("m")} == {"ra": "a", "rb": "b", "rc": "c"}


def test_a_job_whose_replica_failed_moves_to_another_replica_of_its_workers_host(store: Store) -> None:
    replicas_on(store, {"rb1": "b", "ra": "a", "rb2": "b"})
    started = started_on(store, "b", "t")
    first = started.slot.replica_id
    assert first in ("rb1", "rb2")
    moved = store.jobs.retry(started.job.id, "t", first, "connection refused", True, 3, 5, "w@b", "b")
    assert isinstance(moved, Started)
    assert moved.slot.replica_id == ({"rb1", "rb2"} - {first}).pop()
