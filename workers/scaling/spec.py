"""What a replica is, whatever runs it: a backend-neutral spec that each backend renders.

A model's table says how its replicas run; ``ReplicaSpec.of`` turns it into one replica's spec, and a backend
renders that as a process, a container or a Swarm service. Where the replica listens is the backend's choice, so
the command line and environment keep ``{port}`` and ``{host}`` until the backend fills them in.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from workers.config import ModelConfig, fill
from workers.protocols import protocol_for


@dataclass(frozen=True)
class Resources:
    """What one replica may use at most."""

    cpus: float  # cores
    memory: str  # "1g", as Docker reads it
    pids: int  # processes
    shm_size: str = ""  # size of /dev/shm ("" = the runtime's own)


@dataclass(frozen=True)
class ReplicaSpec:
    """One replica of a model, as every backend starts it."""

    model: str
    replica_id: str
    image: str = ""  # containers: a locally built image (never pulled)
    command: tuple[str, ...] = ()  # a process's command line; a container's entrypoint (empty: the image's)
    args: tuple[str, ...] = ()  # arguments after the command (a container: instead of the image's CMD)
    env: Mapping[str, str] = field(default_factory=dict)  # everything the replica is told, {port}/{host} unfilled
    volumes: tuple[str, ...] = ()  # "/host/path:/container/path", mounted read-only
    resources: Resources = Resources(cpus=1.0, memory="1g", pids=256)
    gpus: int | tuple[str, ...] = 0  # how many GPUs, or which device ids
    port: int = 8000  # where the server listens in a container with a network of its own
    constraints: tuple[str, ...] = ()  # swarm: the nodes it may run on ("node.labels.gpu==a100")

    @classmethod
    def of(cls, model: ModelConfig, replica_id: str) -> "ReplicaSpec":
        """The spec of replica ``replica_id`` of ``model``: where to listen, how many requests at once, what its
        protocol needs, and the model's own settings."""
        run = model.runtime
        env = {"HOST": "{host}", "PORT": "{port}", "CONCURRENCY": str(model.scaling.concurrency),
               **protocol_for(model).environment(), **run.env}
        return cls(model=model.name, replica_id=replica_id, image=run.image, command=tuple(run.command),
                   args=tuple(run.args), env=env, volumes=tuple(run.volumes),
                   resources=Resources(cpus=run.cpus, memory=run.memory, pids=run.pids, shm_size=run.shm_size),
                   gpus=run.gpus if isinstance(run.gpus, int) else tuple(run.gpus), port=run.port,
                   constraints=tuple(run.constraints))

    def environment(self, host: str, port: int) -> dict[str, str]:
        """The replica's environment, listening on ``host``:``port``."""
        return {name: fill(value, port, host) for name, value in self.env.items()}

    def entrypoint(self, host: str, port: int) -> list[str]:
        """The command, filled in."""
        return [fill(word, port, host) for word in self.command]

    def arguments(self, host: str, port: int) -> list[str]:
        """The arguments, filled in."""
        return [fill(word, port, host) for word in self.args]
