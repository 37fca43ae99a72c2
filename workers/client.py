"""The client commands of ``serverless-model`` (status, jobs, job, events, logs, scale, submit, retry, cancel): each
talks to a gateway over HTTP (``--url``, else ``SM_GATEWAY_URL``; the key in ``SM_API_KEY``), so they work from any
machine. ``--json`` prints the gateway's JSON; otherwise text for people (``workers.views``)."""

import functools
import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import click
import requests

from workers import views

DEFAULT_URL = "http://127.0.0.1:8080"
COMMANDS: list[click.Command] = []  # added to the ``serverless-model`` group by workers.cli
POLL = 0.5  # seconds between two looks at a job waited for


class GatewayError(Exception):
    """The gateway refused a request: its error's code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class Unreachable(Exception):
    """No answer from the gateway at all."""


@dataclass(frozen=True)
class Gateway:
    """A gateway's HTTP API, with the caller's API key."""

    url: str
    key: str | None = None

    def call(self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None,
             timeout: float = 30) -> Any:
        """The JSON answer of one request; GatewayError for an error answer, Unreachable for none."""
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        query = {name: value for name, value in (params or {}).items() if value is not None}
        try:
            response = requests.request(method, self.url + path, params=query, headers=headers, timeout=timeout,
                                        **({} if body is None else {"json": body}))
        except requests.RequestException as exc:
            raise Unreachable(f"cannot reach the gateway at {self.url}: {reason(exc)}") from None
        try:
            answer = response.json()
        except ValueError:
            raise GatewayError(f"http_{response.status_code}", f"not a JSON answer: {response.text[:200]!r}") from None
        if response.status_code >= 400:
            error = answer.get("error") if isinstance(answer, dict) else None
            if not (isinstance(error, dict) and {"code", "message"} <= error.keys()):
                raise GatewayError(f"http_{response.status_code}", json.dumps(answer)[:200])
            raise GatewayError(str(error["code"]), str(error["message"]))
        return answer


def reason(exc: requests.RequestException) -> str:
    """Why a request got no answer, in a few words."""
    if isinstance(exc, requests.Timeout):
        return "no answer in time"
    if isinstance(exc, requests.ConnectionError):
        return "connection refused" if "refused" in str(exc).lower() else "cannot connect"
    return type(exc).__name__


def command(name: str) -> Callable[[Callable[..., int]], click.Command]:
    """A client command: ``--url`` and ``--json`` added, the gateway's refusals and silence turned into a line on
    stderr and exit status 1 (refused) or 2 (unreachable)."""
    def register(run: Callable[..., int]) -> click.Command:
        @click.option("--json", "as_json", is_flag=True, help="print the gateway's JSON")
        @click.option("--url", envvar="SM_GATEWAY_URL", default=DEFAULT_URL, show_default=True,
                      help="the gateway (else SM_GATEWAY_URL)")
        @functools.wraps(run)
        def call(url: str, as_json: bool, **arguments: Any) -> int:
            gateway = Gateway(url.rstrip("/"), os.environ.get("SM_API_KEY") or None)
            try:
                return run(gateway, as_json, **arguments)
            except GatewayError as exc:
                click.echo(f"error: {exc}", err=True)
                return 1
            except Unreachable as exc:
                click.echo(str(exc), err=True)
                return 2
        made = click.command(name)(call)
        COMMANDS.append(made)
        return made
    return register


def show(answer: Any, as_json: bool, text: Callable[[Any, datetime], str]) -> int:
    """Print an answer as JSON or as text."""
    click.echo(json.dumps(answer, indent=2) if as_json else text(answer, datetime.now().astimezone()))
    return 0


@command("status")
def status(gateway: Gateway, as_json: bool) -> int:
    """Models (queue, replicas by state, bounds, averages), hosts and replicas."""
    answer = {"models": gateway.call("GET", "/v1/models")["models"], "hosts": gateway.call("GET", "/v1/hosts")}
    return show(answer, as_json, lambda a, now: views.status(a["models"], a["hosts"], now))


@command("jobs")
@click.option("--model", help="only this model's jobs")
@click.option("--status", "state", help="only jobs in this status (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)")
@click.option("--limit", type=int, help="at most this many (50)")
@click.option("--before", help="only jobs created before this (a page's next, in Unix seconds)")
def jobs(gateway: Gateway, as_json: bool, model: str | None, state: str | None, limit: int | None,
         before: str | None) -> int:
    """Your recent jobs, newest first."""
    answer = gateway.call("GET", "/v1/jobs", {"model": model, "status": state, "limit": limit, "before": before})
    code = show(answer, as_json, lambda a, now: views.jobs(a["jobs"], now))
    if answer.get("next") is not None and not as_json:
        click.echo(f"(more: --before {answer['next']})", err=True)
    return code


@command("job")
@click.argument("job_id")
def job(gateway: Gateway, as_json: bool, job_id: str) -> int:
    """One job: status, timings, replica, what it waits for, its output or error."""
    return show(gateway.call("GET", f"/v1/jobs/{job_id}"), as_json, views.job)


@command("events")
@click.option("--model", help="only this model's events")
@click.option("--limit", type=int, help="at most this many (100)")
def events(gateway: Gateway, as_json: bool, model: str | None, limit: int | None) -> int:
    """The autoscaler's decisions and lifecycle events with their reasons, newest first."""
    answer = gateway.call("GET", "/v1/events", {"model": model, "limit": limit})
    return show(answer, as_json, lambda a, now: views.events(a["events"], now))


