"""Settings from the environment and the models declared in ``models.toml``."""

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.store import keys

MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # a model's name: in URLs, queue names and Redis keys


class ModelConfig(BaseModel):
    """One served model, as declared in the models file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=MODEL_NAME)
    protocol: Literal["native"] = "native"  # how replicas are called and probed (workers/protocols)
    command: list[str] = []  # process backend: the replica's command line ("python" = this interpreter)
    image: str = ""  # docker backend: a locally built image; never pulled
    port: PositiveInt = 8000  # the port the server listens on inside a container on a user network
    concurrency: PositiveInt = 1  # requests one replica serves at once
    min_replicas: int = Field(0, ge=0)  # replicas kept warm
    max_replicas: PositiveInt = 1  # replicas at most
    idle_timeout: PositiveFloat = 60  # seconds an idle replica lives before it is stopped
    request_timeout: PositiveFloat = 30  # seconds one inference request may take
    start_timeout: PositiveFloat = 60  # seconds a replica may take to become ready
    queue_timeout: PositiveFloat = 600  # seconds a job may wait for a replica before it fails
    max_attempts: PositiveInt = 3  # tries of a job whose replica or worker died under it
    max_queued: PositiveInt = 10_000  # jobs waiting at most; past it submits get 429
    on_start_failure: Literal["fail", "wait"] = "fail"  # waiting jobs when a replica fails to start
    cold_start_seed: PositiveFloat = 5.0  # seconds assumed for a cold start until one is measured
    service_time_seed: PositiveFloat = 1.0  # seconds assumed per request until one is measured
    memory: str = "1g"  # docker: memory limit of a replica
    cpus: PositiveFloat = 1.0  # docker: CPU limit of a replica
    pids: PositiveInt = 256  # docker: process limit of a replica
    example_input: Any = None  # a body that works, shown to newcomers by GET /v1/models/<model>
    env: dict[str, str] = {}  # extra environment for the replica

    @property
    def queue(self) -> str:
        """The Celery queue of this model's jobs."""
        return keys.celery_queue(self.name)


class Settings(BaseSettings):
    """Everything configurable, from ``SM_*`` environment variables (``REDIS_URL`` too)."""

    model_config = SettingsConfigDict(env_prefix="SM_", populate_by_name=True)

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_URL", "SM_REDIS_URL", "redis_url")
    )  # broker and job store
    models_file: Path = Path("models.toml")  # where models are declared
    backend: Literal["process", "docker"] = "process"  # how replicas run
    docker_network: str = "host"  # docker backend: "host", or a user network such as compose's
    docker_timeout: PositiveFloat = 30  # docker backend: seconds before a Docker API call counts as failed
    job_retention: PositiveFloat = 24 * 3600  # seconds a finished job is kept
    max_body_bytes: PositiveInt = 1024 * 1024  # largest request body the gateway accepts
    max_wait: PositiveFloat = 300  # longest ?wait= a client may ask for
    scale_interval: PositiveFloat = 0.5  # seconds between autoscaler ticks
    data_dir: Path = Path(".serverless-model")  # embedded Redis data and replica logs
    namespace: str = "default"  # tells this platform's replicas from another's on the same host
    job_lease: PositiveFloat = 5.0  # seconds a worker's claim on a job lives unless renewed
    leader_lease: PositiveFloat = 3.0  # seconds the autoscaler lease lives unless renewed (failover time)
    redis_fsync: Literal["always", "everysec", "no"] = "always"  # embedded Redis: "always" loses no acknowledged write
    api_keys: str = ""  # comma-separated SHA-256 hex digests of the accepted API keys; empty: no auth
    rate_limit: float = Field(0, ge=0)  # requests per second per API key; 0: unlimited
    auth_failures_per_minute: PositiveInt = 20  # failed authentications per client address; past it 429
    max_waiters: PositiveInt = 24  # requests of one gateway process (32 threads) in ?wait at once; past it 202 at once
    max_waiters_per_key: PositiveInt = 16  # the same, per API key
    max_output_bytes: PositiveInt = 10 * 1024 * 1024  # largest answer taken from a replica

    def load_models(self) -> dict[str, ModelConfig]:
        """The models declared in the models file, by name."""
        return parse_models(tomllib.loads(self.models_file.read_text()))


def parse_models(document: dict[str, Any]) -> dict[str, ModelConfig]:
    """Models from a parsed models file (``[models.<name>]`` tables)."""
    tables = document.get("models", {})
    return {name: ModelConfig(name=name, **table) for name, table in tables.items()}
