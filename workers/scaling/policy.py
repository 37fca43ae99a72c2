"""The scaling policy: a pure function from what was observed to how many replicas to start or stop.

No Redis, no Docker, no clock: ``decide(observation, policy, state, now) -> (decision, state)`` is all there is.
The state (the start backoff) is the caller's to keep; the autoscaler keeps it in Redis, so a new leader goes on
with it.

Rules, in order:

1. **No data, no decision.** No observation, or one older than ``stale_after``, changes nothing.
2. **From zero at once.** Zero live (starting or ready) replicas and any waiting job → start one now.
   Queued jobs wait for it; they never fail for lack of a replica. Jobs of priority low do not count here:
   alone they start nothing (they run once other work has started a replica, or one is kept warm).
3. **Add replicas while they pay off.** With ``slots = live replicas * concurrency``, the projected wait
   of the backlog is ``waiting * service time / slots``. A new replica helps only if it is ready before
   that backlog drains, so add one while the projected wait exceeds the average cold start.
4. **Bounds.** Never above ``max_replicas``, never below ``min_replicas`` (min > 0 keeps warm replicas); an
   operator's bounds (PUT /v1/models/<m>/scale) replace the models file's while set.
5. **Scale down only the idle.** While jobs wait nothing is stopped. Otherwise the replicas not
   needed for the jobs in flight may go, longest idle first, but only those holding no slot and idle for
   ``idle_timeout``; a busy replica is never stopped.
6. **Back off after failed starts.** When the observation shows a start failure it has not seen yet (image
   missing, crash in setup, not ready in time), the next start waits 1, 2, 4 … up to 60 s after it: never a
   crash loop. Once a replica is READY the failure is gone from the observation and the backoff resets.

Worked example: 40 jobs waiting, service time 0.2 s, concurrency 1, max 4, average cold start 1.0 s,
no replica yet. Rule 2 gives 1. With 1 replica the backlog takes 40 * 0.2 / 1 = 8 s > 1 s: add one;
with 2, 4 s > 1 s: add; with 3, 2.7 s; with 4, 2 s, still > 1 s, but 4 is the max. Start 4. Had the
cold start been 5 s: 8 s > 5 s gives a 2nd replica, 4 s < 5 s stops there: start 2, because a 3rd
would be ready only after the backlog had drained.
"""

import math
from dataclasses import dataclass

from workers.config import Scaling
from workers.store.records import ReplicaState, ScaleBounds


@dataclass(frozen=True)
class ReplicaSnapshot:
    """One replica as observed."""

    id: str
    state: ReplicaState
    in_flight: int
    idle_since: float


@dataclass(frozen=True)
class Observation:
    """A model's load and replicas at one moment."""

    taken_at: float
    waiting: int  # jobs not started yet: sent and parked
    running: int
    replicas: tuple[ReplicaSnapshot, ...]
    service_time: float  # seconds, moving average (or the configured seed)
    cold_start: float  # seconds, moving average (or the configured seed)
    start_failed_at: float | None = None  # the model's latest failed start, until a replica is READY
    low: int = 0  # of the waiting, those of priority low

    @property
    def demand(self) -> int:
        """The waiting jobs that call for capacity: the low ones only once a replica lives."""
        return self.waiting if self.live else self.waiting - self.low

    @property
    def live(self) -> int:
        """Replicas starting or ready: the capacity that exists or is coming."""
        return sum(r.state in (ReplicaState.STARTING, ReplicaState.READY) for r in self.replicas)


@dataclass(frozen=True)
class Policy:
    """A model's scaling parameters."""

    concurrency: int
    min_replicas: int
    max_replicas: int
    idle_timeout: float
    stale_after: float = 5.0  # seconds after which an observation no longer counts
    backoff_base: float = 1.0  # seconds before the first retry of a failed start
    backoff_max: float = 60.0  # longest wait between start attempts

    @classmethod
    def of(cls, scaling: Scaling, override: ScaleBounds | None = None) -> "Policy":
        """The policy a model's scaling section declares, within an operator's bounds if set."""
        bounds = override or configured_bounds(scaling)
        return cls(concurrency=scaling.concurrency, min_replicas=bounds.min_replicas,
                   max_replicas=bounds.max_replicas, idle_timeout=scaling.idle_timeout)


def configured_bounds(scaling: Scaling) -> ScaleBounds:
    """The replica bounds the models file declares."""
    return ScaleBounds(scaling.min_replicas, scaling.max_replicas)


