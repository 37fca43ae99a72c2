"""The KServe door: the Open Inference Protocol's (V2) REST routes under ``/v2``, so V2 clients (tritonclient's
``InferenceServerClient``) call the platform's kserve-protocol models as they would call KServe or Triton.

An inference is a job: the V2 request is the job's input, sent as it came to the replica (workers/protocols/kserve.py),
and the replica's V2 response is the answer, waited for up to SM_MAX_WAIT. A model at zero replicas is ready: it is
started on demand. Errors are the protocol's ``{"error": "<message>"}``.
"""

import math
from typing import Annotated, Any, Literal

import redis
from flask import Response, g, jsonify, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field, model_validator

from gateway import errors
from gateway.native import SECURED, operation_id, respond
from gateway.runpod import FlatError
from gateway.service import Gateway
from workers.config import ModelConfig
from workers.job import Job, JobStatus
from workers.store.records import ReplicaState

PREFIX = "/v2"
KSERVE = Tag(name="kserve", description="the Open Inference Protocol (KServe V2) for kserve-protocol models")
ERRORS: dict[Any, Any] = {code: FlatError for code in (400, 401, 404, 408, 409, 413, 415, 422, 429, 503, 507)}
BINARY = "Inference-Header-Content-Length"  # the binary tensor extension's header
DATATYPES = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
                    "FP64", "BYTES"]


class V2ModelPath(BaseModel):
    """A model in the URL."""

    model: str = Field(description="the model's name, as declared in models.toml (a kserve-protocol model)")


ELEMENTS: dict[str, tuple[type, ...]] = {"BOOL": (bool,), "BYTES": (str,), "FP16": (int, float), "FP32": (int, float),
                                         "FP64": (int, float)}  # else an integer type: int


def flat(data: list[Any]) -> list[Any]:
    """The tensor's elements in row-major order, however nested."""
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


class TensorInput(BaseModel):
    """An input tensor, its data as JSON."""

    name: str
    shape: list[Annotated[int, Field(strict=True, ge=0)]] = Field(description="each dimension ≥ 0")
    datatype: DATATYPES
    data: list[Any] = Field(description="the tensor's elements, flat or nested in row-major order; as many as the "
                                        "shape holds, each of the datatype (BOOL: true/false, BYTES: strings, FP*: "
                                        "numbers, the integer types: integers)")
    parameters: dict[str, Any] | None = None

    @model_validator(mode="after")
    def consistent(self) -> "TensorInput":
        """The data holds as many elements as the shape, each of the datatype."""
        elements = flat(self.data)
        if len(elements) != math.prod(self.shape):
            raise ValueError(f"tensor {self.name!r} has {len(elements)} elements, its shape {self.shape} holds "
                             f"{math.prod(self.shape)}")
        kinds = ELEMENTS.get(self.datatype, (int,))
        if any(isinstance(e, bool) is not (bool in kinds) or not isinstance(e, kinds) for e in elements):
            raise ValueError(f"tensor {self.name!r} holds an element that is not of its datatype {self.datatype}")
        return self


class RequestedOutput(BaseModel):
    """An output the client asks for."""

    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """An inference request."""

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[TensorInput] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


class InferResponse(BaseModel):
    """An inference response: the model's server's own, under the model's name here."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[dict[str, Any]]


class Live(BaseModel):
    """Server liveness."""

    live: bool


class Ready(BaseModel):
    """Server readiness."""

    ready: bool


class ServerMetadata(BaseModel):
    """The server."""

    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    """A tensor a model takes or gives (-1: any size)."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """A model: its inputs as its example input shows them (outputs are not known before it answers)."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ModelReady(BaseModel):
    """A model's readiness."""

    name: str
    ready: bool


def take_json() -> None:
    """Before the body is parsed: on this door a body without Content-Type is JSON (tritonclient sends none); a
    binary tensor body is refused."""
    if request.blueprint != "kserve" or request.method != "POST":
        return
    if BINARY in request.headers:
        raise errors.Unsupported(f"binary tensors ({BINARY}) are not supported: send JSON tensors "
                                 f"(tritonclient: binary_data=False on every input and requested output)")
    if "CONTENT_TYPE" not in request.environ:
        request.environ["CONTENT_TYPE"] = "application/json"


