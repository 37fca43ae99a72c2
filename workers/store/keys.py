"""Every Redis key of the platform, written once. Nothing outside ``workers.store`` names a key.

Key schema (``{model}`` a model name, ``{id}`` a job or replica id). Times are Redis ``TIME`` (one clock for every
host), read inside the scripts.

- ``sm:job:{id}``            hash   the job record: id, model, status, input, output, error, owner, created_at,
                                    started_at, finished_at, replica, attempts, cancelled_while, claim,
                                    lease_until, worker, slot, commits, sends, push, requeued_at, idem, ttl,
                                    execution_timeout, deadline (while it waits: created or resubmitted + ttl),
                                    priority, offset (of its rank: the model's priority aging, + high, - low),
                                    rank, parked_at, run and parts_base (run again: how often, and how many
                                    parts its earlier runs gave); with a webhook: webhook (its URL),
                                    webhook_status (pending, delivered, failed), webhook_attempts, webhook_error,
                                    webhook_since (when its delivery began); cold_start (the replica it ran on,
                                    if it was submitted, or queued again, before that replica was READY). Expires
                                    ``job_retention`` seconds after it finishes (or after its webhook was
                                    delivered or given up).
- ``sm:queued:{model}``      zset   the sent: QUEUED jobs whose Celery message is out (or being run), by when it
                                    was sent (``SENT``; the key keeps its first name, so a platform's data stays
                                    readable across the rename).
- ``sm:parked:{model}``      zset   QUEUED jobs waiting for a free replica slot, with no message and no claim, by
                                    when each began waiting (submitted, or last run again), oldest first. The
                                    waiting jobs (the queue depth) = both sets.
- ``sm:sent_by_rank:{model}`` zset the sent again, by rank (the job's ``rank``: created or resubmitted, less its
                                    priority's offset); a job starts on a free slot only if fewer better-ranked
                                    jobs are sent than there are free slots, else it parks.
- ``sm:parked_by_rank:{model}`` zset the parked again, by rank: a freed slot (or a replica turning READY) goes to
                                    the best-ranked.
- ``sm:low:{model}``         zset   the model's waiting jobs of priority low (alone, they start no replica from zero).
- ``sm:unstarted:{model}:{owner}`` zset the owner's (an API key's) jobs of the model not started yet, by when
                                    submitted: added on submit, removed where a job stops waiting (it starts,
                                    ends or is withdrawn); a job taken back from a lost run is not added again.
- ``sm:running:{model}``     set    RUNNING jobs.
- ``sm:models``              set    models with jobs (sent or parked) or replica records since the model last had
                                    neither; the janitor finds a model gone from the models file here.
- ``sm:pushes:{model}``      string messages pushed onto the model's Celery queue so far; a job's ``push`` is the
                                    number of its latest message (workers take the oldest first, so it has left
                                    the queue once as many were pushed after it as the queue holds).
- ``sm:withdrawn:{model}``   zset   withdrawn jobs whose message was taken out of the middle of the Celery queue,
                                    by its push number (resend.lua counts them out); emptied when the queue is.
- ``sm:idem:{owner}:{key}``  hash   an Idempotency-Key of an owner (an API key; '' without keys): job (the id of
                                    the job it made), digest (a hash of the request); expires after
                                    ``idempotency_retention`` seconds.
- ``sm:deadlines``           zset   QUEUED jobs with a ttl, by when they must have started (the job's ``deadline``);
                                    removed where a job stops waiting; the janitor fails the overdue ``expired``.
- ``sm:leases``              zset   claimed jobs by lease expiry; the reaper takes back the expired.
- ``sm:purge:{uuid}``        zset   the jobs a purge looks at: the model's waiting jobs when it began (a copy of
                                    both sets), taken off as it goes; gone when it ends, or 10 minutes after.
- ``sm:owned:{owner}``      zset   the owner's (an API key's; ``-``: no API keys) jobs by created_at (its score is
                                    the recorded text, so a created_at read back names its entry): added by the
                                    submit, which drops those created over ``job_retention`` seconds ago and keeps
                                    the newest ``OWNED_KEPT``; an id whose record expired is skipped when read.
- ``sm:dead``                list   jobs that failed after their last attempt (dead letters), newest first.
- ``sm:done:{id}``           list   one token pushed when the job finishes; waiters BLMOVE it onto itself.
- ``sm:parts:{id}``          list   the parts a streaming run gave so far (JSON each), in order; appended under
                                    the job's claim (append_part.lua), at most ``SM_MAX_PARTS``; the finished
                                    job's output is all of them. Expires with the job record.
- ``sm:parts_taken:{id}``    string how many of the job's parts RunPod's ``stream/<id>`` has handed out (each poll
                                    takes the parts after them); expires the retention after the last poll.
- ``sm:stats:{model}``       hash   moving averages in seconds and their sample counts: service_time, cold_start.
- ``sm:counts:{model}``      hash   counters for ``/metrics``, never reset: submitted, finished:{STATUS}, and per span
                                    of a job (queue_wait and service, of a job that ended while RUNNING; total,
                                    created to finished, of every job) its histogram: {span}:{bound} the jobs whose
                                    span was at most ``BOUNDS``' bound and over the one before (+Inf: over all),
                                    {span}:sum their seconds; start_failed (failed replica starts, by
                                    start_failed.lua); webhook:{outcome} (delivery attempts recorded by
                                    webhook_attempt.lua: delivered, retry, given_up); event:{kind} (the model's
                                    events, written with each event); a cold start's stages and
                                    total, per host, as the spans: cold_start:{stage}:{host}:{bound} and :sum,
                                    cold_start:total:{host}:{bound}.
- ``sm:platform_counts``     hash   counters for ``/metrics`` of no one model, never reset: refused:{reason}
                                    (requests refused: rate_limited, unauthorized, too_many_failed_authentications
                                    by count.lua, queue_full by submit.lua and resubmit.lua), event:{kind} (events
                                    that name no model).
- ``sm:replicas:{model}``    set    the model's replica ids.
- ``sm:replica:{id}``        hash   a replica: id, model, backend, endpoint, handle, state, started_at, ready_at,
                                    last_used, reason, failed_at, concurrency (its slots, from READY on); while
                                    STARTING the last lines of its log
                                    (log_tail, log_at); its cold start's stage ends placed_at, created_at, up_at
                                    (each if seen), waited (the jobs sent to it once READY, until its first
                                    result) and first_result_at.
- ``sm:cold_start:{id}``     string a replica's cold start (JSON: replica, model, host, started_at, ready_at,
                                    stages {placed, created, process_up, ready, first_result} in seconds, total,
                                    waited), written once it is READY, completed by its first result if jobs
                                    waited for it; expires after the job retention (the replica may be long gone).
- ``sm:cold_starts:{model}`` list   the ids of the model's last 10 cold starts, newest first.
- ``sm:slots:{id}``          set    the jobs holding the replica's concurrency slots (the job's ``slot`` names the
                                    replica, its ``claim`` the holder).
- ``sm:ready:{model}``       zset   the model's READY replicas, each scored by its free slots negated (its slots
                                    taken less its concurrency): a start takes the first, the most free, without
                                    looking at the others. Kept with the replicas' states and slots (lib.lua
                                    ``index_ready``); rebuilt from the records by a new leader (reindex.lua).
- ``sm:ready:{model}:{host}`` zset  the same, of the model's replicas on one host (a worker there prefers them).
- ``sm:start_failure:{model}`` hash the latest failed replica start: at, reason; gone once one is READY.
- ``sm:start_ended:{model}`` string when the model's latest replica start ended (it turned READY, failed, or
                                    was stopped while STARTING): a parked job's queue timeout counts from it.
- ``sm:scaling:{model}``     hash   the scaling policy's state (backoff) and the replicas it last wanted (desired,
                                    desired_at, desired_reason), written by the leading autoscaler.
- ``sm:scale_bounds:{model}`` hash  an operator's replica bounds of the model (PUT /v1/models/<m>/scale): min_replicas,
                                    max_replicas, at, by; the leading autoscaler applies them in place of the
                                    models file's, read in the same script as its snapshot (observe.lua).
- ``sm:hosts``               hash   the machines replicas may run on, as the leading autoscaler last saw them:
                                    seen_at, hosts (JSON: name, state, address, cpus, memory, gpus, role,
                                    availability); saved on every sweep, gone 30 s after the last save.
- ``sm:scale``               list   model names pushed on submit and when a job parks; the leader BLPOPs them.
- ``sm:logs``                list   requests for a replica's log lines (JSON: replica, tail, reply); the leader
                                    BLPOPs them beside ``sm:scale`` and answers on the request's reply key.
- ``sm:logs:reply:{uuid}``   list   the lines asked for (JSON), expiring after 30 s.
- ``sm:logs:waiting:{reply}`` string set while the asker waits; the leader answers only requests still waited for.
- ``sm:webhooks``            stream one entry per ended job that names a webhook (job: its id), written by the script
                                    that ends the job (lib.lua's conclude); read by the consumer group
                                    ``deliverers`` (``DELIVERERS``); an entry is acknowledged and deleted once
                                    its attempt is recorded. A job waiting for a delivery keeps its record (no
                                    expiry) until it is delivered or given up.
- ``sm:webhooks:retry``      zset   job ids whose next delivery attempt waits, by when it is due; moved back onto
                                    ``sm:webhooks`` when due.
- ``sm:webhooks:failed:{owner}`` zset the owner's (``-``: no API keys) jobs whose delivery was given up, by when;
                                    kept ``job_retention`` seconds, as the job record is from then.
- ``sm:events``              stream scaling decisions and lifecycle events, capped at ~10,000.
- ``sm:autoscaler``          string the leading autoscaler's token (a redis-py Lock); every leader write checks it.
- ``sm:namespace``           string the deployment's namespace (a random id made once): its replicas' mark, unless
                                    ``SM_NAMESPACE`` names another.
- ``sm:rate:{key}:{second}`` string requests of one API key in one second.
- ``sm:authfail:{source}:{minute}`` string failed authentications from one client address in one minute.
- ``model.{model}``          list   Celery's queue of the model (kombu's Redis transport): the job's message is
                                    pushed here by the same script that records or parks the job.

The scripts in ``workers/lua`` build keys from the prefixes in ``PREFIXES`` (see ``workers.store.scripts``).
They touch keys not passed in ``KEYS``: one Redis (or a primary with replicas) per platform, not a cluster.
"""

