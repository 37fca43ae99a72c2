"""Fixtures of the integration tier: a real Redis server, the platform's real processes, a real Docker engine."""

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration import swarm_rig
from tests.integration.platform import TEST_IMAGE, TEST_MODELS, Platform, remove_containers, unavailable
from tests.integration.swarm_rig import SwarmRig
from workers.embedded import start_embedded_redis
from workers.scaling.backends import NAMESPACE_LABEL
from workers.store import Store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis server with append-only persistence: Debian's redis-server (the oldest Redis we support) when
    installed, else the bundled Valkey."""
    url, process = start_embedded_redis(tmp_path_factory.mktemp("redis"), binary=shutil.which("redis-server"))
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The real Redis, emptied before the test."""
    redis.Redis.from_url(redis_server).flushall()
    return redis_server


@pytest.fixture
def client(redis_url: str) -> "redis.Redis":
    """A decoding client of the test's Redis."""
    return redis.Redis.from_url(redis_url, decode_responses=True)


@pytest.fixture
def store(client: "redis.Redis") -> Store:
    """The platform's store on the test's Redis."""
    return Store.of(client, retention=60)


@pytest.fixture
def make_platform(tmp_path: Path, redis_url: str) -> Iterator[Callable[..., Platform]]:
    """Make platforms for this test; everything they started is stopped afterwards."""
    made: list[Platform] = []

    def make(backend: str = "process", idle_timeout: float = 3, models: str = "") -> Platform:
        platform = Platform(tmp_path, redis_url, backend, idle_timeout, models)
        made.append(platform)
        return platform

    yield make
    for platform in made:
        platform.clean_up()


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A client of a running Docker engine, with the example and test images built (from cache if unchanged)."""
    try:
        import docker

        client = docker.from_env()
        client.ping()
    except Exception as exc:
        unavailable(f"no Docker engine ({exc})")
    build = subprocess.run([sys.executable, "-m", "workers.cli", "build"], cwd=ROOT, capture_output=True, text=True,
                           timeout=900, check=False, env={**os.environ, "SM_MODELS_FILE": str(ROOT / "models.toml")})
    assert build.returncode == 0, build.stdout + build.stderr
    client.images.build(path=str(TEST_MODELS), tag=TEST_IMAGE, network_mode="host", pull=False, rm=True)
    yield client
    remove_containers()


@pytest.fixture(scope="session")
def swarm(docker_client: Any) -> Iterator[SwarmRig]:
    """A swarm of three hosts on this machine (GPUs: one on host 2, two on host 3), the test image on each;
    removed at the end, even when a test failed."""
    if why := swarm_rig.missing():
        unavailable(why)
    rig = SwarmRig(Path(f"/tmp/{swarm_rig.PREFIX}-rig"), gpus={2: ["GPU-ccc"], 3: ["GPU-aaa", "GPU-bbb"]})
    try:
        yield rig.up(images=[TEST_IMAGE])
    finally:
        rig.down()


@pytest.fixture(scope="session")
def swarm_redis_server(swarm: SwarmRig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis on the rig's bridge, which the root namespace and every host reach (with a password, as off
    loopback it must have)."""
    url, process = start_embedded_redis(tmp_path_factory.mktemp("swarm-redis"), binary=shutil.which("redis-server"),
                                        address=swarm.gateway, password=secrets.token_hex(16))
    yield url
    process.terminate()
    process.wait(10)


@pytest.fixture
def make_swarm_platform(tmp_path: Path, swarm: SwarmRig, swarm_redis_server: str) -> Iterator[Callable[..., Platform]]:
    """Make platforms on the swarm for this test (the autoscaler drives host 1, the manager); their processes and
    services are removed afterwards."""
    redis.Redis.from_url(swarm_redis_server).flushall()
    made: list[Platform] = []

    def make(models: str = "", idle_timeout: float = 3) -> Platform:
        platform = Platform(tmp_path, swarm_redis_server, "swarm", idle_timeout, models)
        platform.env["DOCKER_HOST"] = swarm.socket(1)
        made.append(platform)
        return platform

    yield make
    for platform in made:
        platform.clean_up()
        for service in swarm.engine(1).services.list(filters={"label": f"{NAMESPACE_LABEL}={platform.namespace}"}):
            service.remove()


class Clock:
    """Time moved by hand (a store's clock in place of Redis TIME)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    """The test's clock."""
    return Clock()
