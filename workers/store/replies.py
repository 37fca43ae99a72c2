"""What the job scripts answer, decoded here and nowhere else: one shape per outcome.

A script answers a word of its own (an enum below), the status of a job it did not change as it was asked (a
``JobStatus``: the job is in it now), or, when a job starts, ``{RUNNING, replica, endpoint, job fields ...}``
(``Started``). Each script's arguments and answers are written at its top.
"""

import json
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar

from workers.job import Job, JobStatus
from workers.store.records import BoundsSource, FailedDelivery, JobPage, JobSummary, ScaleBounds, Slot, Started


class CancelReply(StrEnum):
    """cancel.lua (else the status of a job already finished)."""

    OK = "OK"  # cancelled now
    MISSING = "MISSING"


class WithdrawReply(StrEnum):
    """withdraw.lua (else the status of a job that stays: a worker took it)."""

    WITHDRAWN = "WITHDRAWN"
    NONE = "NONE"  # never recorded


class RefuseReply(StrEnum):
    """refuse.lua (else the status found; FAILED: failed now, or before)."""

    CLAIMED = "CLAIMED"  # a live task holds it
    MISSING = "MISSING"


class FinishReply(StrEnum):
    """finish.lua (else the status found: cancelled while it ran, or this call again after its answer was lost)."""

    OK = "OK"  # committed
    STALE = "STALE"  # the claim is no longer the caller's
    MISSING = "MISSING"


class AppendReply(StrEnum):
    """append_part.lua, when it appended nothing (else the part's index)."""

    STALE = "STALE"  # the claim is no longer the caller's, or the job no longer runs
    TOO_MANY = "TOO_MANY"  # the job has the most parts already
    MISSING = "MISSING"


def appended(reply: Any) -> int | AppendReply:
    """append_part.lua's answer: the part's index, or why nothing was appended."""
    if isinstance(reply, int):
        return reply
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    if text in AppendReply._value2member_map_:
        return AppendReply(text)
    raise UnexpectedReply(f"append_part answered {text[:100]!r}")


class StartReply(StrEnum):
    """start.lua and retry.lua, when the job does not run now (else the status found; FAILED: it failed now)."""

    PARKED = "PARKED"  # it waits for a free slot, holding nothing
    CLAIMED = "CLAIMED"  # another live task holds it
    STALE = "STALE"  # the claim is no longer the caller's
    MISSING = "MISSING"


class ResubmitReply(StrEnum):
    """resubmit.lua (else the status of a job that cannot run again: QUEUED, RUNNING or SUCCEEDED)."""

    OK = "OK"  # queued again
    FULL = "FULL"  # the model's queue is at its cap
    KEY_FULL = "KEY_FULL"  # the owner's share of it is
    HELD = "HELD"  # cancelled while it ran, its call has not returned yet: it still holds its replica slot
    REVOKED = "REVOKED"  # its Celery task was revoked: the workers would drop its message again
    MISSING = "MISSING"


class Purged(NamedTuple):
    """One call of purge.lua: the jobs it cancelled, and whether the purge is done."""

    cancelled: int
    done: bool

    @classmethod
    def of(cls, reply: Any) -> "Purged":
        """From the script's ``{cancelled, done}``."""
        return cls(int(reply[0]), bool(int(reply[1])))


class ReapReply(StrEnum):
    """What reap.lua did with a job whose lease ran out."""

    REQUEUED = "REQUEUED"  # it waits again
    DEAD = "DEAD"  # out of attempts: failed, into the dead letters
    FREED = "FREED"  # it had finished (cancelled while it ran): its slot is given back


class SubmitReply(StrEnum):
    """submit.lua, when it records nothing (else the job's created_at, or the existing job of an idempotency key)."""

    FULL = "FULL"  # the model's queue is at its cap
    KEY_FULL = "KEY_FULL"  # the owner's share of it is
    CONFLICT = "CONFLICT"  # the idempotency key made a job of another request


class AttemptReply(StrEnum):
    """webhook_attempt.lua: what became of a job's webhook delivery after one attempt."""

    DELIVERED = "DELIVERED"
    RETRY = "RETRY"  # it waits for its next attempt
    FAILED = "FAILED"  # given up: among its owner's failed deliveries
    DROPPED = "DROPPED"  # the job is gone, or no longer waits for this delivery


class RedeliverReply(StrEnum):
    """webhook_redeliver.lua."""

    OK = "OK"  # pending again
    MISSING = "MISSING"  # not among the owner's failed deliveries (or its job is gone)


class UnexpectedReply(ValueError):
    """A script answered something its reply types do not hold (a script and its caller disagree)."""


