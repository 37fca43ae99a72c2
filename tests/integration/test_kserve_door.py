"""The KServe door, driven by tritonclient's ``InferenceServerClient`` unchanged, on the production server with a
worker, an autoscaler and KServe's own ModelServer in a container (examples/kserve) started from zero."""

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from gateway.auth import digest
from tests.integration.platform import Platform
from workers.store import keys

pytestmark = [pytest.mark.docker, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]
IMAGE = "serverless-model/example-kserve:latest"
KEY = "kserve-key-0123456789"


def auth() -> dict[str, str]:
    """The key's header, a new dict each call (tritonclient's infer adds its own headers to the one it is given)."""
    return {"Authorization": f"Bearer {KEY}"}


IRIS_V2 = f"""
[models.iris-v2]
protocol = "kserve"
served_name = "iris"
image = "{IMAGE}"
memory = "2g"
idle_timeout = 30
start_timeout = 120
[models.iris-v2.example_input]
inputs = [{{ name = "measurements", shape = [1, 4], datatype = "FP32", data = [6.7, 3.0, 5.2, 2.3] }}]
"""
ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)


@pytest.fixture(scope="module")
def kserve_image(docker_client: Any) -> None:
    """The KServe example image, built from examples/kserve (from cache when unchanged; nothing is pulled)."""
    build = subprocess.run(["docker", "build", "--network", "host", "-t", IMAGE, str(ROOT / "examples" / "kserve")],
                           capture_output=True, text=True, timeout=1200, check=False)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]


@pytest.fixture
def served(kserve_image: None, make_platform: Callable[..., Platform]) -> Iterator[tuple[Platform, Any]]:
    """A platform with API keys serving the KServe model on Docker, and a tritonclient of its gateway."""
    platform = make_platform(backend="docker", models=IRIS_V2)
    platform.env.update(SM_API_KEYS=digest(KEY))
    platform.start("gateway", "worker", "autoscaler")
    client = triton.InferenceServerClient(url=platform.url.removeprefix("http://"), network_timeout=180)
    try:
        yield platform, client
    finally:
        client.close()


def inputs(binary: bool = False) -> tuple[list[Any], list[Any]]:
    """The two rows as a V2 input, and the species asked for."""
    measurements = triton.InferInput("measurements", list(ROWS.shape), "FP32")
    measurements.set_data_from_numpy(ROWS, binary_data=binary)
    return [measurements], [triton.InferRequestedOutput("species", binary_data=binary)]


def replicas(platform: Platform) -> list[Any]:
    """The model's replicas, by the native API."""
    found: list[Any] = requests.get(f"{platform.url}/v1/models/iris-v2", headers=auth(), timeout=10).json()["replicas"]
    return found


def test_tritonclient_readiness_and_infer_from_zero(served: tuple[Platform, Any]) -> None:
    platform, client = served
    assert client.is_server_live() and client.is_server_ready()
    assert replicas(platform) == []
    assert client.is_model_ready("iris-v2", headers=auth())  # at zero replicas: served on demand
    metadata = client.get_model_metadata("iris-v2", headers=auth())
    assert metadata["inputs"] == [{"name": "measurements", "datatype": "FP32", "shape": [-1, 4]}]
    tensors, outputs = inputs()
    result = client.infer("iris-v2", tensors, outputs=outputs, headers=auth())
    assert [str(s) for s in result.as_numpy("species")] == ["setosa", "virginica"]
    assert result.get_response()["model_name"] == "iris-v2"
    assert [r["state"] for r in replicas(platform)] == ["READY"]


def test_refusals_in_the_protocols_shape_record_nothing(served: tuple[Platform, Any], client: "redis.Redis") -> None:
    platform, triton_client = served
    tensors, outputs = inputs(binary=True)
    with pytest.raises(InferenceServerException, match="binary_data=False"):
        triton_client.infer("iris-v2", tensors, outputs=outputs, headers=auth())
    tensors, outputs = inputs()
    with pytest.raises(InferenceServerException, match="does not speak the Open Inference Protocol"):
        triton_client.infer("iris", tensors, outputs=outputs, headers=auth())  # the native iris model
    assert not triton_client.is_model_ready("iris-v2")  # no key: 401
    for body, status in ((b'{"inputs": []}', 422), (b'{"inputs": [{"name": "x"}]}', 422), (b"{not json", 400),
                         (b'[1, 2]', 422)):
        answer = requests.post(f"{platform.url}/v2/models/iris-v2/infer", data=body, headers=auth(), timeout=10)
        assert answer.status_code == status and isinstance(answer.json()["error"], str), answer.text
    assert client.llen(keys.celery_queue("iris-v2")) == 0 and not list(client.scan_iter(keys.job("*")))
    assert replicas(platform) == []
