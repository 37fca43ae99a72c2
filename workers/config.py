"""Settings from the environment and the models declared in ``models.toml``."""

import base64
import binascii
import ipaddress
import re
import tomllib
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.job import JobOptions, Priority
from workers.store import urls

MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # a model's name: in URLs, queue names and Redis keys
VOLUME = r"^/[^:]*:/[^:]*$"  # "/host/path:/container/path"
CONSTRAINT = r"^(node|engine)\.[A-Za-z0-9_.-]+ ?(==|!=) ?[^\s=!]+$"  # a Swarm constraint: "node.labels.gpu==a100"
PLACEHOLDER = re.compile(r"\{(port|host)\}")
PLATFORM_ENV = frozenset({"HOST", "PORT", "CONCURRENCY", "RUNPOD_REALTIME_PORT", "RUNPOD_ENDPOINT_ID",
                          "SM_REPLICA_ID", "SM_REPLICA_NAMESPACE"})  # what the platform tells a replica itself


class Calls(BaseModel):
    """How a model's replicas are called and probed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: Literal["native", "cog", "kserve", "runpod", "http"] = "native"  # how replicas are called and probed
    served_name: str = Field("", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]*)?$")  # kserve: name in the server ("" = ours)
    predict_path: str = Field("", pattern=r"^(/\S*)?$")  # http: where a job's body is POSTed
    health_path: str = Field("", pattern=r"^(/\S*)?$")  # http: what is probed for readiness
    ready_statuses: list[Annotated[int, Field(ge=100, le=599)]] = Field([200], min_length=1)  # http: ready statuses
    stream: bool = False  # cog: ask for Server-Sent Events (a predictor marked @cog.streaming): parts as they come

    @model_validator(mode="after")
    def complete(self) -> "Calls":
        """What a protocol needs is there."""
        if self.protocol == "http" and not (self.predict_path and self.health_path):
            raise ValueError("protocol 'http' needs predict_path and health_path")
        if self.stream and self.protocol != "cog":
            raise ValueError("stream is for protocol 'cog' (a native generator predict streams by itself)")
        return self


class Runtime(BaseModel):
    """How one replica of a model runs: what is started, with what, within which limits, and where."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command: list[str] = []  # process: the command line ("python" = this interpreter); docker: the entrypoint
    args: list[str] = []  # arguments after the command (docker: instead of the image's CMD); {port}, {host}
    image: str = ""  # docker backend: a locally built image; never pulled
    build: str = ""  # folder with the image's Dockerfile, relative to the models file (serverless-model build)
    port: int = Field(8000, ge=1, le=65535)  # the server's port in a container on a user network
    env: dict[str, str] = {}  # environment for the replica; values may use {port} and {host}
    volumes: list[Annotated[str, Field(pattern=VOLUME)]] = []  # docker: "/host/path:/container/path", read-only
    shm_size: str = Field("", pattern=r"^(\d+[bkmg]?)?$")  # docker: size of /dev/shm ("2g"); "" = Docker's
    gpus: StrictInt | list[str] = Field(0)  # docker: how many GPUs, or which device ids (a device request, gpu)
    memory: str = Field("1g", pattern=r"^[1-9]\d*[bkmg]?$")  # docker: memory limit of a replica
    cpus: float = Field(1.0, ge=0.01)  # docker: CPU limit of a replica
    pids: PositiveInt = 256  # docker: process limit of a replica
    constraints: list[Annotated[str, Field(pattern=CONSTRAINT)]] = []  # swarm: where replicas may run

    @field_validator("gpus")
    @classmethod
    def some_gpus(cls, gpus: int | list[str]) -> int | list[str]:
        """A count from 0, or a non-empty list of device ids."""
        if (isinstance(gpus, int) and gpus < 0) or (isinstance(gpus, list) and not all(gpus)):
            raise ValueError("a count of GPUs (0 or more) or a list of device ids")
        return gpus

    @field_validator("env")
    @classmethod
    def plain_environment(cls, env: dict[str, str]) -> dict[str, str]:
        """Names a shell would take, no NUL in values, and none of the names the platform sets itself."""
        for name, value in env.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or "\0" in value:
                raise ValueError(f"{name!r}: a variable name of letters, digits and _, and a value without NUL")
            if name in PLATFORM_ENV:
                raise ValueError(f"{name} is set by the platform; allowed: any other name")
        return env

    @field_validator("volumes")
    @classmethod
    def mountable(cls, volumes: list[str]) -> list[str]:
        """Each a distinct target, none over / or the replica's writable /tmp."""
        targets = [volume.split(":", 1)[1].rstrip("/") or "/" for volume in volumes]
        for target in targets:
            if target in ("/", "/tmp") or target.startswith("/tmp/"):
                raise ValueError(f"cannot mount over {target}; allowed: any other absolute path")
        if len(set(targets)) != len(targets):
            raise ValueError("two volumes with one target")
        return volumes