Word = TypeVar("Word", bound=StrEnum)


def word(reply: Any, kind: type[Word]) -> Word | JobStatus:
    """A one-word answer: a word of ``kind``, or a job's status."""
    text = str(reply)
    if text in kind._value2member_map_:
        return kind(text)
    if text in JobStatus._value2member_map_:
        return JobStatus(text)
    raise UnexpectedReply(f"a script answered {text[:100]!r}, neither a {kind.__name__} nor a job status")


def cancelled(reply: Any) -> tuple[CancelReply | JobStatus, Job | None]:
    """cancel.lua's ``{word, the job's fields but its input ...}``."""
    if not isinstance(reply, list) or not reply or len(reply) % 2 == 0:
        raise UnexpectedReply(f"cancel answered {str(reply)[:100]!r}")
    fields = dict(zip(reply[1::2], reply[2::2], strict=True))
    return word(reply[0], CancelReply), Job.from_hash(fields) if fields else None


def word_of(reply: Any, kind: type[Word]) -> Word:
    """A one-word answer that is always a word of ``kind``."""
    text = str(reply)
    if text not in kind._value2member_map_:
        raise UnexpectedReply(f"a script answered {text[:100]!r}, not a {kind.__name__}")
    return kind(text)


def failed_deliveries(reply: Any) -> list[FailedDelivery]:
    """webhook_failed.lua's JSON array."""
    try:
        return [FailedDelivery.decode(found) for found in json.loads(str(reply))]
    except (ValueError, TypeError, KeyError) as exc:
        raise UnexpectedReply(f"webhook_failed.lua answered {str(reply)[:100]!r}") from exc


def start(reply: Any) -> Started | StartReply | JobStatus:
    """start.lua's or retry.lua's answer."""
    if not isinstance(reply, list):
        return word(reply, StartReply)
    if reply[0] != JobStatus.RUNNING:
        raise UnexpectedReply(f"a started job's reply begins with {str(reply[0])[:100]!r}")
    fields = dict(zip(reply[3::2], reply[4::2], strict=True))
    return Started(job=Job.from_hash(fields), slot=Slot(replica_id=reply[1], endpoint=reply[2]))


def submitted(reply: Any) -> str | SubmitReply | Job:
    """submit.lua's answer: the new job's created_at, why nothing was recorded, or the job the idempotency key made."""
    if isinstance(reply, list):
        if not reply or reply[0] != "EXISTING":
            raise UnexpectedReply(f"a submit's list reply begins with {str(reply[:1])[:100]!r}")
        return Job.from_hash(dict(zip(reply[1::2], reply[2::2], strict=True)))
    text = str(reply)
    if text in SubmitReply._value2member_map_:
        return SubmitReply(text)
    try:
        float(text)
    except ValueError:
        raise UnexpectedReply(f"a submit answered {text[:100]!r}") from None
    return text


LISTED_FIELDS = 9  # list_jobs.lua's fields per job


def listed(reply: Any) -> JobPage:
    """list_jobs.lua's ``{next, then nine fields per job}``."""
    if not isinstance(reply, list) or not reply or (len(reply) - 1) % LISTED_FIELDS:
        raise UnexpectedReply(f"list_jobs answered {str(reply)[:100]!r}")
    try:
        jobs = tuple(JobSummary.decode(reply[i:i + LISTED_FIELDS]) for i in range(1, len(reply), LISTED_FIELDS))
        return JobPage(jobs=jobs, next=float(reply[0]) if reply[0] else None)
    except (ValueError, TypeError) as exc:
        raise UnexpectedReply(f"list_jobs answered {str(reply)[:100]!r}") from exc


class ScaleReply(StrEnum):
    """set_scale.lua, when it set nothing."""

    INVALID = "INVALID"  # merged with the bounds in effect, min_replicas would exceed max_replicas


class ScaleSet(NamedTuple):
    """set_scale.lua set an override: the bounds now, and those in effect before."""

    bounds: ScaleBounds
    was: ScaleBounds


def scale_set(reply: Any) -> ScaleSet | ScaleReply:
    """set_scale.lua's ``{min, max, was min, was max, was source}``, or ``{INVALID, min, max}``."""
    if isinstance(reply, list) and reply and reply[0] == ScaleReply.INVALID:
        return ScaleReply.INVALID
    try:
        least, most, was_least, was_most, source = reply
        return ScaleSet(ScaleBounds(int(least), int(most), BoundsSource.OVERRIDE),
                        ScaleBounds(int(was_least), int(was_most), BoundsSource(source)))
    except (ValueError, TypeError) as exc:
        raise UnexpectedReply(f"set_scale answered {str(reply)[:100]!r}") from exc
