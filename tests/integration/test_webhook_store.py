"""Webhook deliveries in the store, on a real Redis: the script that ends a job puts its delivery on the stream in the
same step; attempts retry, give up into the owner's failed deliveries, and are redelivered; an entry a dead deliverer
read is claimed by another."""

import time

import pytest
import redis

from tests.integration.conftest import Clock
from workers.job import DeliveryStatus, JobError, JobStatus, Outcome
from workers.store import Store, keys
from workers.store.records import Started
from workers.store.replies import AttemptReply, RedeliverReply

pytestmark = pytest.mark.integration
OK = Outcome(JobStatus.SUCCEEDED, output='{"y": 1}', service_time=0.01)
HOOK = "http://127.0.0.1:9/hook"


@pytest.fixture
def timed(client: "redis.Redis", clock: Clock) -> Store:
    """The store on the test's Redis, on the test's clock."""
    found = Store.of(client, retention=60, clock=clock)
    found.webhooks.join()
    return found


def ready(store: Store) -> None:
    """A READY replica of model m."""
    token = store.leadership(30).hold() or ""
    assert store.replicas.add(token, "r1", "m", "fake")
    assert store.replicas.launched(token, "r1", "http://127.0.0.1/r1", "r1")
    assert store.replicas.ready(token, "r1", concurrency=4) is not None


def ended(store: Store, webhook: str = HOOK, owner: str = "o1") -> str:
    """A job of model m that ran and succeeded."""
    job = store.jobs.submit(store.jobs.new("m", {"x": 1}, owner, webhook=webhook))
    assert not isinstance(job, str)
    started = store.jobs.start(job.id, "t", 5, "w", True)
    assert isinstance(started, Started)
    assert store.jobs.finish(job.id, "t", OK) == "OK"
    return job.id


def test_the_end_of_a_job_with_a_webhook_puts_its_delivery_on_the_stream(timed: Store, client: "redis.Redis") -> None:
    ready(timed)
    plain = ended(timed, webhook="")
    hooked = ended(timed)
    cancelled = timed.jobs.submit(timed.jobs.new("m", {"x": 2}, "o1", webhook=HOOK))
    assert not isinstance(cancelled, str) and timed.jobs.cancel(cancelled.id) == "OK"
    found = timed.webhooks.read("d1", 10, 0.1)
    assert [entry.job_id for entry in found] == [hooked, cancelled.id]  # and none for the job without one
    job = timed.jobs.get(hooked)
    assert job is not None and job.webhook is not None
    assert (job.webhook.url, job.webhook.status, job.webhook.attempts) == (HOOK, DeliveryStatus.PENDING, 0)
    assert client.ttl(keys.job(hooked)) == -1 and client.ttl(keys.job(plain)) > 0  # kept until delivered
    assert timed.webhooks.attempted(found[0], True, "", 0, 60) is AttemptReply.DELIVERED
    job = timed.jobs.get(hooked)
    assert job is not None and job.webhook is not None and job.webhook.status is DeliveryStatus.DELIVERED
    assert job.webhook.attempts == 1 and client.ttl(keys.job(hooked)) > 0
    assert timed.webhooks.backlog() == (1, 0)  # the delivered entry is off the stream; the cancelled one is not
    assert client.xpending(keys.WEBHOOKS, keys.DELIVERERS)["pending"] == 1


def test_a_failed_attempt_retries_when_due_then_gives_up_and_is_redelivered(timed: Store, clock: Clock,
                                                                            client: "redis.Redis") -> None:
    ready(timed)
    job_id = ended(timed)
    entry = timed.webhooks.read("d1", 10, 0.1)[0]
    assert timed.webhooks.attempted(entry, False, "connection refused", 10, 30) is AttemptReply.RETRY
    assert timed.webhooks.due() == 0 and timed.webhooks.read("d1", 10, 0.01) == []  # not due yet
    clock.now += 10
    assert timed.webhooks.due() == 1
    entry = timed.webhooks.read("d1", 10, 0.1)[0]
    assert entry.job_id == job_id
    job = timed.jobs.get(job_id)
    assert job is not None and job.webhook is not None
    assert (job.webhook.status, job.webhook.attempts, job.webhook.last_error) == \
        (DeliveryStatus.PENDING, 1, "connection refused")
    assert timed.webhooks.attempted(entry, False, "HTTP 500", 25, 30) is AttemptReply.FAILED  # 10 + 25 > 30
    assert timed.webhooks.failed("o2") == []
    [failed] = timed.webhooks.failed("o1")
    assert (failed.job, failed.model, failed.url, failed.attempts, failed.last_error) == \
        (job_id, "m", HOOK, 2, "HTTP 500")
    assert client.ttl(keys.job(job_id)) > 0 and timed.webhooks.backlog() == (0, 0)
    clock.now += 100  # a redelivery opens a new window, from its own time
    assert timed.webhooks.redeliver(job_id, "o2") is RedeliverReply.MISSING  # another owner's
    assert timed.webhooks.redeliver(job_id, "o1") is RedeliverReply.OK
    assert timed.webhooks.redeliver(job_id, "o1") is RedeliverReply.MISSING
    assert timed.webhooks.failed("o1") == [] and client.ttl(keys.job(job_id)) == -1
    entry = timed.webhooks.read("d1", 10, 0.1)[0]
    assert timed.webhooks.attempted(entry, False, "HTTP 502", 5, 30) is AttemptReply.RETRY
    job = timed.jobs.get(job_id)
    assert job is not None and job.webhook is not None and job.webhook.attempts == 3