JOB = "sm:job:"
SENT = "sm:queued:"
PARKED = "sm:parked:"
RUNNING = "sm:running:"
UNSTARTED = "sm:unstarted:"
PUSHES = "sm:pushes:"
WITHDRAWN = "sm:withdrawn:"
DONE = "sm:done:"
STATS = "sm:stats:"
COUNTS = "sm:counts:"
PLATFORM_COUNTS = "sm:platform_counts"
BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)  # seconds; sm:counts' buckets
REPLICAS = "sm:replicas:"
REPLICA = "sm:replica:"
SLOTS = "sm:slots:"
READY = "sm:ready:"
START_FAILURE = "sm:start_failure:"
START_ENDED = "sm:start_ended:"
COLD_START = "sm:cold_start:"
COLD_STARTS = "sm:cold_starts:"
SCALING = "sm:scaling:"
RATE = "sm:rate:"
AUTH_FAILURES = "sm:authfail:"
CELERY_QUEUE = "model."
LEASES = "sm:leases"
MODELS = "sm:models"
DEAD = "sm:dead"
SCALE = "sm:scale"
LOGS = "sm:logs"
LOG_REPLY = "sm:logs:reply:"
LOG_WAITING = "sm:logs:waiting:"
EVENTS = "sm:events"
LEADER = "sm:autoscaler"
NAMESPACE = "sm:namespace"
HOSTS = "sm:hosts"
PURGE = "sm:purge:"
IDEMPOTENCY = "sm:idem:"
DEADLINES = "sm:deadlines"
WEBHOOKS = "sm:webhooks"
WEBHOOK_RETRY = "sm:webhooks:retry"
WEBHOOKS_FAILED = "sm:webhooks:failed:"
DELIVERERS = "deliverers"  # the consumer group of sm:webhooks
NO_OWNER = "-"  # the owner part of a key when API keys are off
SENT_BY_RANK = "sm:sent_by_rank:"
PARKED_BY_RANK = "sm:parked_by_rank:"
LOW = "sm:low:"
PARTS = "sm:parts:"
PARTS_TAKEN = "sm:parts_taken:"
OWNED = "sm:owned:"
OWNED_KEPT = 10_000  # jobs an owner's index keeps at most (the newest)
SCALE_BOUNDS = "sm:scale_bounds:"

