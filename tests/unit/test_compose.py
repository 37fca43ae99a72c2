"""The compose file: no default secrets, and replicas on a network without Redis."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(TEXT)


def test_secrets_have_no_defaults_and_compose_refuses_to_start_without_them() -> None:
    secrets = re.findall(r"\$\{((?:REDIS_PASSWORD|FLOWER_BASIC_AUTH)[^}]*)\}", TEXT)
    assert secrets and all(re.match(r"^\w+:\?", s) for s in secrets), secrets  # ${NAME:?message}
    assert "change-me" not in TEXT


def test_replicas_run_on_a_network_that_redis_is_not_on() -> None:
    services = COMPOSE["services"]
    replica_network = services["autoscaler"]["environment"]["SM_DOCKER_NETWORK"]
    names = {key: value["name"] for key, value in COMPOSE["networks"].items()}
    redis_networks = {names[n] for n in services["redis"]["networks"]}
    assert replica_network in names.values() and replica_network not in redis_networks
    for caller in ("worker", "autoscaler"):  # they call and probe replicas
        assert replica_network in {names[n] for n in services[caller]["networks"]}
    assert "/var/run/docker.sock" in str(services["autoscaler"]["volumes"])
    assert all("docker.sock" not in str(s.get("volumes")) for name, s in services.items() if name != "autoscaler")


def test_redis_keeps_every_acknowledged_write() -> None:
    command = COMPOSE["services"]["redis"]["command"]
    assert command[command.index("--appendfsync") + 1] == "always"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"


def test_every_image_is_built_here_and_down_stops_the_replicas() -> None:
    services = COMPOSE["services"]
    assert all("build" in service for service in services.values())  # nothing is pulled from a registry
    assert "--stop-replicas" in services["autoscaler"]["command"]