class Scaling(BaseModel):
    """How many replicas a model has, and what the policy assumes until it has measured."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    concurrency: PositiveInt = 1  # requests one replica serves at once
    min_replicas: int = Field(0, ge=0)  # replicas kept warm
    max_replicas: PositiveInt = Field(1, validate_default=True)  # replicas at most (min_replicas or more)
    idle_timeout: PositiveFloat = 60  # seconds an idle replica lives before it is stopped
    start_timeout: float = Field(60, gt=0, le=3600)  # seconds a replica may take to become ready (up to an hour)
    cold_start_seed: PositiveFloat = 5.0  # seconds assumed for a cold start until one is measured
    service_time_seed: PositiveFloat = 1.0  # seconds assumed per request until one is measured

    @field_validator("max_replicas")
    @classmethod
    def room_for_the_minimum(cls, most: int, info: ValidationInfo) -> int:
        """At least ``min_replicas`` (replicas kept warm never exceed the maximum)."""
        least = info.data.get("min_replicas", 0)
        if most < least:
            raise ValueError(f"max_replicas {most} is below min_replicas {least}; allowed: {least} or more")
        return most

    @property
    def seeds(self) -> dict[str, float]:
        """The moving averages assumed until measured."""
        return {"service_time": self.service_time_seed, "cold_start": self.cold_start_seed}


class Jobs(BaseModel):
    """How a model's jobs wait, run and fail."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_timeout: PositiveFloat = 30  # seconds one inference request may take, answer included
    queue_timeout: PositiveFloat = 600  # seconds a job may wait, none starting (since the last start), then fails
    max_attempts: PositiveInt = 3  # tries of a job whose replica or worker died under it
    max_queued: PositiveInt = 10_000  # jobs waiting at most; past it submits get 429
    max_queued_per_key: PositiveInt = 1_000  # jobs of one API key not started yet at most; past it its submits 429
    on_start_failure: Literal["fail", "wait"] = "fail"  # waiting jobs when a replica fails to start
    ttl: PositiveFloat | None = None  # a job's default: seconds it may wait to start, then FAILED expired (none: none)
    execution_timeout: PositiveFloat | None = None  # a job's default bound on its run (none: request_timeout)
    priority_aging: float = Field(60, ge=0)  # seconds a high job is ranked ahead (a low one behind) of its submit

    @model_validator(mode="after")
    def runs_within_the_request_timeout(self) -> "Jobs":
        """An execution timeout at most the request timeout (which bounds every call)."""
        if self.execution_timeout is not None and self.execution_timeout > self.request_timeout:
            raise ValueError(f"execution_timeout {self.execution_timeout:g} is over request_timeout "
                             f"{self.request_timeout:g}; allowed: up to it")
        return self

    def options(self, ttl: float | None, execution_timeout: float | None,
                priority: Priority = Priority.NORMAL) -> "JobOptions":
        """A job's options: what it asked for, else the model's defaults; its execution timeout at most the
        request timeout."""
        run = execution_timeout if execution_timeout is not None else self.execution_timeout
        return JobOptions(ttl=ttl if ttl is not None else self.ttl,
                          execution_timeout=None if run is None else min(run, self.request_timeout),
                          priority=priority)


