"""The client commands (``serverless-model status``, ``jobs``, ``submit`` …) against a fake gateway on a local port:
what they send, what they print, and their exit status."""

import io
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner, Result

from workers import cli, client, views
from workers.scaling.backends import free_port
from workers.tables import age, table


def stamp(seconds_ago: float) -> str:
    """An ISO time ``seconds_ago`` before now, as the gateway writes it."""
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()


class FakeGateway:
    """Answers each (method, path) with its answers in turn (the last one again), and keeps the requests."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], list[tuple[int, Any]]] = {}
        self.requests: list[dict[str, Any]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def on(self, method: str, path: str, *answers: tuple[int, Any]) -> None:
        """Answer ``method path`` with these (status, body) in turn; a str body is sent as it is."""
        self.answers[(method, path)] = list(answers)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        """The request handler serving the answers."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                fake.requests.append({"method": self.command, "path": url.path, "query": parse_qs(url.query),
                                      "headers": dict(self.headers), "body": self.rfile.read(length)})
                queue = fake.answers.get((self.command, url.path), [(404, {"error": {
                    "code": "not_found", "message": "no such route"}})])
                status, body = queue.pop(0) if len(queue) > 1 else queue[0]
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = answer

            def log_message(self, *_: Any) -> None:
                pass

        return Handler


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGateway]:
    monkeypatch.setattr(client, "POLL", 0.01)
    fake = FakeGateway()
    server = ThreadingHTTPServer(("127.0.0.1", fake.port), fake.handler())
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


