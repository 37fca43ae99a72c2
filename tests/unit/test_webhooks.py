"""Webhooks in the pure tier: which targets are refused (and allowed by config), the Standard Webhooks signature (as
the ``standardwebhooks`` package verifies it), the retry schedule and the settings."""

import base64
import json
import socket
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from pydantic import ValidationError
from standardwebhooks import Webhook, WebhookVerificationError

from gateway import errors
from gateway.deliverer import Deliverer, backoff, body_of
from gateway.webhooks import Targets, new_secret, signature
from workers.config import Settings
from workers.job import Delivery, Job, JobStatus, View
from workers.store.webhooks import Entry

pytestmark = pytest.mark.unit
SECRET = new_secret()


def fixed(*addresses: str) -> Targets:
    """Targets whose every host resolves to ``addresses``, allowing nothing private."""
    return Targets("", resolver=lambda host, port: list(addresses))


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                                     "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "0.0.0.0", "224.0.0.1",
                                     "100.100.100.200", "192.0.0.8", "2002:7f00:1::", "2001:0:4136:e378::1"])
def test_loopback_private_and_link_local_targets_are_refused(address: str) -> None:
    with pytest.raises(errors.InvalidWebhook, match="refused unless SM_WEBHOOK_ALLOW_NETWORKS"):
        fixed(address).target("https://hooks.example/x")


def test_a_name_that_resolves_to_any_refused_address_is_refused() -> None:
    with pytest.raises(errors.InvalidWebhook):
        fixed("93.184.216.34", "10.0.0.1").target("https://hooks.example/x")


def test_a_public_target_is_pinned_to_the_address_checked() -> None:
    target = fixed("93.184.216.34").target("https://hooks.example:8443/in?a=1")
    assert (target.scheme, target.host, target.port, target.path, target.address) == \
        ("https", "hooks.example", 8443, "/in?a=1", "93.184.216.34")


def test_configured_networks_are_allowed() -> None:
    allowed = Targets("127.0.0.0/8, 10.9.0.0/16", resolver=lambda host, port: [host])
    assert allowed.target("http://127.0.0.1:9000/hook").address == "127.0.0.1"
    assert allowed.target("http://10.9.1.1/hook").address == "10.9.1.1"
    with pytest.raises(errors.InvalidWebhook):
        allowed.target("http://10.8.1.1/hook")


@pytest.mark.parametrize("url", ["ftp://hooks.example/x", "hooks.example/x", "http:///x", "http://a:99999/x",
                                 "https://user:pw@hooks.example/x", "https://hooks.example/" + "a" * 2030])
def test_a_url_of_the_wrong_form_is_refused(url: str) -> None:
    with pytest.raises(errors.InvalidWebhook, match="the webhook is"):
        fixed("93.184.216.34").target(url)


def test_a_host_that_does_not_resolve_is_refused() -> None:
    def fails(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(errors.InvalidWebhook, match="does not resolve"):
        Targets("", resolver=fails).target("https://nowhere.invalid/x")


def test_the_signature_is_what_standard_webhooks_verifies() -> None:
    body = b'{"id":"j1","status":"SUCCEEDED"}'
    now = int(datetime.now(UTC).timestamp())
    headers = {"webhook-id": "msg_j1_1", "webhook-timestamp": str(now),
               "webhook-signature": signature(SECRET, "msg_j1_1", now, body)}
    assert Webhook(SECRET).verify(body, headers) == {"id": "j1", "status": "SUCCEEDED"}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body + b" ", headers)
    assert len(base64.b64decode(SECRET.removeprefix("whsec_"))) == 32


