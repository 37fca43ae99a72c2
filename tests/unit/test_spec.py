"""The backend-neutral replica spec: what every backend tells a replica, filled in where it listens."""

from workers.config import ModelConfig
from workers.scaling.spec import ReplicaSpec, Resources


def test_a_spec_tells_the_replica_where_to_listen_once_the_backend_chose() -> None:
    model = ModelConfig(name="m", protocol="runpod", command=["python", "-m", "x", "--port", "{port}"],
                        args=["--bind", "{host}:{port}", "{json}"], concurrency=3,
                        env={"URL": "http://{host}:{port}/", "RAW": "{port"})
    spec = ReplicaSpec.of(model, "r1")
    assert (spec.model, spec.replica_id) == ("m", "r1")
    assert spec.environment("10.0.0.2", 9001) == {
        "HOST": "10.0.0.2", "PORT": "9001", "CONCURRENCY": "3", "RUNPOD_REALTIME_PORT": "9001",
        "RUNPOD_ENDPOINT_ID": "serverless-model", "URL": "http://10.0.0.2:9001/", "RAW": "{port"}
    assert spec.entrypoint("h", 1) == ["python", "-m", "x", "--port", "1"]
    assert spec.arguments("h", 1) == ["--bind", "h:1", "{json}"]  # only {port} and {host} are filled


def test_a_spec_carries_the_models_limits_volumes_and_gpus() -> None:
    model = ModelConfig(name="m", image="i:1", volumes=["/w:/weights"], gpus=["0", "2"], cpus=2, memory="4g",
                        pids=64, shm_size="1g", port=7000)
    spec = ReplicaSpec.of(model, "r1")
    assert (spec.image, spec.volumes, spec.gpus, spec.port) == ("i:1", ("/w:/weights",), ("0", "2"), 7000)
    assert spec.resources == Resources(cpus=2, memory="4g", pids=64, shm_size="1g")
    assert ReplicaSpec.of(ModelConfig(name="m", gpus=2), "r2").gpus == 2
