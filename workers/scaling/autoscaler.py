"""The autoscaler: observe → decide → reconcile for every model, while it leads (``Leadership``).

- **observe**: one consistent snapshot per model (``observe.lua``): load, replicas, averages, start failure, and the
  policy's state as the last leader left it.
- **decide**: the pure policy (``workers.scaling.policy``, within an operator's bounds if set) gives a decision and
  its new state, kept in Redis with the replicas it wants (``desired``: changed only when that number changes).
- **reconcile**: registry writes at once, each fenced by the leader's token; every blocking call (a start, a stop, a
  readiness wait, a scan of what runs) is an action off the loop, and a replica with an action in flight is left
  alone. The loop blocks only on Redis, so it renews its leadership every pass; leadership lost mid-action (a paused
  process) makes that action's writes fail, and the action undoes what it started.

Only the leader reads the submits' wake-ups; a standby sleeps. A pass that fails (Redis down, a Docker error) is
an event with its reason, then a retry: nothing stops the loop, and leaving never stops a serving replica (``up``
asks for that itself).
"""

import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import redis

from workers.config import ModelConfig
from workers.hooks import Hooks
from workers.scaling.actions import ActionRunner, Actions, Threads, reason_of
from workers.scaling.backends import Launched, Phase, ReplicaBackend, Status
from workers.scaling.pidfiles import new_replica_id
from workers.scaling.policy import Observation, Policy, ReplicaSnapshot, ScalingState, decide
from workers.scaling.readiness import Probe
from workers.scaling.spec import ReplicaSpec
from workers.store import Leadership, LogRequest, Store
from workers.store.records import Desired, ModelSnapshot, Replica, ReplicaState
from workers.store.replicas import cut

log = logging.getLogger(__name__)

WAKE_GAP = 0.05  # seconds at least between passes woken by submits (wake-ups coalesce meanwhile)
SWEEP = "sweep"  # the busy mark of the scan that matches the registry with what runs
FAILED_GRACE = 5.0  # seconds past the request timeout a FAILED replica waits for its other jobs' calls to end
NOTED = 10  # lines of a starting replica's log kept in its record, and added to the reason of a failed start


