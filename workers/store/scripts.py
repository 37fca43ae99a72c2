"""The Lua scripts of ``workers/lua``, each loaded behind one prelude: the key prefixes (and the buckets of the
counters' histograms, and how many jobs an owner's index keeps), the job's statuses and
the moves between them (``workers.job``), the Celery message template and ``lib.lua`` (the clock, fencing, slots,
parking, the one writer of a job's status and the end of a job)."""

import importlib.resources
import math
from collections.abc import Callable
from typing import Any

import redis
from redis.client import Pipeline

from workers.job import MOVES, JobStatus
from workers.store import envelope, keys

LUA = importlib.resources.files("workers") / "lua"
NAMES = ("submit", "withdraw", "start", "finish", "retry", "renew", "reap", "resend", "expire_parked", "dispatch",
         "cancel", "add_replica", "launched", "ready", "start_failed", "replica_failed", "drain", "remove_replica",
         "save_scaling", "save_hosts", "observe", "note", "abandon", "refuse", "count", "resubmit", "purge", "expire",
         "webhook_due", "webhook_attempt", "webhook_failed", "webhook_redeliver", "waiting", "append_part",
         "take_parts", "webhook_forget", "list_jobs", "set_scale", "cold_starts", "reindex")


def prelude() -> str:
    """What every script starts with."""
    table = ", ".join(f"{name} = '{prefix}'" for name, prefix in keys.PREFIXES.items())
    message = envelope.template()
    assert "]==]" not in message
    bounds = ", ".join(map(str, keys.BOUNDS))
    head = (f"local K = {{{table}}}\nlocal BOUNDS = {{{bounds}}}\nlocal OWNED_KEPT = {keys.OWNED_KEPT}\n{moves()}"
            f"local ENVELOPE = [==[{message}]==]\n")
    return head + (LUA / "lib.lua").read_text()


def moves() -> str:
    """``workers.job.MOVES`` as Lua: ``S`` names each status, ``MOVES[from][to]`` the move's name (from '': a new
    job)."""
    statuses = ", ".join(f"{status.name} = '{status.value}'" for status in JobStatus)
    targets: dict[str, list[str]] = {}
    for move in MOVES:
        targets.setdefault(move.source.value if move.source else "", []).append(f"{move.target.value} = '{move.name}'")
    table = ", ".join(f"['{source}'] = {{{', '.join(found)}}}" for source, found in targets.items())
    return f"local S = {{{statuses}}}\nlocal MOVES = {{{table}}}\n"


def source(name: str, head: str) -> str:
    """Script ``name`` behind the prelude; its line of flags (``#!lua flags=...``), if any, stays first, where
    Redis reads it."""
    body = (LUA / f"{name}.lua").read_text()
    if not body.startswith("#!"):
        return head + body
    flags, _, rest = body.partition("\n")
    return f"{flags}\n{head}{rest}"


class Scripts:
    """The scripts, registered with a client; every call passes the clock and the job retention first."""

    def __init__(self, client: redis.Redis, retention: float, clock: Callable[[], float] | None = None) -> None:
        head = prelude()
        self.client = client
        self.retention = max(1, math.ceil(retention))
        self.clock = clock  # None: Redis TIME, inside each script
        self.scripts = {name: client.register_script(source(name, head)) for name in NAMES}

    def __call__(self, name: str, *args: Any, pipe: Pipeline | None = None) -> Any:
        """Run script ``name`` with ``args`` (on ``pipe``, if given, when it executes)."""
        now = "" if self.clock is None else repr(self.clock())
        return self.scripts[name](args=[now, self.retention, *args], client=pipe or self.client)
