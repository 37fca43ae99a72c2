"""The webhook deliverers: threads of each gateway process, consumers of the ``deliverers`` group of the stream that
the script ending a job writes to.

They run in the gateway because what they send is the job's view as the gateway renders it (``GET /v1/jobs/<id>``,
the one schema), because the gateway is the process that faces the networks receivers live on, and so that a slow
receiver never holds a worker's thread (a worker's threads hold replica slots). Every gateway process delivers:
the consumer group spreads the entries over them, and an entry whose deliverer died before it recorded the attempt
is claimed by another once idle ``webhook_claim_after`` seconds (at least once: a receiver may see a delivery twice,
with the same ``webhook-id``).

An attempt POSTs the view (without its own ``webhook`` field) to the job's webhook, resolved and checked now and
connected to at the address checked, signed by the Standard Webhooks scheme. A 2xx answer delivers it; anything
else is tried again after ``webhook_backoff`` * 2^(n-1) seconds for the n-th retry (at most
``webhook_backoff_cap``), times a random factor from 0.5 to 1, until ``webhook_retry_for`` seconds from the job's
end: then it is given up, among its owner's failed deliveries.
"""

import contextlib
import http.client
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable

import redis
import urllib3
import urllib3.connection

from gateway import errors
from gateway.runpod import JobState
from gateway.schemas import JobView
from gateway.webhooks import Target, Targets, signature
from workers.config import Settings
from workers.job import DeliveryStatus, Job, View
from workers.store import Store, connect
from workers.store.records import ColdStart
from workers.store.webhooks import Entry

log = logging.getLogger(__name__)
READ_BLOCK = 1.0  # seconds a read waits for new entries (and how often due retries are moved back)
USER_AGENT = "serverless-model-webhooks/1"
FORGET_AFTER = 3600.0  # seconds idle after which a consumer holding no entry is forgotten (its process is gone)


