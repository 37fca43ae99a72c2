"""The job store: job records with guarded, atomic status changes, claims with leases, parking, and the reaper.

Every change is one script of ``workers/lua``: it checks the state it expects (the status, the caller's claim),
writes, and moves the id between the model's sets, so a stale writer (a lost worker's late result, a cancelled
job's output) is refused rather than overwriting. Each script is safe to run twice (redis-py retries a call whose
answer was lost).
"""

import hashlib
import json
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, cast

import redis

from workers.job import VIEWED, Delivery, Job, JobError, JobOptions, JobStatus, Outcome, View
from workers.store import keys, replies
from workers.store.records import JobPage, Started, Waiting
from workers.store.replies import (
    AppendReply,
    CancelReply,
    FinishReply,
    Purged,
    ReapReply,
    RefuseReply,
    ResubmitReply,
    StartReply,
    SubmitReply,
    WithdrawReply,
)
from workers.store.scripts import Scripts


class Reaped(NamedTuple):
    """A job the reaper took back, and what it did with it."""

    job_id: str
    outcome: ReapReply
    model: str
    owner: str


class Expired(NamedTuple):
    """A job the janitor failed: it did not start within its ttl."""

    job_id: str
    model: str
    owner: str


class Refusal(StrEnum):
    """Why a submit recorded nothing: the model's queue is at its cap, or the key's share of it is; or its
    idempotency key made a job of another request."""

    FULL = "FULL"
    KEY_FULL = "KEY_FULL"
    CONFLICT = "CONFLICT"


