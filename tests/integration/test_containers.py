"""Containers people already have, each served by its own real server on a real Docker engine: Cog's server
(coglet), also streaming, KServe's ModelServer (Open Inference Protocol), the runpod SDK's realtime server. Plus
GPUs and a slow cold start."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.platform import TEST_IMAGE, Platform, events
from workers.config import parse_models
from workers.scaling.backends import DockerBackend, StartFailed
from workers.scaling.spec import ReplicaSpec

pytestmark = [pytest.mark.docker, pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
V2_ROWS = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                       "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]}
V2_BAD = {"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [5.1, 3.5, 1.4]}]}
# protocol: (good input, its output (or a part of it), bad input, the server's own message for it)
CASES: dict[str, tuple[Any, Callable[[Any], bool], Any, str]] = {
    "sentiment": ({"text": "a great and excellent day"}, lambda out: out == {"words": 5, "characters": 25, "score": 5},
                  {"text": "   "}, "ValueError: text has no words"),
    "iris-v2": (V2_ROWS, lambda out: out["outputs"][0]["data"] == ["setosa", "virginica"],
                V2_BAD, "expected rows of 4 measurements, got shape [3]"),
    "reverse": ({"text": "stressed"}, lambda out: out == {"reversed": "desserts", "vowels": 2},
                {"text": ""}, "ValueError: input.text must be a non-empty string"),
}


@pytest.fixture(scope="module")
def example_images(docker_client: Any) -> None:
    """The example images, built from examples/ (from cache when unchanged; pip reaches PyPI, nothing is pulled)."""
    build = subprocess.run([sys.executable, "-m", "workers.cli", "build"], cwd=ROOT, capture_output=True, text=True,
                           timeout=1200, check=False,
                           env={**os.environ, "SM_MODELS_FILE": str(EXAMPLES / "models.toml")})
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]


def examples_table(idle_timeout: float) -> str:
    """The example models, each twice: as shipped, and with its weights missing (its setup crashes)."""
    text = (EXAMPLES / "models.toml").read_text().replace("idle_timeout = 60", f"idle_timeout = {idle_timeout}")
    text = text.replace('build = "', f'build = "{EXAMPLES}/')
    crashing = []
    for block in text.split("\n[models.")[1:]:
        name, rest = block.split("]", 1)
        crashing.append(f'\n[models.{name}-broken]{rest.rstrip()}\nenv = {{ WEIGHTS = "/nowhere/weights.json" }}\n')
    return text + "".join(crashing)


def post(platform: Platform, model: str, body: Any, wait: float = 120) -> dict[str, Any]:
    """Submit a job and wait for it."""
    answer: dict[str, Any] = requests.post(f"{platform.url}/v1/models/{model}/jobs", json=body,
                                           params={"wait": wait}, timeout=wait + 30).json()
    return answer


def replicas(platform: Platform, model: str) -> list[dict[str, Any]]:
    """The model's replicas."""
    found: list[dict[str, Any]] = requests.get(f"{platform.url}/v1/models/{model}", timeout=10).json()["replicas"]
    return found


HELD_PREDICTOR = '''
import os
import time
from collections.abc import Iterator

from cog import BasePredictor, streaming


class Predictor(BasePredictor):
    @streaming
    def predict(self, text: str, pause: float = 0.0) -> Iterator[str]:
        first, *rest = text.split()
        yield first
        for _ in range(1200):  # the rest once the file "open" is there (at most 60 s)
            if os.path.exists("/src/open"):
                break
            time.sleep(0.05)
        yield from rest
'''


def test_a_streaming_cog_predictor_gives_each_output_as_it_comes(
        example_images: None, make_platform: Callable[..., Platform], tmp_path: Path) -> None:
    held = tmp_path / "held"
    (held / ".cog").mkdir(parents=True)
    shutil.copy(EXAMPLES / "cog-stream" / ".cog" / "openapi_schema.json", held / ".cog")
    (held / "predict.py").write_text(HELD_PREDICTOR)
    held.chmod(0o755)
    words = (EXAMPLES / "models.toml").read_text().split("[models.words]")[1].split("\n[models.")[0]
    table = f"[models.words]{words}\n[models.held]{words}volumes = [\"{held}:/src\"]\n"
    platform = make_platform(backend="docker", models=table).start("gateway", "worker", "autoscaler")

    said = post(platform, "words", {"text": "one word at a time"})
    assert said["status"] == "SUCCEEDED" and said["output"] == ["one", "word", "at", "a", "time"], said
    refused = post(platform, "words", {"text": "   "})
    assert refused["status"] == "FAILED" and "text has no words" in refused["error"]["message"], refused

    job = requests.post(f"{platform.url}/v1/models/held/jobs", json={"text": "first second third"}, timeout=10).json()
    with requests.get(f"{platform.url}/v1/jobs/{job['id']}/stream", stream=True, timeout=120) as stream:
        got = (event for event in events(stream) if event["event"] != "waiting")  # while its replica starts
        first = next(got)
        assert (first["event"], first["id"], json.loads(first["data"])) == ("part", "0", "first"), first
        running = requests.get(f"{platform.url}/v1/jobs/{job['id']}", timeout=10).json()
        assert running["status"] == "RUNNING", running  # the part came while the predictor waits for "open"
        (held / "open").touch()
        rest = list(got)
    assert [(e["event"], e["id"], json.loads(e["data"])) for e in rest[:-1]] == [("part", "1", "second"),
                                                                                ("part", "2", "third")]
    assert rest[-1]["event"] == "done" and json.loads(rest[-1]["data"])["output"] == ["first", "second", "third"]
    done = requests.get(f"{platform.url}/v1/jobs/{job['id']}", timeout=10).json()
    assert done["status"] == "SUCCEEDED" and done["output"] == ["first", "second", "third"], done


