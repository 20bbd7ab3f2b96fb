"""REST routes for experiments and runs (thin: logic is in service)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from pydantic import ValidationError

from ghaf.core.errors import InvalidInput, MalformedBody
from ghaf.core.paging import DEFAULT_LIMIT, Page
from ghaf.platform.calls import Call, Cursor, PageSize, ReadCall, body_components
from ghaf.tracking import batches, schemas, service

router = APIRouter(tags=["tracking"])
EXPERIMENTS = "/projects/{project}/experiments"
RUNS = "/projects/{project}/runs"


@router.post(EXPERIMENTS, status_code=status.HTTP_201_CREATED)
async def create_experiment(
    call: Call, project: str, body: schemas.ExperimentCreate
) -> schemas.ExperimentOut:
    return await call(service.create_experiment, project, body)


@router.get(EXPERIMENTS)
async def list_experiments(
    call: Call, project: str, page_size: PageSize = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[schemas.ExperimentOut]:
    items, next_cursor = await call(
        service.list_experiments, project, limit=page_size, cursor=cursor
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get(EXPERIMENTS + "/{experiment}")
async def get_experiment(call: Call, project: str, experiment: str) -> schemas.ExperimentOut:
    return await call(service.get_experiment, project, experiment)


@router.post(EXPERIMENTS + "/{experiment}/runs", status_code=status.HTTP_201_CREATED)
async def create_run(
    call: Call, project: str, experiment: str, body: schemas.RunCreate
) -> schemas.RunOut:
    """Start a run (creating the experiment unless ``create_experiment`` is false)."""
    return await call(
        service.create_run,
        project,
        experiment,
        body,
        heartbeat_timeout_s=call.settings.run_heartbeat_timeout_s,
    )


@router.post(RUNS + ":search")
async def search_runs(
    call: ReadCall, project: str, body: schemas.SearchRequest
) -> Page[schemas.RunOut]:
    """Runs matching a filter such as ``metrics.auc > 0.9 and params.model = 'rf'``,
    ordered by e.g. ``metrics.auc desc`` (see docs/tracking.md for the grammar)."""
    items, next_cursor = await call(service.search_runs, project, body)
    return Page(items=items, next_cursor=next_cursor)


@router.get(RUNS + "/{run}")
async def get_run(call: Call, project: str, run: str) -> schemas.RunOut:
    """``run`` is a run id or a unique prefix of one (at least 8 characters)."""
    return await call(service.get_run, project, run)


@router.patch(RUNS + "/{run}")
async def update_run(call: Call, project: str, run: str, body: schemas.RunUpdate) -> schemas.RunOut:
    return await call(service.update_run, project, run, body)


@router.delete(RUNS + "/{run}")
async def delete_run(call: Call, project: str, run: str) -> schemas.RunOut:
    """Soft delete: hidden from searches until restored."""
    return await call(service.delete_run, project, run)


@router.post(RUNS + "/{run}:restore")
async def restore_run(call: Call, project: str, run: str) -> schemas.RunOut:
    return await call(service.restore_run, project, run)


_LOG_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/LogRequest"}},
            batches.MEDIA_TYPE: {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "Arrow IPC stream: key, value, step, timestamp; the rest "
                    "as JSON in the schema metadata 'ghaf' (docs/tracking.md).",
                }
            },
        },
    },
    **body_components(schemas.LogRequest),
}


@router.post(RUNS + "/{run}:log", openapi_extra=_LOG_BODY)
async def log_batch(call: Call, request: Request, project: str, run: str) -> schemas.LogResult:
    """One batch of params, tags and metric points, applied atomically; an empty batch
    is a heartbeat. Send ``seq`` so a retried batch is never applied twice."""
    body = await request.body()
    try:
        batch = _decode_batch(body, request.headers.get("content-type", ""))
    except InvalidInput:
        await call.require_visible(project)  # outsiders get the 404 anyone outside gets
        raise
    return await call(service.log_batch, project, run, batch)


def _decode_batch(body: bytes, content_type: str) -> batches.LogBatch:
    if content_type.startswith(batches.MEDIA_TYPE):
        return batches.decode(body)
    try:
        return batches.from_request(schemas.LogRequest.model_validate_json(body or b"{}"))
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "json_invalid":  # not JSON at all: the same 400 as FastAPI's
            raise MalformedBody.not_json(str(error.get("ctx", {}).get("error", ""))) from None
        where = ".".join(str(part) for part in error["loc"])
        raise InvalidInput(f"{where}: {error['msg']}", field=where or None) from None


@router.get(RUNS + "/{run}/metrics")
async def metric_history(
    call: Call,
    project: str,
    run: str,
    key: Annotated[list[str] | None, Query(description="Only these metrics.")] = None,
) -> schemas.MetricHistory:
    """Every logged point, as columns ordered by key, step and time."""
    return await call(service.metric_history, project, run, keys=key)


@router.post(RUNS + "/{run}/artifacts", status_code=status.HTTP_201_CREATED)
async def add_artifact(
    call: Call, project: str, run: str, body: schemas.ArtifactAdd
) -> schemas.RunArtifactOut:
    """Name content already uploaded by hash (``PUT .../blobs/{sha256}``) as a run's file."""
    return await call(service.add_artifact, project, run, body)


@router.get(RUNS + "/{run}/artifacts")
async def list_artifacts(
    call: Call,
    project: str,
    run: str,
    page_size: PageSize = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[schemas.RunArtifactOut]:
    items, next_cursor = await call(
        service.list_artifacts, project, run, limit=page_size, cursor=cursor
    )
    return Page(items=items, next_cursor=next_cursor)


@router.post(RUNS + "/{run}/inputs")
async def add_input(call: Call, project: str, run: str, body: schemas.InputAdd) -> schemas.RunOut:
    """Record that the run read a dataset version (lineage, queryable both ways)."""
    return await call(service.add_input, project, run, body)