PREFIXES = {  # what the Lua prelude calls them (K.job .. id)
    "job": JOB, "sent": SENT, "parked": PARKED, "running": RUNNING, "unstarted": UNSTARTED, "done": DONE,
    "stats": STATS, "counts": COUNTS, "platform_counts": PLATFORM_COUNTS, "replicas": REPLICAS, "replica": REPLICA,
    "slots": SLOTS, "ready": READY, "start_failure": START_FAILURE, "start_ended": START_ENDED,
    "cold_start": COLD_START, "cold_starts": COLD_STARTS,
    "scaling": SCALING, "celery": CELERY_QUEUE, "leases": LEASES, "dead": DEAD, "scale": SCALE, "leader": LEADER,
    "models": MODELS, "pushes": PUSHES, "withdrawn": WITHDRAWN, "rate": RATE, "auth_failures": AUTH_FAILURES,
    "hosts": HOSTS, "purge": PURGE, "idem": IDEMPOTENCY, "deadlines": DEADLINES, "webhooks": WEBHOOKS,
    "webhook_retry": WEBHOOK_RETRY, "webhooks_failed": WEBHOOKS_FAILED, "deliverers": DELIVERERS,
    "sent_by_rank": SENT_BY_RANK, "parked_by_rank": PARKED_BY_RANK, "low": LOW, "parts": PARTS,
    "parts_taken": PARTS_TAKEN, "owned": OWNED, "scale_bounds": SCALE_BOUNDS,
}


