"""The Cog, KServe, RunPod and plain HTTP adapters, on answers their real servers give (recorded from them)."""

import json
from typing import Any

import pytest

from workers.config import ConfigError, parse_models
from workers.job import JobError, JobStatus
from workers.protocols import Readiness, ReplicaProtocol, protocol_for
from workers.protocols.native import NativeProtocol
from workers.store.jobs import JobStore

pytestmark = pytest.mark.unit
MODELS = parse_models({"models": {
    "c": {"protocol": "cog"}, "k": {"protocol": "kserve", "served_name": "iris"}, "r": {"protocol": "runpod"},
    "h": {"protocol": "http", "predict_path": "/predict", "health_path": "/healthy", "ready_statuses": [200, 204]},
}})
COG, KSERVE, RUNPOD, HTTP = (protocol_for(MODELS[name]) for name in "ckrh")


def sent(protocol: ReplicaProtocol, payload: Any) -> tuple[str, Any]:
    """The path and the decoded body of the request that runs a job of ``payload``, recorded as a submit does."""
    request = protocol.request("j1", JobStore.new("m", payload).input or "")
    return request.path, json.loads(request.body)


def test_each_adapter_sends_the_job_where_its_server_wants_it() -> None:
    assert sent(COG, {"text": "hi"}) == ("/predictions", {"input": {"text": "hi"}})
    assert sent(KSERVE, {"inputs": []}) == ("/v2/models/iris/infer", {"id": "j1", "inputs": []})
    assert sent(RUNPOD, {"text": "hi"}) == ("/serverless-model/realtime", {"id": "j1", "input": {"text": "hi"}})
    assert RUNPOD.environment() == {"RUNPOD_REALTIME_PORT": "{port}", "RUNPOD_ENDPOINT_ID": "serverless-model"}
    assert sent(HTTP, {"a": 1}) == ("/predict", {"a": 1})
    assert (COG.ready_path, KSERVE.ready_path, RUNPOD.ready_path, HTTP.ready_path) == \
        ("/health-check", "/v2/models/iris/ready", "/", "/healthy")


@pytest.mark.parametrize("payload", [{"text": "hi"}, {}, [1, 2], "a", None, 1.5, {"t": "é ✓ \"q\" \\ \n"},
                                     {"inputs": [{"name": "id", "data": ["id"]}]}, {"id": "mine", "inputs": []},
                                     {"x": {"id": 1}}])
def test_an_input_reaches_each_server_as_the_submit_recorded_it_without_being_parsed_again(payload: Any) -> None:
    assert sent(NativeProtocol(), payload) == ("/", payload)
    assert sent(HTTP, payload)[1] == payload
    assert sent(COG, payload)[1] == {"input": payload}
    assert sent(RUNPOD, payload)[1] == {"id": "j1", "input": payload}
    assert sent(KSERVE, payload)[1] == ({"id": "j1", **payload} if isinstance(payload, dict) else payload)


def test_cog() -> None:
    setup_failed = b'{"status":"SETUP_FAILED","setup":{"status":"failed","logs":"FileNotFoundError: weights"}}'
    assert COG.readiness(200, b'{"status":"STARTING","setup":{}}') == (Readiness.STARTING, "")
    assert COG.readiness(200, b'{"status":"BUSY"}')[0] is Readiness.READY
    assert COG.readiness(200, setup_failed) == (Readiness.FAILED, "cog says SETUP_FAILED: FileNotFoundError: weights")
    done = COG.outcome(200, {}, b'{"id":"p","metrics":{"predict_time":0.08},"output":{"words":3},'
                                b'"status":"succeeded"}', 30)
    assert (done.status, done.output, done.service_time) == (JobStatus.SUCCEEDED, '{"words": 3}', 0.08)
    failed = COG.outcome(200, {}, b'{"error":"Prediction failed: ValueError: text is empty","status":"failed"}', 30)
    assert failed.error == JobError("model_error", "Prediction failed: ValueError: text is empty")
    assert COG.outcome(200, {}, b'{"output":1,"status":"succeeded","metrics":{"predict_time":"nan"}}', 30).error \
        == JobError("bad_response", "metrics.predict_time: 'nan' is not a duration within the request timeout of 30 s")