def test_retries_back_off_exponentially_with_jitter_up_to_the_cap() -> None:
    assert [backoff(n, 5, 3600, lambda: 1.0) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert [backoff(n, 5, 3600, lambda: 0.0) for n in (1, 2, 3)] == [2.5, 5, 10]
    assert backoff(30, 5, 3600, lambda: 1.0) == 3600 and backoff(10_000, 5, 3600, lambda: 1.0) == 3600


def test_settings_refuse_a_bad_secret_default_or_network() -> None:
    with pytest.raises(ValidationError):
        Settings(webhook_secret="not-a-secret")
    with pytest.raises(ValidationError):
        Settings(webhook_secret="whsec_" + base64.b64encode(b"short").decode())
    with pytest.raises(ValidationError):
        Settings(webhooks={"*": "ftp://x"})
    with pytest.raises(ValidationError):
        Settings(webhooks={"nope": "https://x"})
    with pytest.raises(ValidationError):
        Settings(webhook_allow_networks="127.0.0.0/33")
    assert Settings(webhook_secret=SECRET, webhooks={"*": "https://hooks.example/x"}).webhooks


@pytest.mark.parametrize("trickle", [b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"])
def test_a_receiver_that_trickles_cannot_hold_a_deliverer_past_its_timeout(trickle: bytes) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def receiver() -> None:  # reads the request, then answers one byte at a time, never ending
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in trickle:
                conn.sendall(bytes([byte]))
            while not stop.wait(0.1):
                conn.sendall(b"1\r\nx\r\n" if b"chunked" in trickle else b"X-A: b\r\n")

    threading.Thread(target=receiver, daemon=True).start()
    port = listener.getsockname()[1]
    settings = Settings(webhook_secret=SECRET, webhook_timeout=1, webhook_allow_networks="127.0.0.0/8")
    job = Job(id="j1", model="m", status=JobStatus.SUCCEEDED, input={}, created_at=time.time(),
              finished_at=time.time(), webhook=Delivery(f"http://127.0.0.1:{port}/hook"))
    deliverer = Deliverer(None, settings, "c", Targets("127.0.0.0/8"))  # type: ignore[arg-type]
    try:
        error = deliverer.post(job)
    finally:
        stop.set()
        listener.close()
    if b"chunked" in trickle:
        assert error == ""  # taken on its status line: the body is never read
    else:
        assert error == "no answer within 1 s"


def test_a_job_of_the_runpod_door_is_delivered_as_runpods_status_answer() -> None:
    fields = {"webhook": "https://example.com/h", "webhook_view": "runpod"}
    assert Delivery.from_hash(fields) == Delivery("https://example.com/h", view=View.RUNPOD)
    assert Delivery.from_hash({"webhook": "https://example.com/h"}) == Delivery("https://example.com/h")
    job = Job(id="j", model="m", status=JobStatus.SUCCEEDED, input={}, created_at=10.0, started_at=10.5,
              finished_at=12.0, output=[1], webhook=Delivery.from_hash(fields))
    assert json.loads(body_of(job)) == {"id": "j", "status": "COMPLETED", "delayTime": 500, "executionTime": 1500,
                                        "output": [1]}
    native = json.loads(body_of(replace(job, webhook=Delivery("https://example.com/h"))))
    assert native["status"] == "SUCCEEDED" and native["model"] == "m" and "webhook" not in native


def test_an_entry_whose_delivery_breaks_backs_off_as_a_failed_attempt_and_the_rest_go_on() -> None:
    class Jobs:
        def get(self, job_id: str) -> None:
            if job_id == "bad":
                raise KeyError("a record this deliverer cannot read")

    class Webhooks:
        def __init__(self) -> None:
            self.attempts: list[tuple[str, bool, str, float]] = []

        def due(self) -> int:
            return 0

        def claim(self, consumer: str, idle: float) -> list[Entry]:
            return []

        def forget(self, idle: float) -> int:
            return 0

        def read(self, consumer: str, count: int, block: float) -> list[Entry]:
            return [Entry("1-0", "bad"), Entry("2-0", "gone")]

        def attempted(self, entry: Entry, delivered: bool, error: str, delay: float, retry_for: float,
                      ended: float | None = None) -> None:
            self.attempts.append((entry.job_id, delivered, error, delay))

    store = SimpleNamespace(jobs=Jobs(), webhooks=Webhooks())
    settings = Settings(webhook_secret=SECRET, webhook_backoff_cap=30)
    assert Deliverer(store, settings, "c").step() == 2  # type: ignore[arg-type]
    assert store.webhooks.attempts == [("bad", False, "KeyError: 'a record this deliverer cannot read'", 30.0),
                                       ("gone", False, "", 0)]  # the job gone: dropped