def inputs_of(model: ModelConfig) -> list[TensorMetadata]:
    """The input tensors the model's example input names (its first dimension any size)."""
    example = model.docs.example_input
    found = example.get("inputs") if isinstance(example, dict) else None
    tensors = []
    for tensor in found if isinstance(found, list) else []:
        try:
            shape = [int(n) for n in tensor["shape"]]
            tensors.append(TensorMetadata(name=str(tensor["name"]), datatype=str(tensor["datatype"]),
                                          shape=[-1, *shape[1:]] if shape else []))
        except (KeyError, TypeError, ValueError):
            continue
    return tensors


def answer(job: Job, name: str) -> Response:
    """The V2 answer to a job waited for: the replica's response, or the job's error."""
    if job.status is JobStatus.SUCCEEDED:
        output = job.output if isinstance(job.output, dict) else {}
        return jsonify({**output, "model_name": name})
    if job.status is JobStatus.FAILED and job.error is not None:
        failed = errors.InvalidInput if job.error.code == "bad_input" else errors.ModelFailed
        raise failed(job.error.message)
    if job.status is JobStatus.CANCELLED:
        raise errors.JobFinished(f"job {job.id} was cancelled")
    raise errors.StillRunning(f"job {job.id} has not finished within SM_MAX_WAIT; it goes on: "
                              f"GET /v1/jobs/{job.id} tells its result")


def blueprint(gateway: Gateway) -> APIBlueprint:
    """The V2 routes over ``gateway``."""
    api = APIBlueprint("kserve", __name__, url_prefix=PREFIX, abp_tags=[KSERVE], abp_responses=ERRORS,
                       operation_id_callback=operation_id)

    def v2_model(name: str) -> ModelConfig:
        model = gateway.model(name)
        if model.calls.protocol != "kserve":
            raise errors.UnknownModel(f"{name!r} does not speak the Open Inference Protocol (its protocol is "
                                      f"{model.calls.protocol!r}); call it at /v1/models/{name}/jobs")
        return model

    @api.get("/health/live", responses={200: Live})
    def server_live() -> Response:
        """The gateway is alive."""
        return respond(Live(live=True))

    @api.get("/health/ready", responses={200: Ready})
    def server_ready() -> Response:
        """The gateway can take inferences (its job store answers)."""
        try:
            gateway.store.ping()
        except redis.RedisError as exc:
            raise errors.Unavailable(f"the job store is unreachable: {exc}") from exc
        return respond(Ready(ready=True))

    @api.get("", security=SECURED, responses={200: ServerMetadata})
    def server_metadata() -> Response:
        """The server's name and version."""
        return respond(ServerMetadata(name="serverless-model", version="0.1.0", extensions=[]))

    @api.get("/models/<model>", security=SECURED, responses={200: ModelMetadata})
    def model_metadata(path: V2ModelPath) -> Response:
        """A model's name, platform and inputs (from its example input)."""
        model = v2_model(path.model)
        return respond(ModelMetadata(name=model.name, versions=[], platform="serverless-model",
                                     inputs=inputs_of(model), outputs=[]))

    @api.get("/models/<model>/ready", security=SECURED, responses={200: ModelReady, 503: FlatError})
    def model_ready(path: V2ModelPath) -> Response:
        """Ready unless its last start failed and no replica is ready: a model at zero replicas is ready, as it
        starts on demand (a client must not give up on it)."""
        model = v2_model(path.model)
        snapshot = gateway.snapshot(model)
        if snapshot.start_failure and not any(r.state is ReplicaState.READY for r in snapshot.replicas):
            raise errors.NotReady(f"{model.name!r} failed to start: {snapshot.start_failure.reason}")
        return respond(ModelReady(name=model.name, ready=True))

    @api.post("/models/<model>/infer", security=SECURED,
              responses={200: InferResponse, 429: FlatError, 500: FlatError, 503: FlatError, 504: FlatError})
    def infer(path: V2ModelPath, body: InferRequest) -> Response:
        """Run an inference (a job) and answer with the model's V2 response, waited for up to SM_MAX_WAIT."""
        model = v2_model(path.model)
        job = gateway.submit(model, request.get_json(), gateway.settings.max_wait, g.principal, result_only=True)
        return answer(job, model.name)

    return api
