"""The shape of the code: one owner of the Redis protocol, and no work at import time."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
OWNER = ROOT / "workers" / "store"
SOURCES = [p for folder in ("gateway", "workers", "model", "bench") for p in (ROOT / folder).rglob("*.py")]
KEY_NAME = re.compile(r"""["']sm:|f["']model\.\{""")  # our keys, Celery's queues
REDIS_COMMAND = re.compile(r"\.(hget|hgetall|hset|hmget|llen|lpush|rpush|lpop|blpop|blmove|lrange|zadd|zrange\w*|"
                           r"zcard|zrem|smembers|scard|sadd|srem|xadd|xrevrange|incr|expire|eval|evalsha|"
                           r"register_script|scan_iter)\(")


def outside_the_owner(pattern: re.Pattern[str]) -> list[str]:
    """Lines of the project outside ``workers/store`` that match."""
    return [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
            for path in SOURCES if OWNER not in path.parents
            for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]


def test_no_redis_key_name_outside_the_store() -> None:
    assert outside_the_owner(KEY_NAME) == []


def test_no_redis_command_or_lua_outside_the_store() -> None:
    assert outside_the_owner(REDIS_COMMAND) == []
    assert [p.name for p in SOURCES if "redis.call(" in p.read_text()] == []
    assert sorted(p.suffix for p in (ROOT / "workers" / "lua").iterdir()) == [".lua"] * len(
        list((ROOT / "workers" / "lua").iterdir()))


def test_importing_the_celery_module_builds_nothing() -> None:
    check = ("import workers.execution.celery_app as m, workers.cli, gateway.app, workers.scaling.service; "
             "assert m.default_app.cache_info().currsize == 0")
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://nowhere.invalid:1/0"}, check=False)
    assert run.returncode == 0, run.stderr