class Autoscaler:
    """Keeps each model's replicas where the policy wants them."""

    def __init__(self, models: dict[str, ModelConfig], store: Store, backend: ReplicaBackend, probe: Probe,
                 actions: Actions | None = None, clock: Callable[[], float] | None = None,
                 orphan_after: float = 5.0, sweep_every: float = 1.0, removed_after: float = 60.0,
                 hooks: Hooks | None = None) -> None:
        self.models = models
        self.store = store
        self.backend = backend
        self.probe = probe
        self.actions = ActionRunner(actions or Threads(), self.action_failed)
        self.clock = clock or store.now
        self.orphan_after = orphan_after  # seconds before a message nobody took counts as lost
        self.sweep_every = sweep_every
        self.removed_after = removed_after  # seconds a job (or an idle replica) of a model not in the models file
        # waits before it fails (is stopped): a rolling deploy may be adding the model
        self.last_sweep = -math.inf
        self.log_readers = threading.BoundedSemaphore(4)  # backend log reads at once
        self.hooks = hooks or Hooks()  # called after each scaling decision

    def run(self, stopping: threading.Event, interval: float, leadership: Leadership) -> None:
        """Lead while holding the leadership, stand by otherwise, until ``stopping`` is set.

        A full pass (the reaper and every model) runs every ``interval``; between them, submits that name models
        wake the leader to reconcile those alone, at most once per ``WAKE_GAP``.
        """
        leading, last_full, woken = False, -math.inf, set[str]()
        while not stopping.is_set():
            try:
                token = leadership.hold()
                if token is None:
                    if leading:
                        log.warning("leadership lost; standing by")
                    leading = False
                    stopping.wait(interval)
                    continue
                if not leading:
                    log.info("leading: adopting the replicas that run")
                    self.store.replicas.reindex(token)
                    self.actions.spawn(SWEEP, functools.partial(self.sweep, token, adopting=True))
                    leading = True
                full = time.monotonic() - last_full >= interval
                self.lead(token, full, woken)
                if full:
                    last_full = time.monotonic()
                elif woken:
                    stopping.wait(WAKE_GAP)
                until_full = last_full + interval - time.monotonic()
                wake_ups = self.store.wake_ups(max(0.01, min(until_full, leadership.ttl / 3)))
                woken = wake_ups.models & set(self.models)
                for request in wake_ups.logs:
                    self.actions.spawn(f"logs-{request.reply}", functools.partial(self.answer_logs, request))
            except Exception as exc:
                log.error("autoscaler pass failed: %s", reason_of(exc))
                with contextlib.suppress(Exception):
                    self.store.events.record("", "autoscaler_error", reason=reason_of(exc))
                stopping.wait(interval)

    def lead(self, token: str, full: bool, woken: Iterable[str] = ()) -> None:
        """One pass as leader: a full one takes back lost jobs and reconciles every model; else the woken."""
        if full:
            try:
                self.reap_jobs()
            except redis.OutOfMemoryError as exc:  # a full store: scaling goes on, the janitor waits for room
                log.warning("the job janitor waits for room in Redis: %s", exc)
        for model in self.models.values() if full else [self.models[name] for name in woken]:
            self.reconcile(model, token)
        if full and time.monotonic() - self.last_sweep >= self.sweep_every:
            self.actions.spawn(SWEEP, functools.partial(self.sweep, token, adopting=False))

    def reap_jobs(self) -> None:
        """Take back the jobs of lost workers, fail those past their ttl, resend lost messages, expire long waits, fill
        free slots, and fail
        the waiting jobs of models no longer served."""
        jobs = self.store.jobs
        for reaped in jobs.reap({name: m.jobs.max_attempts for name, m in self.models.items()}):
            self.store.events.record(reaped.model, f"job_{reaped.outcome.lower()}", job=reaped.job_id,
                                     owner=reaped.owner, reason="lease expired: its worker was lost")
        for overdue in jobs.expire_overdue():
            self.store.events.record(overdue.model, "job_expired", job=overdue.job_id, owner=overdue.owner,
                                     reason="not started within its ttl")
        for model in self.models.values():
            for job_id, owner in jobs.resend_lost(model.name, self.orphan_after).items():
                self.store.events.record(model.name, "job_resent", job=job_id, owner=owner,
                                         reason="its message was lost; sent again")
            if expired := jobs.expire_parked(model.name, model.jobs.queue_timeout):
                self.store.events.record(model.name, "jobs_expired", reason=f"{len(expired)} job(s) waited over "
                                                                            f"the queue timeout")
            jobs.dispatch(model.name)
        for name in jobs.models_held() - set(self.models):
            if abandoned := jobs.abandon(name, self.removed_after).failed:
                self.store.events.record(name, "jobs_removed", reason=f"{len(abandoned)} waiting job(s) failed: "
                                                                      f"the model is not in the models file")

    def observe(self, model: ModelConfig) -> ModelSnapshot:
        """The model now."""
        return self.store.replicas.snapshot(model.name, model.scaling.seeds)

    def reconcile(self, model: ModelConfig, token: str) -> None:
        """Tidy away failed and drained replicas, then start and stop what the policy decides."""
        snapshot = self.observe(model)
        state = ScalingState.of(snapshot.scaling)
        observed = observation(snapshot)
        now = self.clock()
        decision, new_state = decide(observed, Policy.of(model.scaling, snapshot.override), state, now)
        wanted = snapshot.desired
        if decision.desired is not None and (wanted is None or wanted.replicas != decision.desired):
            wanted = Desired(decision.desired, now, decision.reason)
        if new_state != state or wanted != snapshot.desired:
            self.store.replicas.save_scaling(token, model.name,
                                             new_state.fields() | (wanted.fields() if wanted else {}))
        self.hooks.after_decision(model.name, decision, observed)
        for replica in snapshot.replicas:
            self.tidy(model, replica, token, snapshot.now)
        if decision.start:
            self.store.events.record(model.name, "scale_up", reason=f"start {decision.start}: {decision.reason}")
        for _ in range(decision.start):
            self.start(model, token)
        for replica_id in decision.stop:
            if self.store.replicas.drain_if_idle(token, replica_id, model.scaling.idle_timeout):
                self.store.events.record(model.name, "scale_down", replica_id, f"idle: {decision.reason}")

    def tidy(self, model: ModelConfig, replica: Replica, token: str, now: float) -> None:
        """Stop a FAILED or DRAINING replica (a FAILED one once its other jobs have let go of it); watch a STARTING
        one nobody watches (adopted)."""
        if self.actions.busy(replica.id) or draining(model, replica, now):
            return
        if replica.state in (ReplicaState.FAILED, ReplicaState.DRAINING):
            self.actions.spawn(replica.id, lambda: self.stop(replica, token))
        elif replica.state is ReplicaState.STARTING and replica.handle:
            self.actions.spawn(replica.id, lambda: self.adopt_starting(model, replica, token, now))

    def adopt_starting(self, model: ModelConfig, replica: Replica, token: str, now: float) -> None:
        """Watch a replica another autoscaler was starting; one it left not running (created, never started)
        is removed, not counted as a failed start of the model (an action)."""
        if not self.backend.status(replica.handle).live:
            self.backend.stop(replica.handle)
            if self.store.replicas.remove(token, replica):
                self.store.events.record(model.name, "lost", replica.id, "its start did not finish")
            return
        left = max(0.0, model.scaling.start_timeout - (now - replica.started_at))
        self.await_ready(model, replica.id, Launched(replica.endpoint, replica.handle), token, left)

    def start(self, model: ModelConfig, token: str) -> None:
        """Record a replica STARTING (busy from before its record exists), then start it off the loop."""
        replica_id = new_replica_id()
        self.actions.reserve(replica_id)
        if self.store.replicas.add(token, replica_id, model.name, self.backend.name):
            self.actions.run_reserved(replica_id, lambda: self.launch(model, replica_id, token))
        else:
            self.actions.release(replica_id)

    def launch(self, model: ModelConfig, replica_id: str, token: str) -> None:
        """Start the replica and wait for it to be ready (an action). Its cold start's stages are timed here: it
        has a host once the backend has placed it (at once on the autoscaler's own machine), it is created once the
        backend reports it running."""
        begun = time.monotonic()
        try:
            launched = self.backend.start(ReplicaSpec.of(model, replica_id))
        except Exception as exc:
            self.start_failed(model, replica_id, reason_of(exc), token)
            return
        stages = Stages(placed=begun + launched.placed_in,
                        created=time.monotonic() if launched.status.phase is Phase.RUNNING else None)
        recorded = self.store.replicas.launched(token, replica_id, launched.endpoint, launched.handle, launched.host,
                                                stages.ago(stages.placed), stages.ago(stages.created))
        if recorded < 0:  # its record is gone (the leader found it not running while it started): undo
            self.backend.stop(launched.handle)
            self.store.events.record(model.name, "start_abandoned", replica_id, "its record was removed while it "
                                                                                "started")
        elif recorded > 0:
            self.await_ready(model, replica_id, launched, token, model.scaling.start_timeout, stages)
        # else another autoscaler leads now: it adopts the replica (or stops it as a stray)

    def await_ready(self, model: ModelConfig, replica_id: str, launched: Launched, token: str,
                    timeout: float, stages: "Stages | None" = None) -> None:
        """Probe the replica until it is ready (READY) or never will be (a failed start, with its last lines);
        meanwhile its record shows the last lines it printed, and ``stages`` learns when it first ran and first
        answered."""
        seen = stages or Stages()

        def progress() -> None:
            self.store.replicas.note(token, replica_id, self.backend.logs(replica_id, launched.handle, NOTED))

        def status() -> Status:
            found = self.backend.status(launched.handle)
            if found.phase is Phase.RUNNING and seen.created is None:
                seen.created = time.monotonic()
            return found

        def answered() -> None:
            seen.up = time.monotonic()

        reason = self.probe.wait(model, launched.endpoint, status, timeout, progress, answered)
        if reason:
            lines = cut(self.backend.logs(replica_id, launched.handle, NOTED), 1500, line_limit=300)
            self.start_failed(model, replica_id, reason[:1000] + ("; its last lines:\n" + "\n".join(lines)
                                                                   if lines else ""), token)
            return
        found = self.store.replicas.ready(token, replica_id, model.scaling.concurrency, seen.ago(seen.created),
                                          seen.ago(seen.up))
        if found is not None:
            self.store.events.record(model.name, "ready", replica_id,
                                     f"cold start {found[0]:.3f} s; {found[1]} waiting job(s) sent to it")

    def start_failed(self, model: ModelConfig, replica_id: str, reason: str, token: str) -> None:
        """Record a failed start (the policy backs off), and fail waiting jobs if the model says so."""
        log.error("replica %s of %s failed to start: %s", replica_id, model.name, reason)
        failed = self.store.replicas.start_failed(token, replica_id, model.name, reason,
                                                  model.jobs.on_start_failure == "fail")
        if failed is not None:  # else another autoscaler leads: it judges the replica itself
            self.store.events.record(model.name, "start_failed", replica_id,
                                     reason + (f" ({failed} waiting job(s) failed)" if failed else ""))

    def stop(self, replica: Replica, token: str) -> None:
        """Stop the replica and forget it (an action)."""
        if replica.state is ReplicaState.FAILED:
            self.store.events.record(replica.model, "replica_failed", replica.id, replica.reason)
        if replica.handle:
            self.backend.stop(replica.handle)
        self.store.replicas.remove(token, replica)

    def sweep(self, token: str, adopting: bool) -> None:
        """Match the registry with what runs: forget the vanished (never one whose handle still runs), note the
        adopted, stop strays; keep the hosts as the backend sees them (an action)."""
        self.last_sweep = time.monotonic()
        running = self.backend.running()
        self.save_hosts(token)
        removed = self.store.jobs.models_held() - set(self.models)
        known = {r.id: r for name in [*self.models, *removed] for r in self.store.replicas.of(name)}
        now = self.clock()
        for replica in known.values():
            if replica.model in removed:
                if not self.actions.busy(replica.id) and replica.in_flight == 0 and \
                        now - replica.idle_since >= self.removed_after:
                    self.retire(replica, token)
                continue
            launched = running.get(replica.id)
            if launched is not None:
                if not replica.handle and launched.endpoint:  # (a replica still being placed has none yet)
                    self.store.replicas.launched(token, replica.id, launched.endpoint, launched.handle, launched.host)
                if adopting:
                    self.store.events.record(replica.model, "adopted", replica.id, replica.state.value)
                if not launched.status.live and replica.state is ReplicaState.READY:
                    self.store.replicas.failed(token, replica.id, f"not running while ready: {launched.status.reason}"
                                               if launched.status.reason else "exited while ready")
            elif not self.actions.busy(replica.id) and not (replica.handle and
                                                            self.backend.status(replica.handle).live):
                gone = "exited while ready" if replica.state is ReplicaState.READY else "not running"
                if self.store.replicas.remove(token, replica):
                    self.store.events.record(replica.model, "lost", replica.id, f"in the registry but {gone}")
        for replica_id, launched in running.items():
            if replica_id not in known and not self.actions.busy(replica_id):
                self.backend.stop(launched.handle)
                self.store.events.record("", "stray_removed", replica_id, f"running but not in the registry "
                                                                          f"({launched.handle})")

    def save_hosts(self, token: str) -> None:
        """Keep the machines replicas may run on, as the backend sees them now; a failure is logged, never raised."""
        try:
            self.store.replicas.save_hosts(token, self.backend.hosts())
        except Exception as exc:
            log.warning("cannot save the hosts: %s", reason_of(exc))

    def retire(self, replica: Replica, token: str) -> None:
        """Stop a replica of a model no longer served, idle past the grace, and forget it."""
        if replica.handle:
            self.backend.stop(replica.handle)
        if self.store.replicas.remove(token, replica):
            self.store.events.record(replica.model, "replica_removed", replica.id,
                                     "its model is not in the models file")

    def action_failed(self, name: str, exc: BaseException) -> None:
        """An action raised: an event with the reason (the action's replica, if it had one)."""
        log.error("%s: %s", name, reason_of(exc))
        with contextlib.suppress(Exception):
            self.store.events.record("", "action_failed", name if name != SWEEP else "", reason_of(exc))

    def answer_logs(self, request: LogRequest) -> None:
        """Read a replica's last lines for whoever still waits for them, a few at a time (an action)."""
        with self.log_readers:
            if not self.store.replicas.still_asked(request.reply):
                return
            replica = self.store.replicas.get(request.replica)
            lines = self.backend.logs(replica.id, replica.handle, request.tail) if replica else []
            self.store.replicas.answer_logs(request.reply, lines)

    def stop_all(self, token: str) -> None:
        """Stop every replica of every model, and strays of ours, all at once (``up`` shutting down): it takes
        one replica's grace, not the sum of them."""
        replicas = [replica for name in self.models for replica in self.store.replicas.of(name)]
        try:
            running = self.backend.running()
        except Exception as exc:
            log.error("cannot look for strays: %s", reason_of(exc))
            running = {}
        replicas = [replace(replica, handle=running[replica.id].handle)  # one starting: its handle not recorded yet
                    if not replica.handle and replica.id in running else replica for replica in replicas]
        stops = [threading.Thread(target=self.shut_down, args=(replica, token)) for replica in replicas]
        strays = [launched.handle for replica_id, launched in running.items()
                  if replica_id not in {replica.id for replica in replicas}]
        stops += [threading.Thread(target=self.backend.stop, args=(handle,)) for handle in strays]
        for stop in stops:
            stop.start()
        for stop in stops:
            stop.join()

    def shut_down(self, replica: Replica, token: str) -> None:
        """Stop one replica because the platform is shutting down."""
        try:
            self.stop(replica, token)
            self.store.events.record(replica.model, "scale_down", replica.id, "the platform is shutting down")
        except Exception as exc:
            log.error("cannot stop replica %s: %s", replica.id, reason_of(exc))


