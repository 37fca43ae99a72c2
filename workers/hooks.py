"""The hook seam: cross-cutting work (metrics, feeds) that plugs in on a job's end and on scaling decisions without
touching the runner or the autoscaler.

A ``Hook`` overrides the methods it cares about; the others are no-ops. ``Hooks`` calls every hook of a process, in
reverse order of registration (as "after" hooks unwind), and logs a hook that raises: it is never raised to the
caller, and the hooks after it still run. Hooks run on the caller's thread after the store has committed, so a
hook must be quick (hand slow work to a thread of its own); what must survive a crash belongs in the store's
scripts, not here (webhooks are written by the script that ends a job).
"""

import logging
from collections.abc import Iterable

from workers.job import Job, JobError, JobStatus
from workers.scaling.policy import Decision, Observation

log = logging.getLogger(__name__)


class Hook:
    """A hook: every method a no-op unless overridden."""

    def after_finish(self, job: Job, status: JobStatus, error: JobError | None, seconds: float) -> None:
        """A worker committed the end of ``job`` it ran (the job as it started: id, model, owner, attempts) as
        ``status``, with ``error`` when the worker knows it; ``seconds``: the last replica call's wall time."""

    def after_decision(self, model: str, decision: Decision, observation: Observation) -> None:
        """The leading autoscaler decided ``decision`` for ``model`` from ``observation``."""


class Hooks:
    """The hooks of a process, called together; a failing hook is logged, never raised."""

    def __init__(self, hooks: Iterable[Hook] = ()) -> None:
        self.hooks = tuple(hooks)

    def after_finish(self, job: Job, status: JobStatus, error: JobError | None, seconds: float) -> None:
        """Call every hook's ``after_finish``."""
        for hook in reversed(self.hooks):
            try:
                hook.after_finish(job, status, error, seconds)
            except Exception:
                log.exception("hook %s failed after job %s finished", type(hook).__name__, job.id)

    def after_decision(self, model: str, decision: Decision, observation: Observation) -> None:
        """Call every hook's ``after_decision``."""
        for hook in reversed(self.hooks):
            try:
                hook.after_decision(model, decision, observation)
            except Exception:
                log.exception("hook %s failed after a decision for %s", type(hook).__name__, model)
