"""REST routes of the model registry (thin: logic is in service, checks and gates)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, status
from fastapi.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ghaf.core.errors import GhafError, IntegrityFailure
from ghaf.core.paging import Page
from ghaf.platform.calls import (
    DEFAULT_PAGE,
    Call,
    Cursor,
    Limit,
    ReadCall,
    ServiceCall,
    json_response,
)
from ghaf.registry import checks, gates, schemas, service
from ghaf.storage import service as storage
from ghaf.storage.streaming import content_disposition, stream_stored

router = APIRouter(tags=["registry"])
MODELS = "/projects/{project}/models"
VERSION = MODELS + "/{name}/versions/{ref}"
REF_DOC = "A version number, `latest`, or an alias (`champion` or `@champion`)."


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
    call: ReadCall, project: str, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> Page[schemas.ModelOut]:
    items, next_cursor = await call(service.list_models, project, limit=limit, cursor=cursor)
    return Page(items=items, next_cursor=next_cursor)


@router.get(MODELS + "/{name}")
async def get_model(call: ReadCall, project: str, name: str) -> schemas.ModelOut:
    return await call(service.get_model, project, name)


@router.delete(MODELS + "/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_model(call: Call, project: str, name: str) -> Response:
    await call(service.delete_model, project, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(MODELS + "/{name}/versions", status_code=status.HTTP_201_CREATED)
async def register_version(
    call: Call, project: str, name: str, body: schemas.VersionCreate
) -> schemas.VersionOut:
    """Register a version from an uploaded file or a run's artifact. The file is
    inspected without running it (pickles are refused unless the policy allows them and
    the scan passes), then loaded and used to predict the sample in a child process."""
    store = call.store
    plan = await call(service.plan_version, store, project, name, body)
    try:
        checked = await run_in_threadpool(
            checks.check,
            plan.candidate,
            plan.read(),
            timeout_s=call.settings.model_check_timeout_s,
        )
    except GhafError as exc:
        if isinstance(exc, IntegrityFailure):  # the uploaded bytes were damaged at rest
            exc = storage.corrupt(f"model file {plan.filename!r}", exc)
        await call(service.refuse_version, project, name, exc)
        raise
    return await call(service.commit_version, store, plan, checked, body)


@router.get(MODELS + "/{name}/versions")
async def list_versions(
    call: ReadCall, project: str, name: str, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> Page[schemas.VersionOut]:
    """Newest first."""
    items, next_cursor = await call(
        service.list_versions, project, name, limit=limit, cursor=cursor
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get(VERSION, description=REF_DOC, response_model=schemas.VersionOut)
async def get_version(call: ReadCall, project: str, name: str, ref: str) -> Response:
    """The lookup behind every ``name@alias``; also a hot route (the registry manifest),
    served before FastAPI's routing (ghaf/server/hot_routes.py)."""
    return json_response(await call(service.get_version_json, project, name, ref))


@router.patch(VERSION)
async def update_version(
    call: Call, project: str, name: str, ref: str, body: schemas.VersionUpdate
) -> schemas.VersionOut:
    return await call(service.update_version, project, name, ref, body)


@router.get(VERSION + "/file")
async def download_version(
    call: Call,
    project: str,
    name: str,
    ref: str,
    onnx: Annotated[bool, Query(description="The ONNX conversion instead.")] = False,
) -> StreamingResponse:
    """The model file, decrypted and streamed (needs model:read)."""
    found = await call(service.open_version_file, call.store, project, name, ref, onnx=onnx)
    return await stream_stored(
        call,
        found.read,
        project=project,
        action="model:download",
        resource=found.resource,
        what=f"model {name!r} version {ref}" + (" (ONNX)" if onnx else ""),
        headers={
            "Content-Length": str(found.size),
            "X-Ghaf-SHA256": found.sha256,
            "Content-Disposition": content_disposition(found.filename),
        },
    )


@router.put(MODELS + "/{name}/aliases/{alias}")
async def set_alias(
    call: Call, project: str, name: str, alias: str, body: schemas.AliasSet
) -> schemas.AliasOut:
    """Point an alias at a version. A protected alias runs the gates first when the
    version has no passing gate check under the current policy."""
    if await call(service.alias_needs_gates, project, name, alias, body.version):
        await _check_gates(call, project, name, str(body.version))
    return await call(service.set_alias, project, name, alias, body)


@router.delete(MODELS + "/{name}/aliases/{alias}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_alias(call: Call, project: str, name: str, alias: str) -> Response:
    await call(service.delete_alias, project, name, alias)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(VERSION + "/request-approval")
async def request_approval(
    call: Call, project: str, name: str, ref: str, body: schemas.ReviewCreate
) -> schemas.VersionOut:
    return await call(service.request_approval, project, name, ref, body)


@router.post(VERSION + "/approve")
async def approve(
    call: Call, project: str, name: str, ref: str, body: schemas.ReviewCreate
) -> schemas.VersionOut:
    """Needs model:approve, and the caller must not be the one who registered it."""
    return await call(service.approve, project, name, ref, body)


@router.post(VERSION + "/reject")
async def reject(
    call: Call, project: str, name: str, ref: str, body: schemas.ReviewCreate
) -> schemas.VersionOut:
    return await call(service.reject, project, name, ref, body)


@router.get(VERSION + "/reviews")
async def list_reviews(
    call: ReadCall, project: str, name: str, ref: str
) -> list[schemas.ReviewOut]:
    return await call(service.list_reviews, project, name, ref)


@router.get(VERSION + "/card")
async def get_card(
    call: ReadCall,
    project: str,
    name: str,
    ref: str,
    format: Annotated[str, Query(pattern="^(json|markdown|html)$")] = "json",
) -> Any:
    card = await call(service.get_card, project, name, ref)
    if format == "markdown":
        return PlainTextResponse(card.markdown, media_type="text/markdown")
    if format == "html":
        return HTMLResponse(card.html)
    return card


@router.patch(VERSION + "/card")
async def update_card(
    call: Call, project: str, name: str, ref: str, body: Annotated[dict[str, Any], Body()]
) -> schemas.CardOut:
    """Set some of intended_use, limitations, training_data, evaluation,
    ethical_considerations, fairness, owners."""
    return await call(service.update_card, project, name, ref, body)


@router.get(VERSION + "/lineage")
async def lineage(call: ReadCall, project: str, name: str, ref: str) -> schemas.LineageOut:
    return await call(service.lineage, project, name, ref)


async def _check_gates(call: ServiceCall, project: str, name: str, ref: str) -> schemas.GateReport:
    plan = await call(service.plan_gates, call.store, project, name, ref)
    results = await run_in_threadpool(
        gates.evaluate, plan.facts, timeout_s=call.settings.model_check_timeout_s
    )
    return await call(service.record_gates, plan, results)


@router.post(VERSION + "/gates:check")
async def check_gates(call: Call, project: str, name: str, ref: str) -> schemas.GateReport:
    """Measure every gate of the policy; the report is stored on the version."""
    return await _check_gates(call, project, name, ref)