@dataclass(frozen=True)
class Idempotency:
    """A submit's Idempotency-Key: the same key (of the same owner) within ``retention`` seconds makes one job."""

    key: str
    digest: str  # of the request: the same key with another request is a conflict
    retention: float

    @staticmethod
    def digest_of(request: object) -> str:
        """A stable hash of a JSON-able request (keys sorted)."""
        text = json.dumps(request, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Existing:
    """The job an idempotency key made before, as it is now (it was not sent again)."""

    job: Job


class Abandoned(NamedTuple):
    """What the janitor did with a model no longer served: the jobs it failed, and whether the model is forgotten."""

    failed: list[str]
    forgotten: bool


class Unreplicated(redis.RedisError):
    """A submit was made on the primary, but not yet on as many replicas as it must be."""


ANYONE = "*"  # cancel.lua's owner for a job of any owner (an owner is a key's digest prefix, or '')


def viewed(values: list[str | None]) -> Job | None:
    """The job of an HMGET of its VIEWED fields, or None if it has no record."""
    fields = {name: value for name, value in zip(VIEWED, values, strict=True) if value is not None}
    return Job.from_hash(fields) if fields else None


class JobStore:
    """Job records in Redis: the source of truth for every job."""

    def __init__(self, client: redis.Redis, scripts: Scripts, weight: float = 0.2, replicas: int = 0,
                 replicas_within: float = 1.0) -> None:
        self.redis = client
        self.scripts = scripts
        self.weight = weight  # of a new sample in the moving averages
        self.replicas = replicas  # Redis replicas that must hold a submit before it counts as made
        self.replicas_within = replicas_within  # seconds they have to

    @staticmethod
    def new(model: str, payload: Any, owner: str = "", *, options: JobOptions | None = None,
            webhook: str = "", view: View = View.NATIVE) -> Job:
        """A new job, not yet recorded (its ``created_at`` comes from Redis when it is); its end is delivered to
        ``webhook`` if given, shown as ``view``. ``payload`` is dumped here, once: the job carries it as JSON text."""
        return Job(id=uuid.uuid4().hex, model=model, status=JobStatus.QUEUED, created_at=0.0,
                   input=json.dumps(payload, separators=(",", ":"), allow_nan=False),
                   owner=owner, options=options or JobOptions(),
                   webhook=Delivery(webhook, view=view) if webhook else None)

    def submit(self, job: Job, max_queued: int = 0, max_per_owner: int = 0, idempotency: Idempotency | None = None,
               aging: float = 60.0) -> Job | Refusal | Existing:
        """Record the job (its input, options and webhook) and push its Celery message, both or neither; a Refusal
        if ``max_queued`` jobs of the model already wait, or ``max_per_owner`` of its owner's have not started (0:
        no cap; no owner: none), or the idempotency key made a job of another request; the job it made, if of this
        one. ``aging``: the seconds a high job is ranked ahead of its submit (a low one behind)."""
        idem = ["", "", 0] if idempotency is None else [keys.idempotency(job.owner, idempotency.key),
                                                        idempotency.digest, max(1, round(idempotency.retention))]
        extra = [value for pair in job.options.fields().items() for value in pair]
        if offset := job.options.priority.offset(aging):
            extra += ["offset", repr(offset)]
        hook = ["webhook", job.webhook.url] if job.webhook else []
        if job.webhook and job.webhook.view is not View.NATIVE:
            hook += ["webhook_view", job.webhook.view.value]
        reply, held = self.replicated("submit", job.id, job.model, max_queued, max_per_owner, job.owner, *idem,
                                      "input", job.input or "null", *extra, *hook)
        created = replies.submitted(reply)
        if isinstance(created, SubmitReply):
            return Refusal(created.value)
        if isinstance(created, Job):
            return Existing(created)
        if held < self.replicas:  # a failover now could lose it: the caller takes it back (Gateway.settle)
            raise Unreplicated(f"{held} of {self.replicas} Redis replica(s) hold job {job.id} after "
                               f"{self.replicas_within:g} s")
        return Job(id=job.id, model=job.model, status=JobStatus.QUEUED, input=job.input, created_at=float(created),
                   owner=job.owner, options=job.options, webhook=job.webhook)

    def withdraw(self, job: Job) -> WithdrawReply | JobStatus:
        """Take back a job whose submit may or may not have happened: WITHDRAWN, NONE, or the status it keeps;
        Unreplicated if a connected replica does not know yet (a failover could bring the job back)."""
        kept, held = self.replicated("withdraw", job.id)
        if held < self.replicas and held < int(self.redis.info("replication").get("connected_slaves", 0)):
            raise Unreplicated(f"{held} of {self.replicas} Redis replica(s) saw job {job.id} withdrawn")
        return replies.word(kept, WithdrawReply)

    def replicated(self, name: str, *args: Any) -> tuple[Any, int]:
        """Run script ``name``; with replicas to wait for, then WAIT for them on the same connection (WAIT counts
        the writes of its own connection): its answer, and how many replicas hold its writes."""
        if not self.replicas:
            return self.scripts(name, *args), 0
        with self.redis.pipeline(transaction=False) as pipe:
            self.scripts(name, *args, pipe=pipe)
            pipe.wait(self.replicas, max(1, int(self.replicas_within * 1000)))
            answer, held = pipe.execute()
        return answer, int(held)

    def get(self, job_id: str) -> Job | None:
        """The job without its input (job.VIEWED), or None if unknown or expired."""
        return viewed(cast(list[str | None], self.redis.hmget(keys.job(job_id), VIEWED)))

    def listed(self, owner: str, model: str | None = None, status: JobStatus | None = None,
               before: float | None = None, limit: int = 50, look: int = 1000) -> JobPage:
        """The owner's jobs ('' : those of no API key), newest first: of ``model`` and in ``status`` if given,
        created before ``before`` if given, at most ``limit``, found among at most ``look`` entries of the owner's
        index (fewer than ``limit`` with a ``next``: go on from it). Jobs whose record expired are left out."""
        return replies.listed(self.scripts("list_jobs", owner, model or "", status.value if status else "",
                                           "" if before is None else repr(before), limit, look))

    def wait(self, job_id: str, timeout: float) -> Job | None:
        """Block until the job finishes or ``timeout`` passes (no polling); the job as it then is.

        A finished job's done list holds a token: BLMOVE from the list onto itself waits for it and leaves it for
        other waiters, and the HMGET behind it on the same connection reads the job (as ``get`` does): one round
        trip.
        """
        if timeout <= 0:
            return self.get(job_id)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.blmove(keys.done(job_id), keys.done(job_id), timeout, "LEFT", "RIGHT")  # type: ignore[arg-type]
            pipe.hmget(keys.job(job_id), VIEWED)
            return viewed(pipe.execute()[-1])

    def cancel(self, job_id: str, why: JobError | None = None) -> CancelReply | JobStatus:
        """Cancel a QUEUED job, or a RUNNING one best-effort, keeping ``why`` if given: OK, MISSING, or the status
        of a finished job."""
        reason = [why.code, why.message] if why else []
        return replies.cancelled(self.scripts("cancel", job_id, ANYONE, *reason))[0]

    def cancel_own(self, job_id: str, owner: str) -> tuple[CancelReply | JobStatus, Job | None]:
        """Cancel ``owner``'s job as ``cancel`` does, in one round trip with the job as it is then (without its
        input): MISSING and None for another owner's job."""
        return replies.cancelled(self.scripts("cancel", job_id, owner))

    def resubmit(self, job_id: str, max_queued: int = 0, max_per_owner: int = 0) -> ResubmitReply | JobStatus:
        """Queue a FAILED or CANCELLED job again, same id, attempts kept (capped as a submit is): OK, or why not."""
        return replies.word(self.scripts("resubmit", job_id, max_queued, max_per_owner), ResubmitReply)

    def purge(self, model: str, owner: str | None = None, batch: int = 500) -> int:
        """Cancel the model's waiting jobs (only ``owner``'s, if given), ``batch`` per script call: how many."""
        purge, cancelled, first = uuid.uuid4().hex, 0, True
        while True:
            found = Purged.of(self.scripts("purge", model, owner or "", int(owner is not None), batch, purge,
                                           int(first)))
            cancelled, first = cancelled + found.cancelled, False
            if found.done:
                return cancelled

    def refuse(self, job_id: str, why: JobError) -> RefuseReply | JobStatus:
        """Fail a QUEUED job nobody holds, whose model this worker does not serve: FAILED, or why not."""
        return replies.word(self.scripts("refuse", job_id, why.code, why.message), RefuseReply)

    def start(self, job_id: str, token: str, lease: float, worker: str, fail_on_start_failure: bool,
              host: str = "") -> Started | StartReply | JobStatus:
        """Claim the job, take a free replica slot (on ``host`` if one is free there) and run it; else park it.
        Started, or why not (PARKED …)."""
        return replies.start(self.scripts("start", job_id, token, lease, worker, int(fail_on_start_failure), host))

    def finish(self, job_id: str, token: str, outcome: Outcome, timed_out: bool = False) -> FinishReply | JobStatus:
        """Commit the outcome under the claim and give the slot back: OK, or why not (STALE, CANCELLED …).
        ``timed_out``: the replica gave no answer in time (it counts against the replica)."""
        service = "" if outcome.service_time is None else repr(outcome.service_time)
        return replies.word(self.scripts("finish", job_id, token, outcome.status.value, service, self.weight,
                                         int(timed_out), *outcome.fields()), FinishReply)

    def retry(self, job_id: str, token: str, failed: str, reason: str, gone: bool, max_attempts: int,
              lease: float, worker: str, host: str = "") -> Started | StartReply | JobStatus:
        """The call on replica ``failed`` failed (``gone``: the replica is, and leaves routing): run the job on
        another slot (on ``host`` if one is free there), park it, or fail it after its last attempt."""
        return replies.start(self.scripts("retry", job_id, token, failed, reason, int(gone), max_attempts, lease,
                                       worker, host))

    def append_part(self, job_id: str, token: str, part: str, most: int) -> int | AppendReply:
        """Append a part (JSON text) of the run holding claim ``token``: its index, or why not (STALE, TOO_MANY)."""
        return replies.appended(self.scripts("append_part", job_id, token, part, most))

    def parts(self, job_id: str, start: int = 0) -> list[str]:
        """The job's parts from index ``start`` on (JSON text each)."""
        return cast(list[str], self.redis.lrange(keys.parts(job_id), start, -1))

    def run_parts(self, job_id: str, start: int = 0) -> tuple[int, list[str]]:
        """The job's run (see ``Job.run``) and that run's parts from index ``start`` on, read together."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(keys.job(job_id), "run")
        pipe.lrange(keys.parts(job_id), start, -1)
        run, parts = pipe.execute()
        return int(run or 0), cast(list[str], parts)

    def take_parts(self, job_id: str, limit: int = 1000) -> list[str]:
        """The job's parts not handed out yet by ``take_parts`` (JSON text each, at most ``limit``), now taken."""
        return cast(list[str], self.scripts("take_parts", job_id, limit))

    def renew(self, claims: list[tuple[str, str]], lease: float) -> int:
        """Extend the leases of the claims still held (job id, token); how many were renewed."""
        if not claims:
            return 0
        pairs = [value for claim in claims for value in claim]
        return int(self.scripts("renew", lease, *pairs))

    def reap(self, max_attempts: dict[str, int], limit: int = 1000) -> list[Reaped]:
        """Take back the jobs whose lease ran out (their worker died or froze)."""
        found = self.scripts("reap", limit, json.dumps(max_attempts))
        return [Reaped(found[i], ReapReply(found[i + 1]), found[i + 2], found[i + 3]) for i in range(0, len(found), 4)]

    def resend_lost(self, model: str, after: float, limit: int = 100) -> dict[str, str]:
        """Send again the model's jobs whose message was lost (see resend.lua): id → owner."""
        found = self.scripts("resend", model, after, limit)
        return dict(zip(found[::2], found[1::2], strict=True))

    def counts(self, model: str) -> dict[str, str]:
        """The model's counters (keys.py: sm:counts), as stored."""
        return cast(dict[str, str], self.redis.hgetall(keys.COUNTS + model))

    def models_held(self) -> set[str]:
        """The models with jobs (sent or parked) or replica records since the model last had neither."""
        return cast(set[str], self.redis.smembers(keys.MODELS))

    def abandon(self, model: str, grace: float, limit: int = 1000) -> Abandoned:
        """Fail the jobs of a model no longer served that waited over ``grace`` seconds (``model_removed``);
        forget the model once it has none."""
        found = self.scripts("abandon", model, grace, limit)
        return Abandoned(failed=[str(job_id) for job_id in found[1:]], forgotten=bool(found[0]))

    def expire_parked(self, model: str, queue_timeout: float, limit: int = 1000) -> list[str]:
        """Fail the model's parked jobs older than its queue timeout; their ids."""
        return [str(job_id) for job_id in self.scripts("expire_parked", model, queue_timeout, limit)]

    def waiting(self, job_id: str) -> Waiting | None:
        """What the job waits for, if it waits (QUEUED)."""
        return Waiting.decode(self.scripts("waiting", job_id))

    def expire_overdue(self, limit: int = 1000) -> list[Expired]:
        """Fail the waiting jobs past their ttl (``expired``)."""
        found = self.scripts("expire", limit)
        return [Expired(found[i], found[i + 1], found[i + 2]) for i in range(0, len(found), 3)]

    def dispatch(self, model: str) -> int:
        """Send parked jobs to free slots on READY replicas; how many were sent."""
        return int(self.scripts("dispatch", model))

    def dead_letters(self, limit: int = 100) -> list[str]:
        """Ids of the newest jobs that failed after their last attempt."""
        return cast(list[str], self.redis.lrange(keys.DEAD, 0, limit - 1))
