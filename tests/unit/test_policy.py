"""The scaling policy, table-driven on synthetic time (no sleeps), and as a hypothesis state machine."""

from dataclasses import replace

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from workers.scaling.policy import Decision, Observation, Policy, ReplicaSnapshot, ScalingState, decide
from workers.store.records import ReplicaState

pytestmark = pytest.mark.unit

NOW = 1_000.0
POLICY = Policy(concurrency=1, min_replicas=0, max_replicas=4, idle_timeout=30)
READY, STARTING = ReplicaState.READY, ReplicaState.STARTING


def replicas(*specs: tuple[ReplicaState, int, float]) -> tuple[ReplicaSnapshot, ...]:
    """Replicas from (state, in flight, idle for seconds)."""
    return tuple(ReplicaSnapshot(f"r{i}", state, busy, NOW - idle) for i, (state, busy, idle) in enumerate(specs))


def observe(waiting: int = 0, running: int = 0, live: tuple[ReplicaSnapshot, ...] = (), service: float = 0.2,
            cold: float = 1.0, age: float = 0.0, failed_at: float | None = None, at: float = NOW,
            low: int = 0) -> Observation:
    """An observation taken ``age`` seconds before ``at`` (``low``: of the waiting, those of priority low)."""
    return Observation(taken_at=at - age, waiting=waiting, running=running, replicas=live,
                       service_time=service, cold_start=cold, start_failed_at=failed_at, low=low)


CASES: list[tuple[str, Observation | None, Policy, int, tuple[str, ...]]] = [
    # name, observation, policy, replicas to start, replicas to stop
    ("nothing to do", observe(), POLICY, 0, ()),
    ("one job from zero starts one at once", observe(waiting=1, service=0.01), POLICY, 1, ()),
    ("from zero even when a replica cannot pay off", observe(waiting=1, cold=100), POLICY, 1, ()),
    ("burst from zero: worked example", observe(waiting=40), POLICY, 4, ()),
    ("slow cold start: only the replicas that pay off", observe(waiting=40, cold=5), POLICY, 2, ()),
    ("starting capacity counts", observe(waiting=40, cold=5, live=replicas((STARTING, 0, 0))), POLICY, 1, ()),
    ("backlog drains before a new one is ready",
     observe(waiting=3, running=2, live=replicas((READY, 1, 0), (READY, 1, 0))), POLICY, 0, ()),
    ("concurrency adds slots", observe(waiting=40, cold=1), replace(POLICY, concurrency=4), 2, ()),
    ("never above max", observe(waiting=1000), replace(POLICY, max_replicas=3), 3, ()),
    ("min keeps warm replicas", observe(), replace(POLICY, min_replicas=2), 2, ()),
    ("min replicas are never stopped",
     observe(live=replicas((READY, 0, 100), (READY, 0, 100))), replace(POLICY, min_replicas=2), 0, ()),
    ("idle past the timeout: stopped", observe(live=replicas((READY, 0, 31))), POLICY, 0, ("r0",)),
    ("idle, but not long enough", observe(live=replicas((READY, 0, 29))), POLICY, 0, ()),
    ("busy replica is never stopped",
     observe(running=1, live=replicas((READY, 1, 100), (READY, 0, 100))), POLICY, 0, ("r1",)),
    ("longest idle goes first",
     observe(running=1, live=replicas((READY, 0, 40), (READY, 0, 90), (READY, 1, 0))),
     replace(POLICY, min_replicas=2), 0, ("r1",)),
    ("all surplus idle ones go, longest idle first",
     observe(running=1, live=replicas((READY, 0, 40), (READY, 0, 90), (READY, 1, 0))), POLICY, 0, ("r1", "r0")),
    ("nothing stops while jobs wait", observe(waiting=1, live=replicas((READY, 0, 100), (READY, 0, 100))),
     POLICY, 0, ()),
    ("a starting replica is not stopped", observe(live=replicas((STARTING, 0, 100))), POLICY, 0, ()),
    ("low jobs alone start nothing from zero", observe(waiting=5, low=5), POLICY, 0, ()),
    ("low jobs alone keep min replicas", observe(waiting=5, low=5), replace(POLICY, min_replicas=1), 1, ()),
    ("a normal job beside low ones starts one from zero", observe(waiting=6, low=5, service=0.01), POLICY, 1, ()),
    ("a normal job from zero: the low ones count in the burst", observe(waiting=40, low=39), POLICY, 4, ()),
    ("once a replica lives, low jobs count", observe(waiting=40, low=40, live=replicas((READY, 1, 0))), POLICY, 3,
     ()),
    ("a replica is not stopped while low jobs wait", observe(waiting=1, low=1, live=replicas((READY, 0, 100))),
     POLICY, 0, ()),
    ("no observation, no decision", None, POLICY, 0, ()),
    ("stale observation, no decision", observe(waiting=40, age=60), POLICY, 0, ()),
]


