"""Fixtures of the integration tier: a real Redis server, the platform's real processes, a real Docker engine."""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.platform import TEST_IMAGE, TEST_MODELS, Platform, remove_containers, unavailable
from workers.embedded import start_embedded_redis
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
