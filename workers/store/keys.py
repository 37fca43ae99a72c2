"""Every Redis key the platform uses; nothing else builds key names.

Key schema (``sm:`` prefix; ``{model}`` a model name, ``{id}`` a job or replica id):

- ``sm:job:{id}``          hash   the job record: id, model, status, input, output, error, created_at,
                                  started_at, finished_at, replica, attempts, cancelled_while, owner, claim,
                                  lease_until, worker, commits, requeued_at. Expires ``job_retention``
                                  seconds after it finishes.
- ``sm:leases``            zset   ids of claimed jobs, scored by lease expiry; the reaper requeues the expired.
- ``sm:dead``              list   ids of jobs that failed after their last attempt (dead letters), newest first.
- ``sm:rate:{key}:{second}`` string requests of one API key in one second (rate limit); expires in 2 s.
- ``sm:queued:{model}``    zset   ids of the model's QUEUED jobs, scored by when last enqueued (queue depth).
- ``sm:running:{model}``   set    ids of the model's RUNNING jobs (in flight).
- ``sm:done:{id}``         list   one token pushed when the job finishes; a waiter BLPOPs it and pushes it back.
- ``sm:stats:{model}``     hash   moving averages (seconds) and sample counts: service_time, cold_start.
- ``sm:replicas:{model}``  set    ids of the model's replicas.
- ``sm:replica:{id}``      hash   a replica: id, model, backend, endpoint, handle, state, started_at,
                                  ready_at, last_used, reason.
- ``sm:slots:{replica}``   set    ids of the jobs holding the replica's concurrency slots (its in flight);
                                  the job record's ``slot`` names the replica, so the reaper frees a lost
                                  worker's slots.
- ``sm:wake:{model}``      list   tokens pushed when a replica slot frees up; waiting tasks BLPOP it.
- ``sm:scale``             list   tokens pushed on submit; the autoscaler BLPOPs it between ticks.
- ``sm:start_failure:{model}`` hash  the model's latest failed replica start: at, reason; deleted when one
                                  becomes ready.
- ``sm:events``            stream scaling decisions and replica lifecycle events, capped at ~10,000.
- ``sm:autoscaler``        string the active autoscaler's token; expires unless renewed (leader lease).

Celery's own keys (its queues ``model.{model}``, ``unacked``, ``_kombu.*``) live beside these.
"""

PREFIX = "sm:"
REPLICA_PREFIX = f"{PREFIX}replica:"
SLOTS_PREFIX = f"{PREFIX}slots:"
SCALE = f"{PREFIX}scale"
EVENTS = f"{PREFIX}events"
LEASES = f"{PREFIX}leases"
DEAD = f"{PREFIX}dead"
AUTOSCALER_LEASE = f"{PREFIX}autoscaler"


def job(job_id: str) -> str:
    """The job record."""
    return f"{PREFIX}job:{job_id}"


def queued(model: str) -> str:
    """The model's queued job ids."""
    return f"{PREFIX}queued:{model}"


def running(model: str) -> str:
    """The model's running job ids."""
    return f"{PREFIX}running:{model}"


def done(job_id: str) -> str:
    """The job's completion token."""
    return f"{PREFIX}done:{job_id}"


def stats(model: str) -> str:
    """The model's moving averages."""
    return f"{PREFIX}stats:{model}"


def replicas(model: str) -> str:
    """The model's replica ids."""
    return f"{PREFIX}replicas:{model}"


def replica(replica_id: str) -> str:
    """One replica's record."""
    return f"{REPLICA_PREFIX}{replica_id}"


def slots(replica_id: str) -> str:
    """The jobs holding one replica's slots."""
    return f"{SLOTS_PREFIX}{replica_id}"


def wake(model: str) -> str:
    """Tokens for tasks waiting on a free replica slot."""
    return f"{PREFIX}wake:{model}"


def start_failure(model: str) -> str:
    """The model's latest failed replica start."""
    return f"{PREFIX}start_failure:{model}"


def rate(principal: str, second: int) -> str:
    """Requests of one API key within one second."""
    return f"{PREFIX}rate:{principal}:{second}"