class Docs(BaseModel):
    """What newcomers are shown of a model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    example_input: Any = None  # a body that works, shown to newcomers by GET /v1/models/<model>


SECTIONS: dict[str, type[BaseModel]] = {"calls": Calls, "runtime": Runtime, "scaling": Scaling, "jobs": Jobs,
                                        "docs": Docs}  # a model's sections, by attribute
SECTION_OF = {key: section for section, kind in SECTIONS.items() for key in kind.model_fields}  # flat key: section


class ModelConfig(BaseModel):
    """One served model, as declared in the models file (``[models.<name>]``): its name and its sections.

    The models file and the constructor take the flat table (``ModelConfig(name="m", image="i", concurrency=2)``);
    each key goes to its section (``model.scaling.concurrency``). A section may also be given whole.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=MODEL_NAME)
    calls: Calls = Field(default_factory=Calls)
    runtime: Runtime = Field(default_factory=Runtime)
    scaling: Scaling = Field(default_factory=Scaling)
    jobs: Jobs = Field(default_factory=Jobs)
    docs: Docs = Field(default_factory=Docs)

    @model_validator(mode="before")
    @classmethod
    def sectioned(cls, data: Any) -> Any:
        """A flat table's keys grouped by section (unknown keys are left for pydantic to refuse)."""
        if not isinstance(data, dict):
            return data
        grouped: dict[str, Any] = {key: value for key, value in data.items() if key not in SECTION_OF}
        for key, value in data.items():
            if (section := SECTION_OF.get(key)) is not None:
                if section in data:
                    raise ValueError(f"{section} is given whole and {key} beside it; allowed: one or the other")
                grouped.setdefault(section, {})[key] = value
        return grouped

    @property
    def served(self) -> str:
        """The model's name inside its server (kserve)."""
        return self.calls.served_name or self.name


def fill(text: str, port: int, host: str) -> str:
    """``text`` with exactly ``{port}`` and ``{host}`` filled in (other braces, as in JSON, stay as they are)."""
    return PLACEHOLDER.sub(lambda found: str(port) if found[1] == "port" else host, text)


