"""The Docker backend on a real Docker engine: the example image builds locally, a job runs in a container."""

from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.integration.platform import Platform
from workers.config import ModelConfig
from workers.scaling.spec import ReplicaSpec

pytestmark = [pytest.mark.docker, pytest.mark.integration]


def labelled(client: object) -> list[object]:
    """Our containers."""
    return list(client.containers.list(all=True, filters={"label": "serverless-model"}, ignore_removed=True))  # type: ignore[attr-defined]


def test_job_runs_through_a_container_replica(make_platform: Callable[..., Platform], docker_client: object) -> None:
    assert labelled(docker_client) == []
    platform = make_platform(backend="docker", idle_timeout=3).start("gateway", "worker", "autoscaler")

    response = requests.post(f"{platform.url}/v1/models/iris/jobs?wait=90",
                             json={"features": [[5.9, 3.0, 4.2, 1.5]]}, timeout=100)

    job = response.json()
    assert response.status_code == 200, job
    assert job["status"] == "SUCCEEDED" and job["output"]["predictions"] == ["versicolor"]
    containers = labelled(docker_client)
    assert len(containers) == 1
    container = containers[0]
    assert container.labels["serverless-model.replica"] == job["replica"]  # type: ignore[attr-defined]
    config = container.attrs["HostConfig"]  # type: ignore[attr-defined]
    assert config["NetworkMode"] == "host" and config["ReadonlyRootfs"] and config["CapDrop"] == ["ALL"]
    assert config["SecurityOpt"] == ["no-new-privileges"] and config["Tmpfs"] == {"/tmp": "size=64m"}
    assert (config["Memory"], config["NanoCpus"], config["PidsLimit"]) == (2**30, 10**9, 256)
    assert container.attrs["Config"]["User"] == "65534:65534"  # type: ignore[attr-defined]
    replica = requests.get(f"{platform.url}/v1/models/iris", timeout=5).json()["replicas"][0]
    assert replica["endpoint"].startswith("http://127.0.0.1:")

    platform.wait_until(lambda: labelled(docker_client) == [], 30, "the idle container was not removed")


def test_missing_image_is_reported_and_never_pulled(docker_client: Any) -> None:
    from workers.scaling.backends import DockerBackend, StartFailed

    api, posted = docker_client.api, []
    real_post = api._post

    def recording_post(url: str, *args: Any, **kwargs: Any) -> Any:
        posted.append(url)
        return real_post(url, *args, **kwargs)

    api._post = recording_post  # every request the engine gets that changes something
    try:
        with pytest.raises(StartFailed, match="not found locally"):
            DockerBackend(docker_client).start(
                ReplicaSpec.of(ModelConfig(name="ghost", image="serverless-model/nope:latest"), "a"))
    finally:
        del api._post
    assert any(url.endswith("/containers/create") for url in posted), posted  # the engine was asked to create
    assert not any("/images/create" in url for url in posted), posted  # and never to pull
