"""Webhooks on the real platform (gunicorn gateway with its deliverers, celery worker, autoscaler, a process replica)
and a real receiver on loopback, allowed in the test's config: the receiver gets exactly the job's view, signed as
Standard Webhooks verifies; a receiver down for a while gets it once up; deliveries pending while every process is
stopped (one waiting for a retry, one in the middle of its attempt, one never read) are delivered once they are
back; a delivery given up is listed to its own key alone and redelivered."""

import json
import signal
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from standardwebhooks import Webhook

from gateway.auth import digest
from gateway.webhooks import new_secret
from tests.integration.platform import Platform, eventually
from workers.scaling.backends import free_port

pytestmark = pytest.mark.integration
SECRET = new_secret()
IRIS = {"features": [[5.1, 3.5, 1.4, 0.2]]}
PROCESSES = ("gateway", "worker", "autoscaler")


class Receiver:
    """A webhook receiver on a loopback port: answers ``status`` (200), or holds each request until released; it
    can be stopped (connections refused) and started again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.holding = False
        self.released = threading.Event()
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> "Receiver":
        """Listen (again)."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if receiver.holding:
                    receiver.released.wait(60)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def of(self, job_id: str) -> list[tuple[dict[str, str], bytes]]:
        """The requests that carried the job's view."""
        return [(headers, body) for headers, body in self.received if json.loads(body)["id"] == job_id]

    def one(self, job_id: str) -> tuple[dict[str, str], bytes]:
        """The delivery of the job's view (at least once: any repeat is the same message, the same webhook-id)."""
        found = self.of(job_id)
        assert found, f"no delivery of job {job_id}"
        assert len({headers["webhook-id"] for headers, _ in found}) == 1 and len({body for _, body in found}) == 1
        return found[0]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver, not listening yet."""
    found = Receiver()
    yield found
    found.released.set()
    found.stop()


def webhooks(platform: Platform, **settings: str) -> Platform:
    """The platform's settings for webhooks to loopback, retried within seconds."""
    platform.env.update({"SM_WEBHOOK_SECRET": SECRET, "SM_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
                         "SM_WEBHOOK_BACKOFF": "0.3", "SM_WEBHOOK_BACKOFF_CAP": "1", "SM_WEBHOOK_RETRY_FOR": "120",
                         "SM_WEBHOOK_CLAIM_AFTER": "2", "SM_WEBHOOK_TIMEOUT": "30", **settings})
    return platform


def submit(platform: Platform, url: str, wait: float = 60, key: str = "") -> dict[str, Any]:
    """A finished job of iris with the webhook."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = requests.post(f"{platform.url}/v1/models/iris/jobs", params={"wait": wait, "webhook": url}, json=IRIS,
                           headers=headers, timeout=wait + 10)
    assert answer.status_code in (200, 202), answer.text
    return dict(answer.json())


def job(platform: Platform, job_id: str, key: str = "") -> dict[str, Any]:
    """The job's view now."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = requests.get(f"{platform.url}/v1/jobs/{job_id}", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def delivered(platform: Platform, job_id: str, key: str = "") -> Callable[[], bool]:
    """Whether the job's webhook is delivered."""
    return lambda: job(platform, job_id, key)["webhook"]["status"] == "delivered"


def verified(headers: dict[str, str], body: bytes) -> Any:
    """The body, once its signature verifies (Standard Webhooks' own package)."""
    return Webhook(SECRET).verify(body, headers)


def test_the_receiver_gets_exactly_the_jobs_view_signed(make_platform: Callable[..., Platform],
                                                        receiver: Receiver) -> None:
    platform = webhooks(make_platform()).start(*PROCESSES)
    receiver.start()
    finished = submit(platform, receiver.url)
    assert finished["status"] == "SUCCEEDED" and finished["webhook"]["status"] in ("pending", "delivered")
    eventually(delivered(platform, finished["id"]), 30, "the webhook was not delivered")
    headers, body = receiver.one(finished["id"])
    view = job(platform, finished["id"])
    assert view["webhook"] == {"status": "delivered", "attempts": 1, "last_error": ""}
    assert verified(headers, body) == {name: value for name, value in view.items() if name != "webhook"}
    assert headers["content-type"] == "application/json" and headers["webhook-id"].startswith("msg_")
    with pytest.raises(Exception, match="signature"):
        Webhook(new_secret()).verify(body, headers)
    runpod = requests.post(f"{platform.url}/runpod/v2/iris/runsync", json={"input": IRIS, "webhook": receiver.url},
                           timeout=70).json()
    assert runpod["status"] == "COMPLETED"
    eventually(delivered(platform, runpod["id"]), 30, "the RunPod job's webhook was not delivered")
    headers, body = receiver.one(runpod["id"])
    status = requests.get(f"{platform.url}/runpod/v2/iris/status/{runpod['id']}", timeout=10).json()
    assert verified(headers, body) == status and status["status"] == "COMPLETED"  # RunPod's view, as it sends it
    refused = requests.post(f"{platform.url}/v1/models/iris/jobs", params={"webhook": "http://10.0.0.1/x"},
                            json=IRIS, timeout=10)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_webhook"