@dataclass
class Stages:
    """When (``time.monotonic``) a starting replica had its host, ran, and first answered: None while not seen."""

    placed: float | None = None
    created: float | None = None
    up: float | None = None

    @staticmethod
    def ago(at: float | None) -> float | None:
        """Seconds since ``at`` (None stays None)."""
        return None if at is None else time.monotonic() - at


def draining(model: ModelConfig, replica: Replica, now: float) -> bool:
    """Whether a FAILED replica still holds slots of jobs whose calls may yet end well: it is out of routing, and
    stopping it would fail them too; each call ends within its request timeout (and a probe), then it is stopped."""
    return (replica.state is ReplicaState.FAILED and replica.in_flight > 0 and replica.failed_at is not None
            and now < replica.failed_at + model.jobs.request_timeout + FAILED_GRACE)


def observation(snapshot: ModelSnapshot) -> Observation:
    """The policy's view of a snapshot."""
    return Observation(
        taken_at=snapshot.now, waiting=snapshot.waiting, running=snapshot.running, low=snapshot.low,
        replicas=tuple(ReplicaSnapshot(r.id, r.state, r.in_flight, r.idle_since) for r in snapshot.replicas),
        service_time=snapshot.averages["service_time"].seconds, cold_start=snapshot.averages["cold_start"].seconds,
        start_failed_at=snapshot.start_failure.at if snapshot.start_failure else None,
    )