@command("logs")
@click.argument("model")
@click.argument("replica")
@click.option("--tail", type=int, default=100, show_default=True, help="the last this many lines")
def logs(gateway: Gateway, as_json: bool, model: str, replica: str, tail: int) -> int:
    """Print the last lines a replica printed."""
    answer = gateway.call("GET", f"/v1/models/{model}/replicas/{replica}/logs", {"tail": tail})
    return show(answer, as_json, lambda a, _: "\n".join(a["lines"]))


@command("scale")
@click.argument("model")
@click.option("--min", "least", type=click.IntRange(min=0), help="keep at least this many replicas")
@click.option("--max", "most", type=click.IntRange(min=0), help="start at most this many replicas")
@click.option("--reset", is_flag=True, help="back to the bounds of the models file")
def scale(gateway: Gateway, as_json: bool, model: str, least: int | None, most: int | None, reset: bool) -> int:
    """Set a model's replica bounds (applied by the autoscaler at its next pass), or reset them."""
    if reset == (least is not None or most is not None):
        raise click.UsageError("give --min and/or --max, or --reset alone")
    path = f"/v1/models/{model}/scale"
    answer = (gateway.call("DELETE", path) if reset else
              gateway.call("PUT", path, body={name: value for name, value in
                                              (("min_replicas", least), ("max_replicas", most)) if value is not None}))
    return show(answer, as_json, lambda a, _: views.scale(a))


@command("retry")
@click.argument("job_id")
def retry(gateway: Gateway, as_json: bool, job_id: str) -> int:
    """Queue a FAILED or CANCELLED job again (same id)."""
    return show(gateway.call("POST", f"/v1/jobs/{job_id}/retry"), as_json, lambda a, _: f"{a['id']}  {a['status']}")


@command("cancel")
@click.argument("job_id")
def cancel(gateway: Gateway, as_json: bool, job_id: str) -> int:
    """Cancel a queued job (it never runs), or a running one best-effort."""
    answer = gateway.call("DELETE", f"/v1/jobs/{job_id}")
    return show(answer, as_json, lambda a, _: f"{a['id']}  {a['status']}" + (
        "  (it was running: its result is discarded)" if a.get("cancelled_while") == "RUNNING" else ""))


@command("submit")
@click.argument("model")
@click.argument("source", metavar="[INPUT]", default="-")
@click.option("--wait", is_flag=True, help="wait for the job to finish, and print its output")
@click.option("--timeout", type=click.FloatRange(min=0), default=300, show_default=True,
              help="with --wait: give up waiting after this many seconds")
def submit(gateway: Gateway, as_json: bool, model: str, source: str, wait: bool, timeout: float) -> int:
    """Submit a job; INPUT is the model's input as JSON text, @file, or - (stdin, the default)."""
    payload = read_input(source)
    created = gateway.call("POST", f"/v1/models/{model}/jobs", body=payload)
    if not wait:
        return show(created, as_json, lambda a, _: f"{a['id']}  {a['status']}")
    try:
        finished = follow(gateway, created, timeout, sys.stderr)
    except KeyboardInterrupt:
        click.echo(f"\njob {created['id']} goes on (see: serverless-model job {created['id']})", err=True)
        return 130
    if finished is None:
        click.echo(f"error: timeout: job {created['id']} did not finish in {timeout:g} s "
                   f"(see: serverless-model job {created['id']})", err=True)
        return 1
    if as_json:
        click.echo(json.dumps(finished, indent=2))
    elif finished["status"] == "SUCCEEDED":
        click.echo(json.dumps(finished.get("output"), indent=2))
    if finished["status"] == "SUCCEEDED":
        return 0
    error = finished.get("error") or {"code": "cancelled", "message": f"job {finished['id']} was cancelled"}
    click.echo(f"error: {error['code']}: {error['message']}", err=True)
    return 1


def read_input(source: str) -> Any:
    """The model's input: JSON text, the JSON in a file (``@path``), or on stdin (``-``)."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source[1:]).read_text() if source.startswith("@") else source
    except OSError as exc:
        raise click.BadParameter(str(exc), param_hint="INPUT") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"input is not JSON: {exc}", param_hint="INPUT") from None


def follow(gateway: Gateway, job_view: dict[str, Any], timeout: float, err: TextIO) -> dict[str, Any] | None:
    """Poll a job until it finishes (its last view) or ``timeout`` passes (None), showing its progress on ``err``:
    a line that changes in place on a terminal, else a line each time its status or what it waits for changes."""
    animate, spinner, shown = err.isatty(), itertools.cycle("|/-\\"), ""
    deadline = time.monotonic() + timeout
    while job_view["status"] not in views.FINISHED and time.monotonic() < deadline:
        if animate:
            err.write(f"\r\x1b[K{next(spinner)} {views.progress(job_view)}")
        elif views.progress(job_view, timed=False) != shown:
            shown = views.progress(job_view, timed=False)
            err.write(f"{shown}\n")
        err.flush()
        time.sleep(POLL)
        job_view = gateway.call("GET", f"/v1/jobs/{job_view['id']}")
    if animate:
        err.write("\r\x1b[K")
    return job_view if job_view["status"] in views.FINISHED else None