def test_kserve() -> None:
    answer = b'{"model_name":"iris","id":"j1","outputs":[{"name":"species","shape":[1],"datatype":"BYTES",' \
             b'"data":["setosa"]}]}'
    assert json.loads(KSERVE.outcome(200, {}, answer, 30).output or "")["outputs"][0]["data"] == ["setosa"]
    assert KSERVE.outcome(500, {}, b'{"error":"ValueError : expected rows of 4"}', 30).error == \
        JobError("model_error", "ValueError : expected rows of 4")
    invalid = KSERVE.outcome(422, {}, b'{"detail":[{"loc":["body","inputs"],"msg":"Field required"}]}', 30)
    assert invalid.error is not None and invalid.error.code == "bad_input" and "Field required" in invalid.error.message
    assert KSERVE.readiness(404, b"") == (Readiness.STARTING, "")


def test_runpod() -> None:
    assert RUNPOD.outcome(200, {}, b'{"output":{"reversed":"olleh"}}', 30).output == '{"reversed": "olleh"}'
    error = json.dumps({"error_type": "<class 'ValueError'>", "error_message": "input.text is empty",
                        "error_traceback": "Traceback ..."})
    assert RUNPOD.outcome(200, {}, json.dumps({"error": error}).encode(), 30).error == \
        JobError("model_error", "ValueError: input.text is empty")


def test_http() -> None:
    assert HTTP.readiness(204, b"") == (Readiness.READY, "")
    assert HTTP.readiness(503, b"") == (Readiness.STARTING, "")
    assert HTTP.outcome(201, {}, b'{"y": 2}', 30).output == '{"y": 2}'
    assert HTTP.outcome(500, {}, b"<html>down</html>", 30).error == JobError("model_error", "answered 500: "
                                                                                           "<html>down</html>")


def test_only_port_and_host_are_filled_in() -> None:
    from workers.config import fill

    assert fill('--port={port} --bind {host} {"a": 1} {port:x}', 8001, "127.0.0.1") == \
        '--port=8001 --bind 127.0.0.1 {"a": 1} {port:x}'


@pytest.mark.parametrize(("table", "says"), [
    ({"concurency": 2}, "unknown key 'concurency'; allowed: args, build,"),
    ({"protocol": "grpc"}, "protocol: Input should be 'native', 'cog', 'kserve', 'runpod' or 'http'"),
    ({"start_timeout": 7200}, "start_timeout: Input should be less than or equal to 3600"),
    ({"protocol": "http"}, "protocol 'http' needs predict_path and health_path"),
    ({"stream": True}, "stream is for protocol 'cog'"),
    ({"gpus": -1}, "gpus: Value error, a count of GPUs"),
    ({"env": {"PORT": "9000"}}, "PORT is set by the platform"),
    ({"env": {"A=B": "1"}}, "a variable name of letters"),
    ({"volumes": ["cache:/weights"]}, "volumes.0: String should match pattern"),
    ({"volumes": ["/srv:/tmp"]}, "cannot mount over /tmp"),
    ({"volumes": ["/a:/w", "/b:/w/"]}, "two volumes with one target"),
    ({"gpus": True}, "gpus"),
    ({"memory": "0"}, "memory: String should match pattern"),
    ({"protocol": "http", "predict_path": "/p", "health_path": "/h", "ready_statuses": []}, "ready_statuses"),
    ({"shm_size": "lots"}, "shm_size: String should match pattern"),
])
def test_an_impossible_model_table_is_refused_naming_the_model_and_the_key(table: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match="model 'm': ") as refused:
        parse_models({"models": {"m": table}})
    assert says in str(refused.value)


def test_runpod_answers_the_sdk_gives_for_what_a_handler_returns() -> None:
    assert RUNPOD.outcome(200, {}, b'{"output":{"partial":1},"error":"refused"}', 30).error == \
        JobError("model_error", "refused")
    assert RUNPOD.outcome(200, {}, b"{}", 30).status is JobStatus.SUCCEEDED  # the handler returned None
    assert RUNPOD.outcome(200, {}, json.dumps({"error": "[" * 50_000}).encode(), 30).status is JobStatus.FAILED


def test_cog_at_capacity_is_busy_not_a_failed_job() -> None:
    from workers.protocols.base import ReplicaBusy

    with pytest.raises(ReplicaBusy):
        COG.outcome(409, {}, b'{"error":"At capacity - all prediction slots busy","status":"failed"}', 30)