def body_of(job: Job, cold: ColdStart | None = None) -> bytes:
    """What a receiver gets: the job as the door it came through shows it (the native view without the state of its
    own delivery, with the cold start it waited for; or RunPod's status answer)."""
    if job.webhook is not None and job.webhook.view is View.RUNPOD:
        view = JobState.of(job).model_dump(mode="json", exclude_none=True)
    else:
        view = JobView.of(job, cold=cold).model_dump(mode="json", exclude={"webhook"})
    return json.dumps(view, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


def message_id(job: Job) -> str:
    """The ``webhook-id``: the same for every attempt at one end of a job, another for its next end (if retried)."""
    return f"msg_{job.id}_{job.commits}"


def backoff(retry: int, base: float, cap: float, jitter: Callable[[], float] = random.random) -> float:
    """Seconds before the ``retry``-th retry (from 1)."""
    return float(min(cap, base * 2.0 ** min(retry - 1, 60)) * (0.5 + jitter() / 2))


class Deliverer:
    """One consumer of the deliveries: reads, claims idle entries of lost consumers, delivers, records."""

    def __init__(self, store: Store, settings: Settings, consumer: str, targets: Targets | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.settings = settings
        self.consumer = consumer
        self.targets = targets or Targets(settings.webhook_allow_networks)
        self.clock = clock  # the webhook-timestamp: the receiver's tolerance is judged on wall time
        self.next_claim = 0.0

    def run(self, stopping: threading.Event) -> None:
        """Deliver until ``stopping`` is set; an error is logged and the step tried again."""
        joined = False
        while not stopping.is_set():
            try:
                if not joined:
                    self.store.webhooks.join()
                    joined = True
                self.step()
            except redis.RedisError as exc:
                log.warning("webhook deliverer %s: %s", self.consumer, exc)
                stopping.wait(1.0)
            except Exception:  # a fault of one step must not end this process's deliveries
                log.exception("webhook deliverer %s failed a step", self.consumer)
                stopping.wait(1.0)

    def step(self) -> int:
        """Move due retries back, claim idle entries now and then, read new ones, deliver each: how many."""
        self.store.webhooks.due()
        found: list[Entry] = []
        if time.monotonic() >= self.next_claim:
            found = self.store.webhooks.claim(self.consumer, self.settings.webhook_claim_after)
            self.store.webhooks.forget(FORGET_AFTER)
            self.next_claim = time.monotonic() + min(5.0, self.settings.webhook_claim_after / 2)
        found += self.store.webhooks.read(self.consumer, 10, 0.01 if found else READ_BLOCK)
        for entry in found:
            try:
                self.deliver(entry)
            except redis.RedisError:
                raise
            except Exception as exc:  # a fault with this entry: it backs off like a failed attempt, the rest go on
                log.exception("webhook deliverer %s failed the delivery of job %s", self.consumer, entry.job_id)
                self.store.webhooks.attempted(entry, False, f"{type(exc).__name__}: {exc}"[:500],
                                              self.settings.webhook_backoff_cap, self.settings.webhook_retry_for)
        return len(found)

    def deliver(self, entry: Entry) -> None:
        """One attempt at the entry's job, recorded (a job gone, or no longer waiting for it, is dropped)."""
        job = self.store.jobs.get(entry.job_id)
        if job is None or job.webhook is None or job.webhook.status is not DeliveryStatus.PENDING or \
                not job.status.finished:
            self.store.webhooks.attempted(entry, False, "", 0, 0)
            return
        error = self.post(job)
        delay = backoff(job.webhook.attempts + 1, self.settings.webhook_backoff, self.settings.webhook_backoff_cap)
        settled = self.store.webhooks.attempted(entry, not error, error, delay, self.settings.webhook_retry_for,
                                                job.finished_at)
        if error:
            log.info("webhook of job %s: %s (%s)", job.id, error, settled.value)

    def post(self, job: Job) -> str:
        """POST the job's view to its webhook: "" if it was taken (2xx), else why not."""
        assert job.webhook is not None
        try:
            target = self.targets.target(job.webhook.url)
        except errors.InvalidWebhook as exc:
            return exc.message
        body = body_of(job, self.store.replicas.cold_start(job.cold_start) if job.cold_start else None)
        timestamp = int(self.clock())
        headers = {"Host": target.host if target.port in (80, 443) else f"{target.host}:{target.port}",
                   "Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "webhook-id": message_id(job), "webhook-timestamp": str(timestamp),
                   "webhook-signature": signature(self.settings.webhook_secret, message_id(job), timestamp, body)}
        conn = connection(target, self.settings.webhook_timeout)
        late = threading.Event()
        watchdog = threading.Timer(self.settings.webhook_timeout, cut, args=(conn, late))  # bounds the attempt
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.request("POST", target.path, body=body, headers=headers, preload_content=False)
            status = conn.getresponse().status  # its body is not read: a receiver cannot hold a deliverer with it
        except (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError) as exc:
            status, error = 0, f"{type(exc).__name__}: {exc}"[:500]
        finally:
            watchdog.cancel()
            conn.close()
        if late.is_set():  # what was read before the cut may look whole: it is not
            return f"no answer within {self.settings.webhook_timeout:g} s"
        if not status:
            return error
        return "" if 200 <= status < 300 else f"the receiver answered HTTP {status}"


def cut(conn: urllib3.connection.HTTPConnection, late: threading.Event) -> None:
    """End an attempt past its time: shut its socket, which wakes the read that waits on it."""
    late.set()
    with contextlib.suppress(OSError, AttributeError):
        conn.sock.shutdown(socket.SHUT_RDWR)


def connection(target: Target, timeout: float) -> urllib3.connection.HTTPConnection:
    """A connection to the target's checked address (TLS checks the URL's host name)."""
    limits = timeout  # each connect and read; the whole attempt is bounded by ``timeout`` too (``cut``)
    if target.scheme == "https":
        return urllib3.connection.HTTPSConnection(target.address, target.port, timeout=limits,
                                                  server_hostname=target.host, assert_hostname=target.host,
                                                  cert_reqs="CERT_REQUIRED")
    return urllib3.connection.HTTPConnection(target.address, target.port, timeout=limits)


def start_deliverers(settings: Settings) -> list[threading.Thread]:
    """This process's deliverers (none without a signing secret), as daemon threads."""
    if not settings.webhook_secret:
        return []
    store = Store.of(connect(settings.redis_url, socket_timeout=READ_BLOCK + 10), settings.job_retention)
    name = f"{socket.gethostname()}:{os.getpid()}"
    threads = [threading.Thread(target=Deliverer(store, settings, f"{name}:{n}").run, args=(threading.Event(),),
                                name=f"webhooks-{n}", daemon=True) for n in range(settings.webhook_threads)]
    for thread in threads:
        thread.start()
    return threads
