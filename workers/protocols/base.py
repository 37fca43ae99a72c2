"""The interface every replica protocol implements, and the checks they share."""

import enum
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from workers.job import JobError, JobStatus, Outcome

CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # an error code a replica may give
MESSAGE_LIMIT = 2000  # characters of a replica's error message kept
MAX_DEPTH = 100  # nesting an answer may have (the API serializes it again)


class ReplicaBusy(Exception):
    """The replica cannot take the request now (every slot busy, as with a request whose caller is gone, or a
    server restarting a worker): ask again, after ``retry_after`` seconds if it said."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


TRANSIENT = (429, 503)  # statuses that say "not now" in any protocol


def transient(status: int, headers: Mapping[str, str]) -> ReplicaBusy | None:
    """A 429 or 503 answer as ReplicaBusy, with its ``Retry-After`` in seconds when it gives one."""
    if status not in TRANSIENT:
        return None
    return ReplicaBusy(f"the replica answered {status}", retry_after(headers.get("Retry-After")))


def retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` of delay seconds as a number; None if absent or not seconds (an HTTP date)."""
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class Readiness(enum.StrEnum):
    """What a readiness probe answer says."""

    STARTING = "STARTING"
    READY = "READY"
    FAILED = "FAILED"  # it will never be ready (its setup failed)


@dataclass(frozen=True)
class Request:
    """An HTTP request to a replica."""

    method: str
    path: str
    body: bytes
    headers: Mapping[str, str]


class ReplicaProtocol(Protocol):
    """How to call a replica, probe it, and read its answers."""

    ready_path: str

    def environment(self) -> dict[str, str]:
        """What a replica of this protocol is told besides HOST, PORT and the model's env; values may use
        ``{port}`` and ``{host}``."""
        ...

    def request(self, job_id: str, payload: str) -> Request:
        """The request that runs job ``job_id`` with ``payload``, its input as the JSON text recorded (passed on
        as text, never parsed again)."""
        ...

    def readiness(self, status: int, body: bytes) -> tuple[Readiness, str]:
        """What an answer of the readiness probe says, with the reason when FAILED."""
        ...

    def outcome(self, status: int, headers: Mapping[str, str], body: bytes, timeout: float) -> Outcome:
        """What an answer makes of the job (``timeout``: the model's request timeout, bounding service times)."""
        ...

    def parts(self, status: int, headers: Mapping[str, str]) -> "PartReader | None":
        """A reader of the answer's parts if this answer is a stream of them (its body is then read line by line
        as it comes, never whole), else None."""
        ...


class PartReader(Protocol):
    """Reads one streamed answer, a line at a time as it comes."""

    def read(self, line: bytes) -> str | JobError | None:
        """What a line (without its newline; a blank line is ``b""``) completes: a part's JSON text, the error the
        stream ends with, or None; ValueError for a line that breaks the protocol."""
        ...

    def outcome(self, timeout: float) -> Outcome:
        """The job's outcome once the whole body was read without an error: SUCCEEDED with the output ``[]``,
        which stands for all its parts (or ``bad_response`` if the stream ended before its end)."""
        ...


def bad_response(reason: str) -> Outcome:
    """A FAILED outcome for an answer that breaks the protocol."""
    return Outcome(JobStatus.FAILED, error=JobError("bad_response", reason[:MESSAGE_LIMIT]))


def float_sized(text: str) -> int:
    """``json.loads``'s hook for an integer: one within a float's range, or ValueError (1 and 400 zeros)."""
    number = int(text)
    try:
        float(number)
    except OverflowError:
        raise ValueError(f"{text[:20]}... is out of range") from None
    return number


def parse_json(body: bytes) -> tuple[Any, str]:
    """The decoded body and its text, or raise ValueError: not UTF-8, not JSON, a number that is not finite
    (NaN, Infinity, 1e400, 1 and 400 zeros), or nested deeper than ``MAX_DEPTH``."""
    text = body.decode("utf-8")
    try:
        found = json.loads(text, parse_constant=_no_constant, parse_int=float_sized)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc
    check_tree(found)
    return found, text


def parse_answer(status: int, body: bytes) -> tuple[Any, str] | Outcome:
    """A replica's answer decoded (see ``parse_json``), or the ``bad_response`` it is when it is not JSON."""
    try:
        return parse_json(body)
    except ValueError:
        return bad_response(f"the replica answered {status} with a body that is not JSON: {body[:300]!r}")


def check_tree(value: Any) -> None:
    """ValueError if ``value`` nests deeper than ``MAX_DEPTH`` or holds a float that is not finite."""
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{item} is not a JSON number")
        if isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            todo.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def service_seconds(value: str | None, timeout: float) -> float | None:
    """A replica's own service time header as seconds: None if absent; ValueError unless 0 <= s <= timeout."""
    if value is None:
        return None
    seconds = float(value)
    if not math.isfinite(seconds) or not 0 <= seconds <= timeout:
        raise ValueError(f"{value!r} is not a duration within the request timeout of {timeout:g} s")
    return seconds


JSON = {"Content-Type": "application/json"}


def post_json(path: str, text: str) -> Request:
    """A POST of JSON text."""
    return Request("POST", path, text.encode(), JSON)


def json_object(members: Mapping[str, str]) -> str:
    """The JSON text of an object whose members' values are JSON text already (a job's input, unparsed)."""
    return "{" + ",".join(f"{json.dumps(name)}:{value}" for name, value in members.items()) + "}"


NO_OUTPUT = "[]"  # a streamed job's output as an answer gives it: all the parts appended


def succeeded(output: Any, seconds: float | None = None) -> Outcome:
    """A SUCCEEDED outcome with ``output`` (checked as the job's JSON output)."""
    check_tree(output)
    return Outcome(JobStatus.SUCCEEDED, output=json.dumps(output), service_time=seconds)


def failed(code: str, message: str) -> Outcome:
    """A FAILED outcome."""
    return Outcome(JobStatus.FAILED, error=JobError(code, message[:MESSAGE_LIMIT]))


def replica_error(body: Any, status: int, text: str) -> JobError:
    """The job's error from a replica's error answer: its own code and message if it follows the contract."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str) and CODE.match(error["code"]) \
            and isinstance(error.get("message"), str):
        return JobError(error["code"], error["message"][:MESSAGE_LIMIT])
    return JobError("model_error", f"replica answered {status}: {text[:MESSAGE_LIMIT]}")