@pytest.mark.parametrize(("name", "observation", "policy", "start", "stop"), CASES, ids=[c[0] for c in CASES])
def test_decide(name: str, observation: Observation | None, policy: Policy, start: int,
                stop: tuple[str, ...]) -> None:
    decision, state = decide(observation, policy, ScalingState(), NOW)
    assert (decision.start, decision.stop) == (start, stop), decision.reason
    assert state == ScalingState()


def test_failed_starts_back_off_exponentially_then_reset() -> None:
    state, delays = ScalingState(), []
    for failure in range(8):
        failed_at = NOW + failure
        _, state = decide(observe(waiting=40, failed_at=failed_at, at=failed_at), POLICY, state, failed_at)
        delays.append(state.retry_at - failed_at)
        _, again = decide(observe(waiting=40, failed_at=failed_at, at=failed_at), POLICY, state, failed_at)
        assert again == state  # the same failure is counted once
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]
    last = NOW + 7
    assert decide(observe(waiting=40, failed_at=last, at=last + 59), POLICY, state, last + 59)[0].start == 0
    assert decide(observe(waiting=40, failed_at=last, at=last + 60), POLICY, state, last + 60)[0].start == 4
    decision, reset = decide(observe(waiting=40, at=last + 1), POLICY, state, last + 1)  # a replica got READY
    assert decision.start == 4 and reset == ScalingState()


class Model(RuleBasedStateMachine):
    """A simulated model: jobs arrive, replicas start and serve, time passes; the policy decides each tick."""

    def __init__(self) -> None:
        super().__init__()
        self.policy = POLICY
        self.now = NOW
        self.queued = 0
        self.replicas: dict[str, ReplicaSnapshot] = {}
        self.counter = 0
        self.last: tuple[Policy, Decision] | None = None

    @rule(low=st.integers(0, 2), extra=st.integers(0, 4), concurrency=st.integers(1, 4),
          idle=st.floats(0.5, 60))
    def configure(self, low: int, extra: int, concurrency: int, idle: float) -> None:
        self.policy = Policy(concurrency=concurrency, min_replicas=low, max_replicas=max(1, low + extra),
                             idle_timeout=idle)

    @rule(count=st.integers(1, 50))
    def jobs_arrive(self, count: int) -> None:
        self.queued += count

    @rule(seconds=st.floats(0.01, 120))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @precondition(lambda self: any(r.state is STARTING for r in self.replicas.values()))
    @rule()
    def a_replica_becomes_ready(self) -> None:
        replica = next(r for r in self.replicas.values() if r.state is STARTING)
        self.replicas[replica.id] = replace(replica, state=READY, idle_since=self.now)

    @rule()
    def a_job_starts(self) -> None:
        for replica in self.replicas.values():
            if self.queued and replica.state is READY and replica.in_flight < self.policy.concurrency:
                self.replicas[replica.id] = replace(replica, in_flight=replica.in_flight + 1)
                self.queued -= 1
                return

    @rule()
    def a_job_finishes(self) -> None:
        for replica in self.replicas.values():
            if replica.in_flight:
                self.replicas[replica.id] = replace(replica, in_flight=replica.in_flight - 1, idle_since=self.now)
                return

    @rule()
    def tick(self) -> None:
        before = len(self.replicas)
        in_flight = sum(r.in_flight for r in self.replicas.values())
        observation = Observation(self.now, self.queued, in_flight, tuple(self.replicas.values()), 0.2, 1.0)
        decision, _ = decide(observation, self.policy, ScalingState(), self.now)
        for replica_id in decision.stop:
            assert self.replicas[replica_id].in_flight == 0, "stopped a busy replica"
            del self.replicas[replica_id]
        for _ in range(decision.start):
            self.counter += 1
            self.replicas[f"r{self.counter}"] = ReplicaSnapshot(f"r{self.counter}", STARTING, 0, self.now)
        if self.queued and not observation.live:
            assert decision.start >= 1, "queued work with zero replicas did not start one"
        assert len(self.replicas) >= self.policy.min_replicas, "below min after a decision"
        assert len(self.replicas) <= max(before, self.policy.max_replicas), "scaled above max"
        self.last = (self.policy, decision)

    @invariant()
    def desired_within_bounds(self) -> None:
        if self.last is not None:
            policy, decision = self.last
            assert decision.desired is not None
            assert policy.min_replicas <= decision.desired <= policy.max_replicas


Model.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
test_policy_state_machine = Model.TestCase