@dataclass(frozen=True)
class ScalingState:
    """What the policy remembers between decisions: consecutive failed starts and when it may start again."""

    failures: int = 0
    retry_at: float = 0.0
    seen_failure_at: float = 0.0  # the failed start this state has counted last

    def fields(self) -> dict[str, str]:
        """As stored."""
        return {"failures": str(self.failures), "retry_at": repr(self.retry_at),
                "seen_failure_at": repr(self.seen_failure_at)}

    @classmethod
    def of(cls, fields: dict[str, str]) -> "ScalingState":
        """From what was stored (nothing: the initial state); the fields stored beside it are not its own."""
        if "failures" not in fields:
            return cls()
        return cls(failures=int(fields["failures"]), retry_at=float(fields["retry_at"]),
                   seen_failure_at=float(fields["seen_failure_at"]))


@dataclass(frozen=True)
class Decision:
    """What to do now, and why."""

    start: int = 0
    stop: tuple[str, ...] = ()
    desired: int | None = None
    reason: str = ""

    @property
    def changes(self) -> bool:
        """Whether anything is to be done."""
        return bool(self.start or self.stop)


def decide(observation: Observation | None, policy: Policy, state: ScalingState,
           now: float) -> tuple[Decision, ScalingState]:
    """How many replicas to start and which to stop, and the state to remember."""
    if observation is None or now - observation.taken_at > policy.stale_after:
        return Decision(reason="no fresh observation"), state
    state = backoff(state, observation.start_failed_at, policy)
    desired = bounded(wanted(observation, policy), policy)
    start = max(0, desired - observation.live)
    if start and now < state.retry_at:
        return Decision(desired=desired, reason=f"start backing off for {state.retry_at - now:.1f} s more"), state
    stop = idle_to_stop(observation, policy, now, observation.live - desired)
    return Decision(start=start, stop=stop, desired=desired, reason=explain(observation, desired)), state


def backoff(state: ScalingState, failed_at: float | None, policy: Policy) -> ScalingState:
    """Count a failed start not seen before (the next start waits longer); none left: start afresh."""
    if failed_at is None:
        return ScalingState() if state.failures else state
    if failed_at <= state.seen_failure_at:
        return state
    delay = min(policy.backoff_base * 2**state.failures, policy.backoff_max)
    return ScalingState(failures=state.failures + 1, retry_at=failed_at + delay, seen_failure_at=failed_at)


def wanted(observation: Observation, policy: Policy) -> int:
    """Replicas the work calls for, before bounds."""
    if observation.demand == 0:
        return math.ceil(observation.running / policy.concurrency)
    replicas = max(observation.live, 1)
    while replicas < policy.max_replicas and pays_off(observation, policy, replicas):
        replicas += 1
    return replicas


def projected_wait(waiting: int, service_time: float, slots: int) -> float:
    """Seconds until ``waiting`` jobs have all started on ``slots`` slots."""
    return waiting * service_time / slots


def pays_off(observation: Observation, policy: Policy, replicas: int) -> bool:
    """Whether one more replica would be ready before the backlog drains on ``replicas``."""
    slots = replicas * policy.concurrency
    return projected_wait(observation.waiting, observation.service_time, slots) > observation.cold_start


def bounded(replicas: int, policy: Policy) -> int:
    """``replicas`` within [min, max]."""
    return max(policy.min_replicas, min(policy.max_replicas, replicas))


def idle_to_stop(observation: Observation, policy: Policy, now: float, surplus: int) -> tuple[str, ...]:
    """Up to ``surplus`` ready replicas holding no slot and idle for the idle timeout, longest idle first."""
    if surplus <= 0 or observation.waiting:
        return ()
    idle = [r for r in observation.replicas if r.state is ReplicaState.READY and r.in_flight == 0
            and now - r.idle_since >= policy.idle_timeout]
    return tuple(r.id for r in sorted(idle, key=lambda r: r.idle_since)[:surplus])


def explain(observation: Observation, desired: int) -> str:
    """The reason for a decision, for the event log."""
    low = f" (low={observation.low})" if observation.low else ""
    return (f"waiting={observation.waiting}{low} running={observation.running} live={observation.live} "
            f"service={observation.service_time:.3f}s cold_start={observation.cold_start:.3f}s -> {desired}")