def run(gateway: FakeGateway, *argv: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Result:
    """``serverless-model <argv> --url <the fake>``."""
    return CliRunner(env={"SM_API_KEY": "", **(env or {})}).invoke(cli.main, [*argv, "--url", gateway.url],
                                                                    input=stdin)


REPLICA = {"id": "r1", "state": "READY", "endpoint": "http://127.0.0.1:9001", "host": "node-a", "in_flight": 1,
           "concurrency": 4, "started_at": stamp(200), "age": 200.0, "reason": "", "log": [], "links": {}}
STARTING = {**REPLICA, "id": "r2", "state": "STARTING", "host": "", "in_flight": 0, "concurrency": 0, "age": 3.5}
MODELS = {"models": [{"name": "iris", "queue_depth": 5, "parked": 2, "running": 1, "replicas": [REPLICA, STARTING],
                      "concurrency": 4, "min_replicas": 0, "max_replicas": 2, "links": {},
                      "averages": {"service_time": {"seconds": 0.012, "samples": 9},
                                   "cold_start": {"seconds": 30.0, "samples": 0}}}]}
HOSTS = {"hosts": [{"name": "node-a", "state": "ready", "address": "10.0.0.5", "cpus": 8.0, "memory": 16 * 2 ** 30,
                    "gpus": ["0"], "role": "", "availability": "",
                    "replicas": [{"id": "r1", "model": "iris", "state": "READY"}]}],
         "seen_at": stamp(4), "unplaced": []}


def queued(job_id: str = "j1", **more: Any) -> dict[str, Any]:
    """A job's view."""
    return {"id": job_id, "model": "iris", "status": "QUEUED", "created_at": stamp(2), "timings": {},
            "attempts": 0, "links": {}, **more}


def test_status_shows_models_hosts_and_replicas_in_aligned_columns(gateway: FakeGateway) -> None:
    gateway.on("GET", "/v1/models", (200, MODELS))
    gateway.on("GET", "/v1/hosts", (200, HOSTS))
    result = run(gateway, "status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["MODEL", "QUEUED", "PARKED", "RUNNING", "REPLICAS", "DESIRED", "MIN-MAX", "SERVICE",
                                "TIME", "COLD", "START"]
    assert lines[1].split() == ["iris", "5", "2", "1", "1", "READY,", "1", "STARTING", "-", "0-2", "12ms", "30s",
                                "(seed)"]
    assert lines[0].index("QUEUED") == lines[1].index("5")  # aligned
    host = next(line for line in lines if line.startswith("node-a"))
    assert host.split()[:6] == ["node-a", "ready", "10.0.0.5", "8", "16.0", "GiB"]
    assert lines[lines.index(host) + 1].startswith("(hosts seen ") and lines[lines.index(host) + 1].endswith(" ago)")
    replica = next(line for line in lines if line.startswith("r1"))
    assert replica.split() == ["r1", "iris", "READY", "node-a", "1/4", "3m20s", "-"]
    assert next(line for line in lines if line.startswith("r2")).split()[:5] == ["r2", "iris", "STARTING", "-", "0/0"]


def test_status_shows_the_desired_replicas_and_bounds_an_operator_set(gateway: FakeGateway) -> None:
    model = {**MODELS["models"][0], "min_replicas": 1, "max_replicas": 3, "desired": {"replicas": 2},
             "scale": {"model": "iris", "min_replicas": 1, "max_replicas": 3, "source": "override"}}
    gateway.on("GET", "/v1/models", (200, {"models": [model]}))
    gateway.on("GET", "/v1/hosts", (200, HOSTS))
    assert run(gateway, "status").stdout.splitlines()[1].split()[8:11] == ["2", "1-3", "(override)"]


def test_status_json_is_the_gateways_answers(gateway: FakeGateway) -> None:
    gateway.on("GET", "/v1/models", (200, MODELS))
    gateway.on("GET", "/v1/hosts", (200, {"hosts": [], "seen_at": None, "unplaced": []}))
    result = run(gateway, "status", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"models": MODELS["models"], "hosts": {"hosts": [], "seen_at": None,
                                                                              "unplaced": []}}
    assert "hosts: none seen" in run(gateway, "status").stdout


def test_an_error_answer_is_one_line_on_stderr_and_exit_1(gateway: FakeGateway) -> None:
    gateway.on("GET", "/v1/jobs/nope", (404, {"error": {"code": "unknown_job", "message": "no job 'nope'"}}))
    result = run(gateway, "job", "nope")
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", "error: unknown_job: no job 'nope'\n")
    gateway.on("GET", "/v1/events", (502, "<html>Bad Gateway</html>"))
    result = run(gateway, "events", "--json")
    assert result.exit_code == 1 and result.stderr.startswith("error: http_502: not a JSON answer: '<html>Bad")


def test_an_unreachable_gateway_is_exit_2_naming_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(cli.main, ["status", "--url", url])
    assert result.exit_code == 2
    assert result.stderr == f"cannot reach the gateway at {url}: connection refused\n"
    assert "Traceback" not in result.output


def test_the_key_in_sm_api_key_is_sent_and_sm_gateway_url_is_the_default(gateway: FakeGateway) -> None:
    gateway.on("GET", "/v1/events", (200, {"events": []}))
    result = CliRunner(env={"SM_GATEWAY_URL": gateway.url + "/", "SM_API_KEY": "k-123"}).invoke(cli.main, ["events"])
    assert result.exit_code == 0 and result.stdout == "no events\n"
    assert gateway.requests[-1]["headers"]["Authorization"] == "Bearer k-123"
    run(gateway, "events")
    assert "Authorization" not in gateway.requests[-1]["headers"]


def test_jobs_sends_its_filters_and_shows_a_line_per_job(gateway: FakeGateway) -> None:
    failed = {**queued("j2"), "status": "FAILED", "started_at": stamp(1.5), "finished_at": stamp(1), "attempts": 1,
              "replica": "r1", "error": {"code": "bad_input", "message": "expected 4 numbers"}}
    gateway.on("GET", "/v1/jobs", (200, {"jobs": [failed, queued()], "next": 1700000000.5}))
    result = run(gateway, "jobs", "--model", "iris", "--status", "FAILED", "--limit", "2", "--before", "1800000000")
    assert result.exit_code == 0
    assert gateway.requests[-1]["query"] == {"model": ["iris"], "status": ["FAILED"], "limit": ["2"],
                                             "before": ["1800000000"]}
    header, first, second = result.stdout.splitlines()
    assert second.split()[:3] == ["j1", "iris", "QUEUED"]
    assert header.split() == ["JOB", "MODEL", "STATUS", "CREATED", "RAN", "ATTEMPTS", "REPLICA", "ERROR"]
    assert first.split()[:3] == ["j2", "iris", "FAILED"] and "500ms  1" in first
    assert first.endswith("bad_input: expected 4 numbers")
    assert result.stderr == "(more: --before 1700000000.5)\n"
    assert json.loads(run(gateway, "jobs", "--json").stdout)["next"] == 1700000000.5
    assert gateway.requests[-1]["query"] == {}


def test_job_shows_what_a_queued_job_waits_for(gateway: FakeGateway) -> None:
    waiting = {"reason": "replica_starting", "since": stamp(3), "age": 3.0, "replica": "r2",
               "stage": "loading weights"}
    gateway.on("GET", "/v1/jobs/j1", (200, queued(waiting=waiting, priority="high")))
    text = run(gateway, "job", "j1").stdout
    assert "status    QUEUED\n" in text and "priority  high\n" in text
    assert "waiting   replica_starting for 3s (replica r2): loading weights\n" in text
    assert json.loads(run(gateway, "job", "j1", "--json").stdout)["waiting"] == waiting


def test_submit_wait_shows_progress_on_stderr_and_prints_the_output(gateway: FakeGateway, tmp_path: Path) -> None:
    waiting = {"reason": "replica_starting", "since": stamp(1), "age": 1.0, "replica": "r2", "stage": "Booting"}
    done = {**queued(), "status": "SUCCEEDED", "output": {"predictions": ["setosa"]}, "replica": "r2"}
    gateway.on("POST", "/v1/models/iris/jobs", (202, queued()))
    gateway.on("GET", "/v1/jobs/j1", (200, queued(waiting=waiting)), (200, queued(waiting={**waiting, "age": 1.5})),
               (200, {**done, "status": "RUNNING"}), (200, done))
    (tmp_path / "input.json").write_text('{"features": [[5.1, 3.5, 1.4, 0.2]]}')
    result = run(gateway, "submit", "iris", f"@{tmp_path / 'input.json'}", "--wait")
    assert result.exit_code == 0, result.output
    assert json.loads(gateway.requests[0]["body"]) == {"features": [[5.1, 3.5, 1.4, 0.2]]}
    assert json.loads(result.stdout) == {"predictions": ["setosa"]}
    assert result.stderr.splitlines() == ["QUEUED", "QUEUED, replica_starting (replica r2): Booting",
                                          "RUNNING, on replica r2"]  # not a tty: a line per change
    result = run(gateway, "submit", "iris", "--wait", "--json", stdin='{"features": [[1, 2, 3, 4]]}')
    assert result.exit_code == 0 and json.loads(result.stdout) == done


@pytest.mark.parametrize(("end", "message"), [
    ({"status": "FAILED", "error": {"code": "bad_input", "message": "expected 4 numbers"}},
     "error: bad_input: expected 4 numbers\n"),
    ({"status": "CANCELLED", "cancelled_while": "QUEUED"}, "error: cancelled: job j1 was cancelled\n")])
def test_submit_wait_exits_1_when_the_job_does_not_succeed(gateway: FakeGateway, end: dict[str, Any],
                                                           message: str) -> None:
    gateway.on("POST", "/v1/models/iris/jobs", (202, {**queued(), **end}))
    result = run(gateway, "submit", "iris", '{"features": [[1]]}', "--wait")
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", message)


def test_submit_without_wait_prints_the_job_and_a_bad_input_is_refused_before_sending(gateway: FakeGateway) -> None:
    gateway.on("POST", "/v1/models/iris/jobs", (202, queued()))
    assert run(gateway, "submit", "iris", "{}").stdout == "j1  QUEUED\n"
    result = run(gateway, "submit", "iris", "{nope")
    assert result.exit_code == 2 and "input is not JSON" in result.stderr
    result = run(gateway, "submit", "iris", "@/no/such/file")
    assert result.exit_code == 2 and "No such file" in result.stderr
    assert len(gateway.requests) == 1


def test_submit_wait_gives_up_after_its_timeout(gateway: FakeGateway) -> None:
    gateway.on("POST", "/v1/models/iris/jobs", (202, queued()))
    gateway.on("GET", "/v1/jobs/j1", (200, queued()))
    result = run(gateway, "submit", "iris", "{}", "--wait", "--timeout", "0")
    assert result.exit_code == 1 and "error: timeout: job j1 did not finish in 0 s" in result.stderr


def test_the_progress_line_is_redrawn_in_place_on_a_terminal(gateway: FakeGateway) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    gateway.on("GET", "/v1/jobs/j1", (200, {**queued(), "status": "SUCCEEDED"}))
    err = Terminal()
    finished = client.follow(client.Gateway(gateway.url), queued(), 30, err)
    assert finished is not None and finished["status"] == "SUCCEEDED"
    assert err.getvalue() == "\r\x1b[K| QUEUED\r\x1b[K"


def test_scale_sends_the_bounds_given_and_reset_deletes_them(gateway: FakeGateway) -> None:
    path = "/v1/models/iris/scale"
    gateway.on("PUT", path, (200, {"model": "iris", "min_replicas": 1, "max_replicas": 2, "source": "override"}))
    gateway.on("DELETE", path, (200, {"model": "iris", "min_replicas": 0, "max_replicas": 2, "source": "config"}))
    result = run(gateway, "scale", "iris", "--min", "1")
    assert result.exit_code == 0 and json.loads(gateway.requests[-1]["body"]) == {"min_replicas": 1}
    assert result.stdout.startswith("iris: 1-2 replicas (override); the autoscaler applies them at its next pass")
    run(gateway, "scale", "iris", "--min", "0", "--max", "3")
    assert json.loads(gateway.requests[-1]["body"]) == {"min_replicas": 0, "max_replicas": 3}
    assert json.loads(run(gateway, "scale", "iris", "--reset", "--json").stdout)["source"] == "config"
    assert gateway.requests[-1]["method"] == "DELETE"
    for wrong in (["--reset", "--max", "1"], [], ["--min", "-1"]):
        assert run(gateway, "scale", "iris", *wrong).exit_code == 2
    assert len(gateway.requests) == 3


def test_retry_cancel_events_and_logs(gateway: FakeGateway) -> None:
    gateway.on("POST", "/v1/jobs/j1/retry", (200, queued()))
    gateway.on("DELETE", "/v1/jobs/j1", (200, {**queued(), "status": "CANCELLED", "cancelled_while": "RUNNING"}))
    gateway.on("GET", "/v1/events", (200, {"events": [{"at": stamp(5), "model": "iris", "kind": "scale_up",
                                                       "replica": "r1", "reason": "1 queued, 0 replicas",
                                                       "job": ""}]}))
    gateway.on("GET", "/v1/models/iris/replicas/r1/logs", (200, {"replica": "r1", "lines": ["one", "two"]}))
    assert run(gateway, "retry", "j1").stdout == "j1  QUEUED\n"
    assert run(gateway, "cancel", "j1").stdout == "j1  CANCELLED  (it was running: its result is discarded)\n"
    header, line = run(gateway, "events", "--model", "iris", "--limit", "5").stdout.splitlines()
    assert header.split() == ["AT", "AGE", "MODEL", "KIND", "REPLICA", "JOB", "REASON"]
    assert gateway.requests[-1]["query"] == {"model": ["iris"], "limit": ["5"]}
    assert line.split()[2:6] == ["ago", "iris", "scale_up", "r1"] and line.endswith("1 queued, 0 replicas")
    assert run(gateway, "logs", "iris", "r1", "--tail", "2").stdout == "one\ntwo\n"
    assert gateway.requests[-1]["query"] == {"tail": ["2"]}
    assert json.loads(run(gateway, "logs", "iris", "r1", "--json").stdout)["lines"] == ["one", "two"]


def test_tables_and_ages_read_as_a_person_reads_them() -> None:
    assert [age(s) for s in (0.012, 2.0, 2.5, 42, 185, 7800, 360000)] == ["12ms", "2s", "2.5s", "42s", "3m05s", "2h10m",
                                                                        "4d04h"]
    assert table(["A", "LONG"], [["xyz", None], ["", 1]]) == "A    LONG\nxyz  -\n-    1"
    assert views.by_state([]) == "0"