def job(job_id: str) -> str:
    """The job record."""
    return JOB + job_id


def sent(model: str) -> str:
    """The model's waiting jobs whose message is out."""
    return SENT + model


def parked(model: str) -> str:
    """The model's jobs waiting for capacity."""
    return PARKED + model


def running(model: str) -> str:
    """The model's running jobs."""
    return RUNNING + model


def done(job_id: str) -> str:
    """The job's completion token."""
    return DONE + job_id


def parts(job_id: str) -> str:
    """The parts a streaming run of the job gave so far."""
    return PARTS + job_id


def replicas(model: str) -> str:
    """The model's replica ids."""
    return REPLICAS + model


def ready(model: str, host: str | None = None) -> str:
    """The model's READY replicas by free slots (those on ``host``, if given)."""
    return READY + model + ("" if host is None else ":" + host)


def replica(replica_id: str) -> str:
    """One replica's record."""
    return REPLICA + replica_id


def celery_queue(model: str) -> str:
    """Celery's queue of the model's jobs (also the name workers consume with ``-Q``)."""
    return CELERY_QUEUE + model


def log_reply(request_id: str) -> str:
    """Where the answer to a request for log lines goes."""
    return LOG_REPLY + request_id


def log_waiting(reply: str) -> str:
    """Set while somebody waits for an answer on ``reply``."""
    return LOG_WAITING + reply


def rate(principal: str, second: int) -> str:
    """Requests of one API key within one second."""
    return f"{RATE}{principal}:{second}"


def auth_failures(source: str, minute: int) -> str:
    """Failed authentications from one client address within one minute."""
    return f"{AUTH_FAILURES}{source}:{minute}"


def idempotency(owner: str, key: str) -> str:
    """An owner's Idempotency-Key (owner '' without API keys: one scope)."""
    return f"{IDEMPOTENCY}{owner}:{key}"


def webhooks_failed(owner: str) -> str:
    """The owner's jobs whose webhook delivery was given up."""
    return WEBHOOKS_FAILED + (owner or NO_OWNER)


def owned(owner: str) -> str:
    """The owner's jobs by when they were created."""
    return OWNED + (owner or NO_OWNER)


def scale_bounds(model: str) -> str:
    """An operator's replica bounds of the model."""
    return SCALE_BOUNDS + model
