"""JSON log lines: their fields, what they are about (``logs.about``, the running Celery task), exceptions, and one
line per record whatever the message holds."""

import io
import json
import logging
import sys
import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
from celery._state import pop_current_task, push_current_task

from workers import logs
from workers.config import Settings
from workers.execution.celery_app import create_celery
from workers.store.envelope import TASK_NAME

pytestmark = pytest.mark.unit


def record(message: str = "hello %s", *args: object, exc_info: Any = None, **extra: object) -> logging.LogRecord:
    """A record as a logger makes it."""
    made = logging.getLogger("workers.test").makeRecord("workers.test", logging.WARNING, __file__, 1, message, args,
                                                        exc_info)
    made.__dict__.update(extra)
    return made


def line(made: logging.LogRecord) -> dict[str, Any]:
    """The record's JSON line, parsed, after checking it is one line of ASCII."""
    text = logs.JsonFormatter("worker", "gpu1").format(made)
    assert "\n" not in text and text.isascii()
    found = json.loads(text)
    assert isinstance(found, dict)
    return found


def test_a_line_has_time_level_logger_message_process_and_host() -> None:
    found = line(record("hello %s", "there"))
    stamp = found.pop("time")
    assert stamp.endswith("Z") and datetime.fromisoformat(stamp).utcoffset() == timedelta(0)
    assert found == {"level": "WARNING", "logger": "workers.test", "message": "hello there", "process": "worker",
                     "host": "gpu1"}


def test_the_time_is_the_records_in_utc() -> None:
    made = record()
    made.created = 0.25
    assert line(made)["time"] == "1970-01-01T00:00:00.250Z"


def test_the_host_is_this_machines_when_none_is_set() -> None:
    import socket

    assert json.loads(logs.JsonFormatter("autoscaler").format(record()))["host"] == socket.gethostname()


def test_lines_in_about_carry_job_model_and_replica_and_nothing_after() -> None:
    with logs.about(job="j1", model="iris"):
        with logs.about(replica="r7"):
            inner = line(record())
        outer = line(record())
    after = line(record())
    assert (inner["job"], inner["model"], inner["replica"]) == ("j1", "iris", "r7")
    assert (outer["job"], outer["model"], "replica" in outer) == ("j1", "iris", False)
    assert not {"job", "model", "replica"} & after.keys()


def test_about_is_per_thread() -> None:
    seen: list[dict[str, Any]] = []
    with logs.about(job="j1"):
        other = threading.Thread(target=lambda: seen.append(line(record())))
        other.start()
        other.join()
    assert "job" not in seen[0]


def test_an_exception_comes_with_its_traceback_on_the_same_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        found = line(record("it failed", exc_info=sys.exc_info()))
    assert found["message"] == "it failed"
    assert found["exc"].startswith("Traceback (most recent call last)")
    assert "ValueError: boom\nsecond line" in found["exc"]


def test_a_message_with_newlines_and_other_alphabets_stays_one_line_and_reads_back() -> None:
    message = "première ligne\n\u0432\u0442\u043e\u0440\u0430\u044f\r\n第三行 \u2028 🚀 \"quoted\" \\ \udcff end"
    assert line(record("%s", message))["message"] == message


def test_a_record_whose_argument_is_no_text_still_logs() -> None:
    assert line(record("got %r", {"a": b"\xff"}))["message"] == "got {'a': b'\\xff'}"


def test_inside_the_job_task_lines_carry_its_job_and_model() -> None:
    task = create_celery(Settings()).tasks[TASK_NAME]
    task.push_request(id="j9", args=["j9", "iris"])
    push_current_task(task)
    try:
        found = line(record())
        with logs.about(replica="r1"):
            inside = line(record())
    finally:
        pop_current_task()
        task.pop_request()
    assert (found["job"], found["model"]) == ("j9", "iris")
    assert (inside["job"], inside["model"], inside["replica"]) == ("j9", "iris", "r1")
    assert "job" not in line(record())


def test_a_celery_line_about_a_job_task_not_running_yet_names_the_job() -> None:
    assert line(record("Task received", data={"id": "j3", "name": TASK_NAME}))["job"] == "j3"
    assert "job" not in line(record("Task received", data={"id": "x", "name": "other.task"}))


@pytest.fixture
def clean_logging(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The root logger, the warnings capture and the exception hooks as they were, after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    yield
    logging.captureWarnings(False)
    root.handlers[:], root.level = handlers, level
    for name in ("gunicorn.error", "gunicorn.access"):
        logging.getLogger(name).handlers[:] = []


def test_configure_json_puts_every_line_of_the_process_as_json_on_stderr(
        clean_logging: None, monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    logs.configure("json", "gateway", "edge1")
    logging.getLogger("gunicorn.access").info("GET /v1/models 200")
    logging.getLogger("gunicorn.error").warning("worker timeout")
    logging.getLogger("workers.x").debug("below INFO: not written")
    sys.excepthook(RuntimeError, RuntimeError("not caught"), None)
    lines = [json.loads(text) for text in stderr.getvalue().splitlines()]
    assert [(found["logger"], found["message"]) for found in lines] == [
        ("gunicorn.access", "GET /v1/models 200"), ("gunicorn.error", "worker timeout"),
        ("workers.logs", "uncaught RuntimeError")]
    assert {(found["process"], found["host"]) for found in lines} == {("gateway", "edge1")}
    assert "RuntimeError: not caught" in lines[2]["exc"]