class Settings(BaseSettings):
    """Everything configurable, from ``SM_*`` environment variables (``REDIS_URL`` too)."""

    model_config = SettingsConfigDict(env_prefix="SM_", populate_by_name=True, hide_input_in_errors=True)

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", validation_alias=AliasChoices("REDIS_URL", "SM_REDIS_URL", "redis_url")
    )  # broker and job store; sentinel://host:port[,host:port…][/db]?master=name for Sentinels
    redis_replicas: int = Field(0, ge=0)  # Redis replicas that must hold a submit before it is accepted (WAIT)
    models_file: Path = Path("models.toml")  # where models are declared
    backend: Literal["process", "docker", "swarm"] = "process"  # how replicas run
    docker_network: str = "host"  # docker backend: "host", or a user network such as compose's
    docker_timeout: PositiveFloat = 30  # docker and swarm: seconds before a Docker API call counts as failed
    swarm_pull: bool = False  # swarm: nodes pull the image by name (from its registry); else it goes by its ID
    swarm_ports: str = Field("20000-29999", pattern=r"^\d{1,5}-\d{1,5}$")  # swarm: the replicas' ports on nodes
    engines: str = ""  # swarm: comma-separated Docker URLs of every node's engine, for serverless-model build
    host: str = ""  # a worker's hostname, matched with its replicas' hosts ("" = this machine's)
    job_retention: PositiveFloat = 24 * 3600  # seconds a finished job is kept
    idempotency_retention: PositiveFloat = 24 * 3600  # seconds an Idempotency-Key keeps naming the job it made
    max_body_bytes: PositiveInt = 1024 * 1024  # largest request body the gateway accepts
    max_wait: PositiveFloat = 300  # longest ?wait= a client may ask for
    scale_interval: PositiveFloat = 0.5  # seconds between autoscaler ticks
    data_dir: Path = Path(".serverless-model")  # embedded Redis data and replica logs
    namespace: str = ""  # tells this platform's replicas from another's on one host; "" = an id kept in its Redis
    job_lease: PositiveFloat = 5.0  # seconds a worker's claim on a job lives unless renewed
    leader_lease: PositiveFloat = 3.0  # seconds the leadership lasts unless renewed (failover time; SM_LEADER_LEASE)
    redis_fsync: Literal["always", "everysec", "no"] = "always"  # embedded Redis: "always" loses no acknowledged write
    redis_max_memory: str = Field("1gb", pattern=r"^[1-9]\d*(kb|mb|gb)$")  # embedded Redis: its memory bound
    redis_timeout: PositiveFloat = 3.0  # seconds a gateway's Redis command may take (a ?wait: its wait + 5 s)
    api_keys: str = ""  # comma-separated SHA-256 hex digests of the accepted API keys; empty: no auth
    rate_limit: float = Field(0, ge=0)  # requests per second per API key; 0: unlimited
    metrics_token: str = ""  # SHA-256 hex digest of a token that opens GET /metrics alone (beside any API key)
    auth_failures_per_minute: PositiveInt = 20  # failed authentications per client address; past it 429
    trusted_proxies: int = Field(0, ge=0)  # proxies in front of the gateway whose X-Forwarded-For is believed
    header_timeout: PositiveFloat = 10.0  # seconds a client may take to send a request's line, headers and body
    max_waiters: PositiveInt = 24  # requests of one gateway process (32 threads) in ?wait at once; past it 202 at once
    max_waiters_per_key: PositiveInt = 16  # the same, per API key
    max_output_bytes: PositiveInt = 10 * 1024 * 1024  # largest answer taken from a replica
    max_parts: PositiveInt = 10000  # parts a streamed output may have; past it the job fails too_many_parts
    removed_model_grace: float = Field(60, ge=0)  # seconds a job of a model not in the models file waits, then fails
    webhook_secret: str = ""  # signs webhooks: whsec_<base64> (serverless-model webhook-secret); "": webhooks refused
    webhooks: dict[str, str] = {}  # default webhook per API key: its digest (as in SM_API_KEYS) → URL; "*": any other
    webhook_allow_networks: str = ""  # CIDRs (comma-separated) a webhook may target though private or loopback
    webhook_retry_for: PositiveFloat = 24 * 3600  # seconds a delivery is retried, from the job's end, then given up
    webhook_backoff: PositiveFloat = 5.0  # seconds before the first retry; doubled for each next one (with jitter)
    webhook_backoff_cap: PositiveFloat = 3600  # seconds between two attempts at most (before jitter)
    webhook_timeout: PositiveFloat = 10.0  # seconds one delivery attempt may take, connect to answer
    webhook_claim_after: PositiveFloat = 60.0  # seconds before a delivery a lost deliverer held is taken by another
    webhook_threads: PositiveInt = 2  # webhook deliverers per gateway process
    log_format: Literal["text", "json"] = "text"  # every process's log: text lines, or one JSON object per line

    @field_validator("webhook_secret")
    @classmethod
    def usable_secret(cls, secret: str) -> str:
        """Empty, or whsec_ and the base64 of at least 24 bytes."""
        if not secret:
            return secret
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True) if secret.startswith("whsec_") else b""
        except binascii.Error:
            key = b""
        if len(key) < 24:
            raise ValueError("whsec_ and the base64 of 24 bytes or more (serverless-model webhook-secret makes one)")
        return secret

    @field_validator("webhooks")
    @classmethod
    def usable_webhooks(cls, hooks: dict[str, str]) -> dict[str, str]:
        """Each a key digest (or "*") and an http(s) URL of at most 2048 characters."""
        for who, url in hooks.items():
            if who != "*" and not re.fullmatch(r"[0-9a-f]{64}", who.lower()):
                raise ValueError(f"{who[:20]!r}: an API key's SHA-256 hex digest, or '*'")
            if problem := url_problem(url):
                raise ValueError(f"the webhook of {who[:20]!r}: {problem}")
        return {who.lower(): url for who, url in hooks.items()}

    @field_validator("webhook_allow_networks")
    @classmethod
    def usable_networks(cls, networks: str) -> str:
        """Comma-separated CIDRs."""
        try:
            allowed_networks(networks)
        except ValueError as exc:
            raise ValueError(f"comma-separated CIDRs such as 127.0.0.0/8: {exc}") from None
        return networks

    @field_validator("redis_url")
    @classmethod
    def readable_url(cls, url: str) -> str:
        """A Redis URL, or Sentinels with the primary's name."""
        urls.Sentinels.parse(url)
        return url

    @field_validator("swarm_ports")
    @classmethod
    def usable_ports(cls, ports: str) -> str:
        """A range of unprivileged ports, low to high."""
        low, high = (int(part) for part in ports.split("-"))
        if not 1024 <= low <= high <= 65535:
            raise ValueError(f"{ports!r}: a range within 1024-65535, low-high")
        return ports

    def load_models(self) -> dict[str, ModelConfig]:
        """The models declared in the models file, by name."""
        try:
            models = parse_models(tomllib.loads(self.models_file.read_text()))
        except (ConfigError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{self.models_file}: {exc}") from None
        chosen = [name for name, m in models.items() if isinstance(m.runtime.gpus, list)]
        if self.backend == "swarm" and chosen:
            raise ConfigError(f"{self.models_file}: model {chosen[0]!r}: gpus: the swarm backend takes a count of "
                              f"GPUs (Swarm chooses the devices), got a list of device ids")
        return models


def url_problem(url: str) -> str:
    """What is wrong with a webhook URL's form ("" if nothing): http or https, a host, at most 2048 characters."""
    if len(url) > 2048:
        return "longer than 2048 characters"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (a port out of range raises)
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http or https URL with a host"
    if parts.username is not None or parts.password is not None:
        return "credentials in the URL"
    return ""


def allowed_networks(networks: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The networks of a comma-separated list of CIDRs."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in networks.split(",") if part.strip())


class ConfigError(ValueError):
    """The models file says something impossible: which model, which key, and what is allowed."""


def parse_models(document: dict[str, Any]) -> dict[str, ModelConfig]:
    """Models from a parsed models file (flat ``[models.<name>]`` tables); ConfigError naming the model and key."""
    models = {}
    for name, table in document.get("models", {}).items():
        if isinstance(table, dict) and (whole := SECTIONS.keys() & table):  # sections come from the flat keys
            raise ConfigError(unknown(name, min(whole)))
        try:
            models[name] = ModelConfig(name=name, **table)
        except ValidationError as exc:
            raise ConfigError("; ".join(problem(name, error) for error in exc.errors())) from None
        except TypeError as exc:
            raise ConfigError(f"model {name!r}: {exc}") from None
    return models


def problem(model: str, error: Any) -> str:
    """One validation error, for people, naming the flat key (not its section)."""
    loc = error["loc"][1:] if error["loc"][:1] and error["loc"][0] in SECTIONS else error["loc"]
    key = ".".join(str(part) for part in loc) or "(table)"
    if error["type"] == "extra_forbidden":
        return unknown(model, key)
    return f"model {model!r}: {key}: {error['msg']} (got {error.get('input')!r})"


def unknown(model: str, key: str) -> str:
    """A key no table has, with those it may have."""
    return f"model {model!r}: unknown key {key!r}; allowed: {', '.join(sorted(SECTION_OF))}"
