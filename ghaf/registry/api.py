"""REST routes of the model registry: HTTP in, one service or flow call, HTTP out."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, status
from fastapi.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse

from ghaf.core.paging import DEFAULT_LIMIT, Page
from ghaf.platform.calls import (
    AuditedReadCall,
    Call,
    Cursor,
    PageSize,
    ReadCall,
    bytes_response,
    json_response,
)
from ghaf.registry import flows, schemas, service
from ghaf.storage.streaming import content_disposition, stream_stored

router = APIRouter(tags=["registry"])
MODELS = "/projects/{project}/models"
MODEL = MODELS + "/{model}"
VERSION = MODEL + "/versions/{version}"
VERSION_DOC = "A version number, `latest`, or an alias (`champion` or `@champion`)."


@router.get("/projects/{project}/model-policy")
async def get_policy(call: ReadCall, project: str) -> schemas.PolicyOut:
    return await call(service.get_policy, project)


@router.put("/projects/{project}/model-policy")
async def set_policy(call: Call, project: str, body: schemas.PolicyIn) -> schemas.PolicyOut:
    """Replace the registry policy (YAML; see docs/registry.md). Needs policy:write."""
    return await call(service.set_policy, project, body)


@router.post(MODELS, status_code=status.HTTP_201_CREATED)
async def create_model(call: Call, project: str, body: schemas.ModelCreate) -> schemas.ModelOut:
    return await call(service.create_model, project, body)


@router.get(MODELS)
async def list_models(
    call: ReadCall, project: str, page_size: PageSize = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[schemas.ModelOut]:
    items, next_cursor = await call(service.list_models, project, limit=page_size, cursor=cursor)
    return Page(items=items, next_cursor=next_cursor)


@router.get(MODEL)
async def get_model(call: ReadCall, project: str, model: str) -> schemas.ModelOut:
    return await call(service.get_model, project, model)


@router.delete(MODEL, status_code=status.HTTP_204_NO_CONTENT)
async def delete_model(call: Call, project: str, model: str) -> Response:
    await call(service.delete_model, project, model)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(MODEL + "/versions", status_code=status.HTTP_201_CREATED)
async def register_version(
    call: Call, project: str, model: str, body: schemas.VersionCreate
) -> schemas.VersionOut:
    """Register a version from an uploaded file or a run's artifact. The file is
    inspected without running it (pickles are refused unless the policy allows them and
    the scan passes), then loaded and used to predict the sample in a child process."""
    return await call(
        flows.register_version,
        project,
        model,
        body,
        timeout_s=call.settings.model_check_timeout_s,
    )


@router.get(MODEL + "/versions")
async def list_versions(
    call: ReadCall,
    project: str,
    model: str,
    page_size: PageSize = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[schemas.VersionOut]:
    """Newest first."""
    items, next_cursor = await call(
        service.list_versions, project, model, limit=page_size, cursor=cursor
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get(VERSION, description=VERSION_DOC, response_model=schemas.VersionOut)
async def get_version(call: ReadCall, project: str, model: str, version: str) -> Response:
    """The lookup behind every ``model@alias``; also a hot route (the registry manifest),
    served before FastAPI's routing (ghaf/server/hot_routes.py)."""
    return json_response(await call(service.get_version_json, project, model, version))


@router.patch(VERSION)
async def update_version(
    call: Call, project: str, model: str, version: str, body: schemas.VersionUpdate
) -> schemas.VersionOut:
    return await call(service.update_version, project, model, version, body)


@router.get(
    VERSION + "/file",
    responses={200: bytes_response("The model file.", "application/octet-stream")},
)
async def download_version(
    call: AuditedReadCall,
    project: str,
    model: str,
    version: str,
    onnx: Annotated[bool, Query(description="The ONNX conversion instead.")] = False,
) -> StreamingResponse:
    """The model file, decrypted and streamed (needs model:read; audited)."""
    found = await call(service.open_version_file, project, model, version, onnx=onnx)
    return await stream_stored(
        call,
        found.read,
        project=project,
        action="model:download",
        resource=found.resource,
        what=f"model {model!r} version {version}" + (" (ONNX)" if onnx else ""),
        headers={
            "Content-Length": str(found.size),
            "X-Ghaf-SHA256": found.sha256,
            "Content-Disposition": content_disposition(found.filename),
        },
    )


@router.put(MODEL + "/aliases/{alias}")
async def set_alias(
    call: Call, project: str, model: str, alias: str, body: schemas.AliasSet
) -> schemas.AliasOut:
    """Point an alias at a version. A protected alias runs the gates first when the
    version has no passing gate check under the current policy."""
    return await call(
        flows.set_alias,
        project,
        model,
        alias,
        body,
        timeout_s=call.settings.model_check_timeout_s,
    )


@router.delete(MODEL + "/aliases/{alias}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_alias(call: Call, project: str, model: str, alias: str) -> Response:
    await call(service.delete_alias, project, model, alias)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(VERSION + ":request-approval")
async def request_approval(
    call: Call, project: str, model: str, version: str, body: schemas.ReviewCreate
) -> schemas.VersionOut:
    return await call(service.request_approval, project, model, version, body)


@router.post(VERSION + ":approve")
async def approve(
    call: Call, project: str, model: str, version: str, body: schemas.ReviewCreate
) -> schemas.VersionOut:
    """Needs model:approve, and the caller must not be the one who registered it."""
    return await call(service.approve, project, model, version, body)


@router.post(VERSION + ":reject")
async def reject(
    call: Call, project: str, model: str, version: str, body: schemas.ReviewCreate
) -> schemas.VersionOut:
    return await call(service.reject, project, model, version, body)


@router.get(VERSION + "/reviews")
async def list_reviews(
    call: ReadCall,
    project: str,
    model: str,
    version: str,
    page_size: PageSize = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[schemas.ReviewOut]:
    """Oldest first."""
    items, next_cursor = await call(
        service.list_reviews, project, model, version, limit=page_size, cursor=cursor
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get(
    VERSION + "/card",
    responses={
        200: {
            "description": "The card as JSON, Markdown or HTML (``format``).",
            "model": schemas.CardOut,
            "content": {
                "text/markdown": {"schema": {"type": "string"}},
                "text/html": {"schema": {"type": "string"}},
            },
        }
    },
)
async def get_card(
    call: ReadCall,
    project: str,
    model: str,
    version: str,
    format: Annotated[str, Query(pattern="^(json|markdown|html)$")] = "json",
) -> Any:
    card = await call(service.get_card, project, model, version)
    if format == "markdown":
        return PlainTextResponse(card.markdown, media_type="text/markdown")
    if format == "html":
        return HTMLResponse(card.html)
    return card


@router.patch(VERSION + "/card")
async def update_card(
    call: Call,
    project: str,
    model: str,
    version: str,
    body: Annotated[dict[str, Any], Body()],
) -> schemas.CardOut:
    """Set some of intended_use, limitations, training_data, evaluation,
    ethical_considerations, fairness, owners."""
    return await call(service.update_card, project, model, version, body)


@router.get(VERSION + "/lineage")
async def lineage(call: ReadCall, project: str, model: str, version: str) -> schemas.LineageOut:
    return await call(service.lineage, project, model, version)


@router.post(VERSION + "/gates:check")
async def check_gates(call: Call, project: str, model: str, version: str) -> schemas.GateReport:
    """Measure every gate of the policy; the report is stored on the version."""
    return await call(
        flows.check_gates, project, model, version, timeout_s=call.settings.model_check_timeout_s
    )