def test_an_entry_a_dead_deliverer_read_is_claimed_by_another(timed: Store) -> None:
    ready(timed)
    job_id = ended(timed)
    assert [e.job_id for e in timed.webhooks.read("dead", 10, 0.1)] == [job_id]
    assert timed.webhooks.read("alive", 10, 0.01) == []  # read once, by the one that died
    assert timed.webhooks.claim("alive", idle=60) == []  # not idle long enough
    claimed = timed.webhooks.claim("alive", idle=0)
    assert [e.job_id for e in claimed] == [job_id]
    assert timed.webhooks.attempted(claimed[0], True, "", 0, 60) is AttemptReply.DELIVERED
    assert timed.webhooks.claim("alive", idle=0) == []


def test_consumers_idle_and_holding_nothing_are_forgotten_and_one_holding_an_entry_is_kept(
        timed: Store, client: "redis.Redis") -> None:
    ready(timed)
    first = ended(timed)
    done = timed.webhooks.read("done", 10, 0.1)
    assert [e.job_id for e in done] == [first]
    assert timed.webhooks.attempted(done[0], True, "", 0, 60) is AttemptReply.DELIVERED  # it holds nothing now
    job_id = ended(timed)
    assert [e.job_id for e in timed.webhooks.read("holder", 10, 0.1)] == [job_id]  # holds it, unrecorded
    assert timed.webhooks.forget(idle=60) == 0  # none idle that long
    time.sleep(0.05)
    assert timed.webhooks.forget(idle=0.01) == 1
    assert [c["name"] for c in client.xinfo_consumers(keys.WEBHOOKS, keys.DELIVERERS)] == ["holder"]
    assert [e.job_id for e in timed.webhooks.claim("alive", idle=0)] == [job_id]  # its entry is still there


def test_a_resubmitted_job_drops_its_old_delivery_and_is_delivered_at_its_next_end(timed: Store) -> None:
    ready(timed)
    job = timed.jobs.submit(timed.jobs.new("m", {"x": 1}, "o1", webhook=HOOK))
    assert not isinstance(job, str)
    started = timed.jobs.start(job.id, "t", 5, "w", True)
    assert isinstance(started, Started)
    assert timed.jobs.finish(job.id, "t", Outcome(JobStatus.FAILED, error=JobError("model_error", "no"))) == "OK"
    old = timed.webhooks.read("d1", 10, 0.1)[0]
    assert timed.jobs.resubmit(job.id) == "OK"
    again = timed.jobs.get(job.id)
    assert again is not None and again.webhook is not None and again.webhook.status is DeliveryStatus.PENDING
    assert again.webhook.attempts == 0
    assert timed.webhooks.attempted(old, True, "", 0, 60) is AttemptReply.DROPPED
    assert timed.jobs.start(job.id, "t2", 5, "w", True) is not None
    assert timed.jobs.finish(job.id, "t2", OK) == "OK"
    assert [e.job_id for e in timed.webhooks.read("d1", 10, 0.1)] == [job.id]


def test_an_attempt_at_an_end_the_job_has_left_delivers_nothing_of_its_next_end(timed: Store, clock: Clock) -> None:
    job = timed.jobs.submit(timed.jobs.new("m", {"x": 1}, "o1", webhook=HOOK))
    assert not isinstance(job, str) and timed.jobs.cancel(job.id) == "OK"
    first = timed.jobs.get(job.id)
    assert first is not None and first.finished_at is not None
    old = timed.webhooks.read("d1", 10, 0.1)[0]  # its POST is under way while the job is run again and ends again
    clock.now += 1
    assert timed.jobs.resubmit(job.id) == "OK" and timed.jobs.cancel(job.id) == "OK"
    assert timed.webhooks.attempted(old, True, "", 0, 60, first.finished_at) is AttemptReply.DROPPED
    again = timed.jobs.get(job.id)
    assert again is not None and again.webhook is not None and again.webhook.status is DeliveryStatus.PENDING
    [new] = timed.webhooks.read("d1", 10, 0.1)  # the second end has its own entry
    assert timed.webhooks.attempted(new, True, "", 0, 60, again.finished_at) is AttemptReply.DELIVERED
