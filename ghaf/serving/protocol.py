"""The Open Inference Protocol v2 over REST (the KServe/Triton one): JSON tensors and
the binary tensor extension (what NVIDIA's tritonclient sends and reads).

Routes: ``/v2/health/live``, ``/v2/health/ready`` (no token), ``/v2`` (server metadata),
``/v2/models/{model}`` and ``/v2/models/{model}/versions/{version}`` (model metadata),
their ``/ready``, and their ``/infer``. An infer request's inputs are checked against the
served version's signature (ghaf/serving/tensors.py); its ``id`` is echoed, its
``parameters`` must be an object, and its ``outputs`` (when given) pick which outputs
come back. With an ``Inference-Header-Content-Length`` header the body is that many
bytes of JSON followed by the binary inputs (ghaf/serving/tensors.py); outputs go back
binary when the request's ``parameters.binary_data_output`` or an output's
``parameters.binary_data`` asks, after a JSON header whose length the answer's
``Inference-Header-Content-Length`` gives. Readiness is the status code: 200 ready, 503
not (yet). Errors are ``{"error": "..."}``: 400 for bad input, 404 for an unknown model
or version, 401/403 for tokens, 413 for a body over the limit, 429 when the model's
queue is full.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from ghaf.core.errors import InvalidInput
from ghaf.core.version import __version__
from ghaf.serving import tensors
from ghaf.serving.calls import Answer, Call
from ghaf.serving.schemas import ModelReady, ServerMetadata
from ghaf.serving.served import (
    ModelTable,
    ServedModel,
    all_finite,
    dump_json,
    json_answer,
    json_reply,
    parse_json,
    read_body,
)

router = APIRouter()
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")
"""The only serving paths answered without a token (probes)."""
EXTENSIONS = ("binary_tensor_data",)
"""The OIP extensions this server speaks, as server metadata lists them."""


def _table(request: Request) -> ModelTable:
    table: ModelTable = request.app.state.models
    return table


def _limit(request: Request) -> int:
    limit: int = request.app.state.max_body_bytes
    return limit


@router.get("/v2/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready")
async def ready(request: Request) -> Response:
    # OIP: the status code is the answer (clients such as tritonclient read only it).
    is_ready = bool(request.app.state.ready)
    return json_answer({"ready": is_ready}, 200 if is_ready else 503)


@router.get("/v2")
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(version=__version__, extensions=list(EXTENSIONS))


@router.get("/v2/models/{model}")
async def model_metadata(request: Request, model: str) -> Response:
    served = _table(request).get(model)
    document = served.metadata()
    document.versions = _table(request).versions(model)
    return json_answer(document.model_dump())


@router.get("/v2/models/{model}/versions/{version}")
async def version_metadata(request: Request, model: str, version: str) -> Response:
    return json_answer(_table(request).get(model, version).metadata().model_dump())


def _readiness(document: ModelReady) -> Response:
    return json_answer(document.model_dump(), 200 if document.ready else 503)


@router.get("/v2/models/{model}/ready")
async def model_ready(request: Request, model: str) -> Response:
    served = _table(request).get(model)
    return _readiness(ModelReady(name=served.name, ready=bool(request.app.state.ready)))


@router.get("/v2/models/{model}/versions/{version}/ready")
async def version_ready(request: Request, model: str, version: str) -> Response:
    served = _table(request).get(model, version)
    ready = bool(request.app.state.ready)
    return _readiness(ModelReady(name=served.name, version=served.version, ready=ready))


@router.post("/v2/models/{model}/infer")
async def infer(request: Request, model: str) -> Response:
    served = _table(request).get(model)
    return (await answer_infer(Call.of_request(request), served, limit=_limit(request))).response()


@router.post("/v2/models/{model}/versions/{version}/infer")
async def infer_version(request: Request, model: str, version: str) -> Response:
    served = _table(request).get(model, version)
    return (await answer_infer(Call.of_request(request), served, limit=_limit(request))).response()


def _flag(raw: Any, what: str, field: str) -> bool:
    if not isinstance(raw, bool):
        raise InvalidInput(f"{what} must be true or false, not {raw!r}", field=field)
    return raw


def _requested(raw: Any, binary_default: bool) -> list[tuple[str, bool]] | None:
    """The outputs the request asks for, each with whether it goes back as binary data
    (None: all of them, binary when the request's ``binary_data_output`` says so)."""
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("'outputs' must be a non-empty list of {\"name\": ...}", field="outputs")
    wanted = []
    for position, entry in enumerate(raw):
        field = f"outputs[{position}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidInput(f"{field} needs a name", field=field)
        params = entry.get("parameters", {})
        if not isinstance(params, dict):
            raise InvalidInput(f"{field}.parameters must be an object", field="outputs")
        binary = binary_default
        if "binary_data" in params:
            binary = _flag(params["binary_data"], f"{field}.parameters.binary_data", field)
        for unsupported, extension in (
            ("classification", "classification"),
            ("shared_memory_region", "shared-memory"),
        ):
            if unsupported in params:
                raise InvalidInput(
                    f"{field}: the {extension} extension is not supported by this server",
                    field=field,
                )
        wanted.append((entry["name"], binary))
    return wanted


async def answer_infer(call: Call, served: ServedModel, *, limit: int) -> Answer:
    """An infer request to ``served``, answered (the routes above and the serving hot
    path, ghaf/serving/fastpath.py, both call it); ``limit``: the most body bytes."""
    raw = await read_body(call, limit)
    header, binary = tensors.split_body(raw, call.headers.get(tensors.BINARY_HEADER))
    body = parse_json(header)
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object with 'inputs'")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string", field="id")
    params = body.get("parameters", {})
    if not isinstance(params, dict):
        raise InvalidInput("'parameters' must be an object", field="parameters")
    binary_default = False
    if "binary_data_output" in params:
        binary_default = _flag(
            params["binary_data_output"], "parameters.binary_data_output", "parameters"
        )
    wanted = _requested(body.get("outputs"), binary_default)
    arrays = tensors.decode_inputs(body.get("inputs"), served.signature, binary)
    outputs = await served.predict(arrays)
    if wanted is None:
        wanted = [(name, binary_default) for name in outputs]
    else:
        missing = [name for name, _ in wanted if name not in outputs]
        if missing:
            raise InvalidInput(
                f"output {missing[0]!r} is not an output of this model; it has "
                f"{', '.join(outputs)}",
                field="outputs",
            )
    answer: dict[str, Any] = {"model_name": served.name, "model_version": served.version}
    if request_id is not None:
        answer["id"] = request_id
    if not any(as_binary for _, as_binary in wanted):
        answer["outputs"] = [tensors.encode_tensor(name, outputs[name]) for name, _ in wanted]
        return json_reply(answer, finite=all_finite(outputs[name] for name, _ in wanted))
    return _binary_answer(answer, [(name, outputs[name], as_binary) for name, as_binary in wanted])


def _binary_answer(answer: dict[str, Any], outputs: list[tuple[str, Any, bool]]) -> Answer:
    """A JSON header (its length in ``Inference-Header-Content-Length``) and, after it,
    the bytes of each binary output in the order the header lists them."""
    described: list[dict[str, Any]] = []
    chunks: list[Any] = []
    for name, array, as_binary in outputs:
        if as_binary:
            descriptor, data = tensors.encode_binary(name, array)
            described.append(descriptor)
            chunks.append(data)
        else:
            described.append(tensors.encode_tensor(name, array))
    answer["outputs"] = described
    header = dump_json(answer, finite=all_finite(a for _, a, as_binary in outputs if not as_binary))
    return Answer(
        200,
        b"".join([header, *chunks]),
        "application/octet-stream",
        [(tensors.BINARY_HEADER.lower().encode(), str(len(header)).encode())],
    )
