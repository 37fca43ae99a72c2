"""A replica's cold start by stage (placed, created, process_up, ready, first_result), on fakeredis with a clock
that moves only when told: what the store keeps, what the job and the model show, what /metrics counts."""

from datetime import UTC, datetime
from pathlib import Path

import fakeredis
import pytest

from gateway.schemas import ColdStartView
from tests.unit.test_autoscaler import Clock
from tests.unit.test_metrics import client, samples
from workers.job import Job, JobStatus, Outcome
from workers.store import Store
from workers.store.records import Started

pytestmark = pytest.mark.unit


def started(store: Store, job: Job) -> Started:
    found = store.jobs.start(job.id, "t-" + job.id, 30, "w", True)
    assert isinstance(found, Started), found
    return found


def test_a_cold_start_jobs_waited_for_is_kept_by_stage_shown_with_the_job_and_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, clock = fakeredis.FakeRedis(decode_responses=True), Clock()
    store = Store.of(fake, retention=600, clock=clock)
    token = store.leadership(600).hold() or ""
    waiting = store.jobs.submit(store.jobs.new("m", {}))
    assert isinstance(waiting, Job)
    assert store.jobs.start(waiting.id, "t-" + waiting.id, 30, "w", True) is not None  # parked: no replica yet
    assert store.replicas.add(token, "r1", "m", "process")  # recorded at 0
    clock.advance(1)
    assert store.replicas.launched(token, "r1", "http://127.0.0.1:9", "h", "vm", placed=0.5, created=0.2) == 1
    clock.advance(2)  # its server answered 1 s ago, it is ready now: 3 s after its record
    assert store.replicas.ready(token, "r1", 1, up=1.0) == (3.0, 1)
    clock.advance(0.5)
    assert started(store, waiting).job.replica == "r1"
    clock.advance(0.5)
    store.jobs.finish(waiting.id, "t-" + waiting.id, Outcome(JobStatus.SUCCEEDED, output="1"))

    cold = store.replicas.cold_start("r1")
    assert cold is not None and cold.complete and cold.host == "vm"
    assert cold.stages == pytest.approx({"placed": 0.5, "created": 0.3, "process_up": 1.2, "ready": 1.0,
                                         "first_result": 1.0})
    assert cold.total == pytest.approx(4.0) == pytest.approx(sum(cold.stages.values()))
    assert [c.replica for c in store.replicas.cold_starts("m")] == ["r1"]

    api = client(tmp_path, monkeypatch, fake)
    answer = api.get(f"/v1/jobs/{waiting.id}")
    assert answer.json is not None and answer.json["cold_start"]["replica"] == "r1"
    assert answer.json["cold_start"]["stages"]["process_up"] == pytest.approx(1.2)
    timing = answer.headers["Server-Timing"]
    assert timing.startswith('cold-start;dur=4000.0;desc="replica r1 on vm"')
    assert "cold-start-first-result;dur=1000.0" in timing
    model = api.get("/v1/models/m").json
    assert model is not None and model["cold_starts"][0]["total"] == pytest.approx(4.0)

    found = samples(api.get("/metrics").text)
    stage_sums = {dict(labels)["stage"]: value for (name, labels), value in found.items()
                  if name == "sm_cold_start_stage_seconds_sum" and dict(labels)["host"] == "vm"}
    assert stage_sums == pytest.approx(cold.stages)
    assert found[("sm_cold_start_seconds_sum", (("host", "vm"), ("model", "m")))] == pytest.approx(4.0)
    assert found[("sm_cold_start_seconds_bucket", (("host", "vm"), ("le", "5.0"), ("model", "m")))] == 1
    assert found[("sm_cold_start_seconds_bucket", (("host", "vm"), ("le", "2.5"), ("model", "m")))] == 0

    later = store.jobs.submit(store.jobs.new("m", {}))  # submitted to a ready replica: no cold start of its own
    assert isinstance(later, Job)
    started(store, later)
    store.jobs.finish(later.id, "t-" + later.id, Outcome(JobStatus.SUCCEEDED, output="2"))
    again = api.get(f"/v1/jobs/{later.id}")
    assert again.json is not None and again.json["cold_start"] is None and "Server-Timing" not in again.headers
    assert store.replicas.cold_start("r1") == cold  # its first result was the first job's


def test_a_cold_start_nobody_waited_for_ends_at_ready_and_a_stage_not_seen_merges_into_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, clock = fakeredis.FakeRedis(decode_responses=True), Clock()
    store = Store.of(fake, retention=600, clock=clock)
    token = store.leadership(600).hold() or ""
    assert store.replicas.add(token, "r2", "m", "process")
    clock.advance(2)
    assert store.replicas.launched(token, "r2", "http://127.0.0.1:9", "h", "vm") == 1  # (adopted: nothing timed)
    assert store.replicas.ready(token, "r2", 1, created=1.5) == (2.0, 0)
    cold = store.replicas.cold_start("r2")
    assert cold is not None and cold.complete and cold.waited == 0
    assert cold.stages == pytest.approx({"created": 0.5, "ready": 1.5}) and cold.total == pytest.approx(2.0)
    found = samples(client(tmp_path, monkeypatch, fake).get("/metrics").text)
    assert found[("sm_cold_start_seconds_count", (("host", "vm"), ("model", "m")))] == 1
    assert ("sm_cold_start_stage_seconds_count", (("host", "vm"), ("model", "m"), ("stage", "placed"))) not in found


def test_a_backends_odd_host_name_never_breaks_the_header() -> None:
    cold = ColdStartView(replica="r1", host='a"b\\c\r\nd\u00e9', started_at=datetime.now(UTC), stages={"ready": 1.0},
                         total=1.0, complete=True)
    assert cold.server_timing() == 'cold-start;dur=1000.0;desc="replica r1 on abcd", cold-start-ready;dur=1000.0'


def test_only_a_job_that_waited_ends_the_cold_start(tmp_path: Path) -> None:
    fake, clock = fakeredis.FakeRedis(decode_responses=True), Clock()
    store = Store.of(fake, retention=600, clock=clock)
    token = store.leadership(600).hold() or ""
    waiting = store.jobs.submit(store.jobs.new("m", {}))
    assert isinstance(waiting, Job)
    store.jobs.start(waiting.id, "t-" + waiting.id, 30, "w", True)  # parked
    assert store.replicas.add(token, "r1", "m", "process")
    clock.advance(1)
    assert store.replicas.launched(token, "r1", "http://127.0.0.1:9", "h", "vm", placed=0.5, created=0.2) == 1
    assert store.replicas.ready(token, "r1", 2, up=0.1) == (1.0, 1)
    started(store, waiting)
    store.jobs.cancel(waiting.id)  # the job that waited ends without a result
    store.jobs.finish(waiting.id, "t-" + waiting.id, Outcome(JobStatus.SUCCEEDED, output="1"))
    clock.advance(3600)
    later = store.jobs.submit(store.jobs.new("m", {}))
    assert isinstance(later, Job)
    started(store, later)
    store.jobs.finish(later.id, "t-" + later.id, Outcome(JobStatus.SUCCEEDED, output="2"))
    cold = store.replicas.cold_start("r1")
    assert cold is not None and "first_result" not in cold.stages and not cold.complete  # not an hour's cold start