def test_a_receiver_down_for_a_while_then_up_gets_the_view(make_platform: Callable[..., Platform],
                                                           receiver: Receiver) -> None:
    platform = webhooks(make_platform()).start(*PROCESSES)
    finished = submit(platform, receiver.url)  # nobody listens on the receiver's port yet
    assert finished["status"] == "SUCCEEDED"
    eventually(lambda: job(platform, finished["id"])["webhook"]["attempts"] >= 3, 30, "no retries while it was down")
    failing = job(platform, finished["id"])["webhook"]
    assert failing["status"] == "pending" and "refused" in failing["last_error"].lower(), failing
    receiver.start()
    eventually(delivered(platform, finished["id"]), 30, "the webhook was not delivered once the receiver was up")
    shown = job(platform, finished["id"])
    assert shown["webhook"]["attempts"] > 1 and shown["webhook"]["last_error"] == ""
    headers, body = receiver.one(finished["id"])
    assert verified(headers, body) == {name: value for name, value in shown.items() if name != "webhook"}


def test_every_process_restarted_with_deliveries_pending_delivers_them(make_platform: Callable[..., Platform],
                                                                       receiver: Receiver) -> None:
    platform = webhooks(make_platform(), SM_WEBHOOK_THREADS="1").start(*PROCESSES)
    retried = submit(platform, receiver.url)  # the receiver is down: it waits for a retry
    eventually(lambda: job(platform, retried["id"])["webhook"]["attempts"] >= 1, 30, "no attempt was made")
    receiver.holding = True
    receiver.start()  # now it takes requests and answers none: the one deliverer is held in an attempt
    eventually(lambda: receiver.of(retried["id"]), 30, "the retry did not come")
    unread = submit(platform, receiver.url)  # its delivery waits on the stream, unread
    assert unread["status"] == "SUCCEEDED" and receiver.of(unread["id"]) == []
    platform.stop("gateway", sig=signal.SIGKILL)  # in the middle of its attempt
    platform.stop("worker", "autoscaler")
    receiver.holding = False
    receiver.released.set()
    receiver.received.clear()
    platform.start(*PROCESSES)
    for found in (retried, unread):
        eventually(delivered(platform, found["id"]), 60, f"job {found['id']}'s webhook was not delivered")
        headers, body = receiver.one(found["id"])
        assert verified(headers, body)["id"] == found["id"]
    assert job(platform, retried["id"])["webhook"]["attempts"] >= 2


def test_a_given_up_delivery_is_listed_to_its_key_and_redelivered(make_platform: Callable[..., Platform],
                                                                  receiver: Receiver) -> None:
    mine, theirs = "webhook-key-a-0123456789", "webhook-key-b-0123456789"
    platform = webhooks(make_platform(), SM_WEBHOOK_RETRY_FOR="1", SM_API_KEYS=f"{digest(mine)},{digest(theirs)}")
    platform.start(*PROCESSES)
    receiver.status = 500
    receiver.start()
    finished = submit(platform, receiver.url, key=mine)
    eventually(lambda: job(platform, finished["id"], mine)["webhook"]["status"] == "failed", 30, "never given up")
    shown = job(platform, finished["id"], mine)["webhook"]
    assert shown["attempts"] >= 2 and shown["last_error"] == "the receiver answered HTTP 500"
    listed = requests.get(f"{platform.url}/v1/webhooks/failed", headers={"Authorization": f"Bearer {mine}"},
                          timeout=10).json()["failed"]
    assert [(f["job"], f["model"], f["url"], f["attempts"]) for f in listed] == \
        [(finished["id"], "iris", receiver.url, shown["attempts"])]
    other = requests.get(f"{platform.url}/v1/webhooks/failed", headers={"Authorization": f"Bearer {theirs}"},
                         timeout=10)
    assert other.json() == {"failed": []}
    path = f"{platform.url}/v1/webhooks/failed/{finished['id']}/redeliver"
    assert requests.post(path, headers={"Authorization": f"Bearer {theirs}"}, timeout=10).status_code == 404
    receiver.status = 200
    again = requests.post(path, headers={"Authorization": f"Bearer {mine}"}, timeout=10)
    assert again.status_code == 202 and again.json()["webhook"]["status"] == "pending"
    eventually(delivered(platform, finished["id"], mine), 30, "the redelivery was not delivered")
    assert requests.get(f"{platform.url}/v1/webhooks/failed", headers={"Authorization": f"Bearer {mine}"},
                        timeout=10).json() == {"failed": []}
    headers, body = receiver.of(finished["id"])[-1]
    assert verified(headers, body)["id"] == finished["id"]