@pytest.mark.parametrize("model", list(CASES))
def test_a_container_with_its_own_server_serves_from_zero_and_back(
        model: str, example_images: None, make_platform: Callable[..., Platform]) -> None:
    good, check, bad, message = CASES[model]
    platform = make_platform(backend="docker", models=examples_table(idle_timeout=3))
    platform.start("gateway", "worker", "autoscaler")
    assert replicas(platform, model) == []

    succeeded = post(platform, model, good)
    assert succeeded["status"] == "SUCCEEDED" and check(succeeded["output"]), succeeded
    cold = requests.get(f"{platform.url}/v1/models/{model}", timeout=10).json()["cold_starts"][0]
    assert set(cold["stages"]) == {"placed", "created", "process_up", "ready", "first_result"}, cold
    assert abs(sum(cold["stages"].values()) - cold["total"]) < 1e-3 and succeeded["cold_start"] == cold, cold
    failed = post(platform, model, bad)
    assert failed["status"] == "FAILED" and message in failed["error"]["message"], failed
    crashed = post(platform, f"{model}-broken", good)
    assert crashed["status"] == "FAILED" and crashed["error"]["code"] == "replica_start_failed", crashed
    assert "No such file or directory: '/nowhere/weights.json'" in crashed["error"]["message"], crashed
    print(f"{model}: {succeeded['timings']}; cold start {cold['stages']}; "
          f"setup crash: {crashed['error']['message'][:300]}")
    platform.wait_until(lambda: replicas(platform, model) == [], 30, "the replica did not go after its idle timeout")


def test_gpus_reach_the_engine_as_a_device_request(docker_client: Any) -> None:
    models = parse_models({"models": {
        "one": {"image": TEST_IMAGE, "gpus": 1}, "chosen": {"image": TEST_IMAGE, "gpus": ["0", "2"]}}})
    client = RecordingClient(docker_client)
    for model in models.values():  # no GPU here: the container is created, and its start fails
        with pytest.raises(StartFailed, match="gpu"):
            DockerBackend(client, namespace="gpu-test").start(ReplicaSpec.of(model, model.name))
    one, chosen = ([request] for [request] in (c.attrs["HostConfig"]["DeviceRequests"] for c in client.created))
    assert (one[0]["Count"], one[0]["Capabilities"]) == (1, [["gpu"]])
    assert (chosen[0]["DeviceIDs"], chosen[0]["Capabilities"]) == (["0", "2"], [["gpu"]])
    assert docker_client.containers.list(all=True, filters={"label": "serverless-model.namespace=gpu-test"}) == []


class RecordingClient:
    """A Docker client that keeps the containers it created (as the engine inspected them then)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.api = real.api
        self.created: list[Any] = []

    @property
    def containers(self) -> "RecordingClient":
        return self

    def create(self, *args: Any, **kwargs: Any) -> Any:
        self.created.append(self.real.containers.create(*args, **kwargs))
        return self.created[-1]

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self.real.containers.get(*args, **kwargs)


SLOW = f"""
[models.slow]
image = "{TEST_IMAGE}"
command = ["python", "-m", "model.server"]
concurrency = 1
max_replicas = 3
start_timeout = 120
queue_timeout = 5
cold_start_seed = 60
idle_timeout = 60
env = {{ MODEL_CLASS = "testmodels:SlowSetup", SETUP_SECONDS = "20" }}
"""


def test_a_replica_that_takes_20_s_to_load_starts_once_and_shows_its_progress(
        docker_client: Any, make_platform: Callable[..., Platform]) -> None:
    platform = make_platform(backend="docker", models=SLOW).start("gateway", "worker", "autoscaler")
    seen: list[dict[str, Any]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.extend(replicas(platform, "slow"))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    results: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda i=i: results.append(post(platform, "slow", {"i": i}, wait=90)))
               for i in range(4)]
    for thread in threads:
        thread.start()
    def shards(replica: dict[str, Any]) -> int:
        return sum(line.startswith("loading shard") for line in replica["log"]) if replica["state"] == "STARTING" else 0

    platform.wait_until(lambda: any(shards(r) >= 3 for r in seen), 40,
                        "the model detail never showed the starting replica's log")
    starting = next(r for r in seen if shards(r) >= 3)
    logs = requests.get(f"{platform.url}{starting['links']['logs']}", params={"tail": 3}, timeout=30).json()
    for thread in threads:
        thread.join(120)
    stop.set()
    watcher.join()

    assert [r["status"] for r in results] == ["SUCCEEDED"] * 4, results  # none failed at its 5 s queue timeout
    assert len({r["id"] for r in seen}) == 1  # exactly one replica was ever started
    assert starting["age"] > 0
    assert len(logs["lines"]) == 3 and all("loading shard" in line for line in logs["lines"])
    assert len(docker_client.containers.list(all=True, filters={"label": "serverless-model=slow"})) == 1
