"""How the platform's processes log: text lines (the default), or one JSON object per line (``SM_LOG_FORMAT=json``).

A JSON line has ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, ``process`` (gateway, worker,
autoscaler …), ``host``, and when known ``job``, ``model``, ``replica``; ``exc`` with the traceback of an
exception. What a line is about comes from ``about(job=…, model=…)`` around the work, and inside a Celery task
from the task itself (its id is the job id; its arguments name the model), so Celery's own lines about a task
carry its job too. The line is ASCII (other characters escaped), a newline in a message included.
"""

import contextlib
import contextvars
import json
import logging
import logging.config
import socket
import sys
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import Any, Literal

from pydantic import ValidationError

from workers.config import Settings
from workers.store.envelope import TASK_NAME

TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"  # the text lines
subject: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("subject", default=MappingProxyType({}))


@contextlib.contextmanager
def about(**fields: str) -> Iterator[None]:
    """Lines logged in the block (in this thread or task) carry ``fields`` (job, model, replica) beside the outer."""
    token = subject.set({**subject.get(), **{name: value for name, value in fields.items() if value}})
    try:
        yield
    finally:
        subject.reset(token)


def task_subject(record: logging.LogRecord) -> dict[str, str]:
    """The job and model of the Celery task running in this thread (or that a Celery line names), if any."""
    found: dict[str, str] = {}
    data = getattr(record, "data", None)  # Celery's lines about a task not running yet ("received") name it
    if isinstance(data, dict) and data.get("name") == TASK_NAME and data.get("id"):
        found["job"] = str(data["id"])
    state = sys.modules.get("celery._state")  # no Celery loaded: no task runs here
    task = state.get_current_task() if state is not None else None
    if task is not None and task.name == TASK_NAME and task.request.id:
        found["job"] = str(task.request.id)
        args: list[Any] = list(task.request.args or ())
        if len(args) > 1 and args[1]:
            found["model"] = str(args[1])
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, process, host, and job, model, replica if known."""

    def __init__(self, process: str, host: str = "") -> None:
        super().__init__()
        self.process = process
        self.host = host or socket.gethostname()

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "process": self.process, "host": self.host,
            **task_subject(record), **subject.get(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


def handler_config(process: str, host: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` in which the root logger writes JSON lines to stderr (gunicorn's
    ``logconfig_dict``: its error and access loggers propagate to it)."""
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter", "process": process, "host": host}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {name: {"level": "INFO", "handlers": [], "propagate": True}
                    for name in ("gunicorn.error", "gunicorn.access")},
    }


def settings_of() -> tuple[Literal["text", "json"], str]:
    """How to log, and the host to name, from the settings (text if they do not load: the command says why)."""
    try:
        settings = Settings()
    except ValidationError:
        return "text", ""
    return settings.log_format, settings.host


def configure(log_format: Literal["text", "json"], process: str, host: str = "") -> None:
    """Log at INFO to stderr, as text lines or as JSON lines (warnings and uncaught exceptions too)."""
    if log_format == "text":
        logging.basicConfig(level=logging.INFO, format=TEXT_FORMAT)
        return
    logging.config.dictConfig(handler_config(process, host))
    capture_strays()


def capture_strays() -> None:
    """Warnings and uncaught exceptions as lines of the log, not text printed beside it."""
    logging.captureWarnings(True)
    sys.excepthook = uncaught
    threading.excepthook = in_thread


def uncaught(kind: type[BaseException], exc: BaseException | None, tb: TracebackType | None) -> None:
    """An exception nobody caught, as a line of the log (not a traceback printed beside it)."""
    logging.getLogger(__name__).critical("uncaught %s", kind.__name__, exc_info=(kind, exc or kind(), tb))


def in_thread(hook: threading.ExceptHookArgs) -> None:
    """An exception that ended a thread (but SystemExit, which ends it quietly), as a line of the log."""
    if hook.exc_type is not SystemExit:
        uncaught(hook.exc_type, hook.exc_value, hook.exc_traceback)
