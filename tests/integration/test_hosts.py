"""GET /v1/hosts on a real Redis: the hosts a leader's sweep saved, with the replicas on each; the gateway app runs
in this process, the replica is a real local process."""

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient

from gateway.app import create_app
from gateway.auth import digest
from workers.config import ModelConfig, Settings
from workers.scaling.autoscaler import Autoscaler
from workers.scaling.backends import ProcessBackend
from workers.scaling.pidfiles import new_replica_id
from workers.scaling.readiness import ReadinessProbe
from workers.scaling.spec import ReplicaSpec
from workers.store import Store, keys
from workers.store.records import Host

pytestmark = pytest.mark.integration
KEY = {"Authorization": "Bearer k"}
MODEL = ModelConfig(name="m", command=[sys.executable, "-c", "import time; time.sleep(60)"])


@pytest.fixture
def gateway(tmp_path: Path, redis_url: str) -> FlaskClient:
    """The gateway app in this process, serving model ``m``, with one API key: ``k``."""
    models = tmp_path / "models.toml"
    models.write_text('[models.m]\ncommand = ["serve"]\n')
    return create_app(Settings(redis_url=redis_url, models_file=models, api_keys=digest("k"))).test_client()


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[ProcessBackend]:
    """Replicas as local processes; whatever they left running is stopped afterwards."""
    backend = ProcessBackend(tmp_path, tmp_path / "logs", "hosts", grace=1.0)
    yield backend
    for launched in backend.running().values():
        backend.stop(launched.handle)


def summary(replica_id: str, model: str, state: str) -> dict[str, str]:
    """A replica as the host list shows it."""
    return {"id": replica_id, "model": model, "state": state}


def test_the_hosts_a_sweep_saved_are_listed_with_the_replicas_on_each(gateway: FlaskClient, store: Store,
                                                                      backend: ProcessBackend) -> None:
    token = store.leadership(30).hold()
    assert token
    running = new_replica_id()
    assert store.replicas.add(token, running, "m", backend.name)
    launched = backend.start(ReplicaSpec.of(MODEL, running))
    assert store.replicas.launched(token, running, launched.endpoint, launched.handle, launched.host)
    Autoscaler({"m": MODEL}, store, backend, ReadinessProbe()).sweep(token, adopting=False)
    assert store.replicas.add(token, "starting", "m", backend.name)  # not launched yet: on no host
    assert store.replicas.add(token, "removed", "gone", backend.name)  # of a model no longer in the models file
    assert store.replicas.launched(token, "removed", "http://127.0.0.1:1", "1", socket.gethostname())
    assert store.replicas.add(token, "elsewhere", "m", backend.name)
    assert store.replicas.launched(token, "elsewhere", "http://10.0.0.9:1", "2", "a-machine-not-listed")

    response = gateway.get("/v1/hosts", headers=KEY)
    assert response.status_code == 200, response.text
    body = response.get_json()
    [host] = body["hosts"]
    assert host["name"] == socket.gethostname() and host["state"] == "ready" and host["address"] == "127.0.0.1"
    assert host["cpus"] >= 1 and host["memory"] > 0 and host["gpus"] == []
    assert host["replicas"] == [summary(running, "m", "STARTING"), summary("removed", "gone", "STARTING")]
    assert body["unplaced"] == [summary("starting", "m", "STARTING"), summary("elsewhere", "m", "STARTING")]
    assert body["seen_at"] is not None


def test_no_hosts_saved_lists_none(gateway: FlaskClient, store: Store) -> None:
    store.replicas.add(store.leadership(30).hold() or "", "starting", "m", "process")
    response = gateway.get("/v1/hosts", headers=KEY)
    assert response.status_code == 200
    assert response.get_json() == {"hosts": [], "seen_at": None, "unplaced": [summary("starting", "m", "STARTING")]}


def test_the_hosts_need_a_key(gateway: FlaskClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = gateway.get("/v1/hosts", headers=headers)
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "unauthorized"


def test_only_the_leader_saves_the_hosts_and_they_expire(store: Store, client: "redis.Redis") -> None:
    host = Host("node-a", "ready", "10.0.0.1", 8.0, 32 << 30, ("GPU-aaa", "GPU-bbb"), "manager", "active")
    assert not store.replicas.save_hosts("not-the-leader", [host])
    assert store.replicas.hosts() is None
    assert store.replicas.save_hosts(store.leadership(30).hold() or "", [host], ttl=30)
    seen = store.replicas.hosts()
    assert seen is not None and seen.hosts == (host,) and abs(seen.at - store.now()) < 5
    assert 0 < client.ttl(keys.HOSTS) <= 30
