"""REST routes of deployments: HTTP in, one service call, HTTP out."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Request, status
from fastapi.responses import Response

from ghaf.core.paging import DEFAULT_LIMIT, Page
from ghaf.deployments import flows, rollouts, schemas, service
from ghaf.platform.calls import Call, Cursor, PageSize, ReadCall
from ghaf.platform.uploads import limit_body

router = APIRouter(tags=["deployments"])
DEPLOYMENTS = "/projects/{project}/deployments"
DEPLOYMENT = DEPLOYMENTS + "/{deployment}"
RevisionNumber = Annotated[int, Path(ge=1, le=2**31 - 1, description="A revision number.")]


@router.post(DEPLOYMENTS, status_code=status.HTTP_201_CREATED)
async def create_deployment(
    call: Call, project: str, body: schemas.DeploymentCreate
) -> schemas.DeploymentOut:
    """A new deployment (revision 1). Needs deployment:write."""
    return await call(service.create_deployment, project, body)


@router.get(DEPLOYMENTS)
async def list_deployments(
    call: ReadCall, project: str, page_size: PageSize = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[schemas.DeploymentOut]:
    items, next_cursor = await call(
        service.list_deployments, project, limit=page_size, cursor=cursor
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get(
    DEPLOYMENTS + ":metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def deployment_metrics(call: ReadCall, project: str) -> Response:
    """The project's deployments in Prometheus's text format, by deployment and variant:
    requests by outcome, latency, replicas, shadow drops and cold starts, as this server
    counted them (scrape each server with a token holding deployment:read). The
    anonymous ``/metrics`` has only the server's totals, without names."""
    text = await call.flow(flows.project_metrics, project)
    return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get(DEPLOYMENT)
async def get_deployment(call: ReadCall, project: str, deployment: str) -> schemas.DeploymentOut:
    return await call(service.get_deployment, project, deployment)


@router.patch(DEPLOYMENT)
async def update_deployment(
    call: Call, project: str, deployment: str, body: schemas.DeploymentUpdate
) -> schemas.DeploymentOut:
    """Change the deployment: a new revision with the whole resulting spec."""
    return await call(service.update_deployment, project, deployment, body)


@router.delete(DEPLOYMENT, status_code=status.HTTP_204_NO_CONTENT)
async def delete_deployment(call: Call, project: str, deployment: str) -> Response:
    await call(service.delete_deployment, project, deployment)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(DEPLOYMENT + "/revisions")
async def list_revisions(
    call: ReadCall,
    project: str,
    deployment: str,
    page_size: PageSize = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[schemas.RevisionOut]:
    """Newest first."""
    items, next_cursor = await call(
        service.list_revisions, project, deployment, limit=page_size, cursor=cursor
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get(DEPLOYMENT + "/revisions/{revision}")
async def get_revision(
    call: ReadCall, project: str, deployment: str, revision: RevisionNumber
) -> schemas.RevisionOut:
    return await call(service.get_revision, project, deployment, revision)


@router.post(DEPLOYMENT + ":rollback")
async def rollback(
    call: Call, project: str, deployment: str, body: schemas.Rollback
) -> schemas.DeploymentOut:
    """Return to an earlier revision's spec and versions, as a new revision."""
    return await call(service.rollback, project, deployment, body)


@router.post(DEPLOYMENT + "/outcomes")
async def post_outcomes(
    call: Call, project: str, deployment: str, body: schemas.Outcomes
) -> schemas.OutcomesResult:
    """Outcomes per request id (1/0 conversions or numeric rewards) for the A/B test."""
    return await call(service.post_outcomes, project, deployment, body)


@router.post(
    DEPLOYMENT + "/outcomes:upload",
    openapi_extra={
        "requestBody": {
            "required": True,
            # Declared as plain bytes (any content type is read as Parquet): OpenAPI
            # tools and generated clients know no serializer for Parquet's media type.
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_outcomes(
    call: Call, request: Request, project: str, deployment: str
) -> schemas.OutcomesResult:
    """A Parquet file of outcomes (columns ``request_id`` and ``value``)."""
    return await call(service.upload_outcomes, project, deployment, await request.body())


@router.get(DEPLOYMENT + "/abtest")
async def abtest_report(call: ReadCall, project: str, deployment: str) -> schemas.AbTestReport:
    """Per variant n, mean and interval; lift, p-values and the winner, if any."""
    return await call(service.abtest_report, project, deployment)


@router.post(DEPLOYMENT + "/abtest:promote")
async def promote_winner(
    call: Call, project: str, deployment: str, body: schemas.Promote
) -> schemas.DeploymentOut:
    """Give the A/B test's winner all live traffic (refused while there is none)."""
    return await call(service.promote_winner, project, deployment, body)


@router.post(DEPLOYMENT + "/rollout", status_code=status.HTTP_201_CREATED)
async def start_rollout(
    call: Call, project: str, deployment: str, body: schemas.RolloutStart
) -> schemas.RolloutOut:
    """Roll a canary variant out step by step in place of a stable one, rolling back on
    its own when the canary fails or slows past the margins. Needs deployment:write."""
    return await call(rollouts.start_rollout, project, deployment, body)


@router.get(DEPLOYMENT + "/rollout")
async def get_rollout(call: ReadCall, project: str, deployment: str) -> schemas.RolloutOut:
    """The running rollout (or how the last one ended): its step, evidence and what the
    step waits for."""
    return await call(rollouts.get_rollout, project, deployment)


@router.post(DEPLOYMENT + "/rollout:abort")
async def abort_rollout(
    call: Call, project: str, deployment: str, body: schemas.RolloutAbort | None = None
) -> schemas.RolloutOut:
    """Stop the running rollout: the canary goes and the stable gets its share back (the
    body, with a reason, is optional)."""
    return await call(rollouts.abort_rollout, project, deployment, body or schemas.RolloutAbort())


_RAW_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/vnd.apache.arrow.stream": {
                "schema": {"type": "string", "format": "binary"}
            },
        },
    }
}


async def _answer(
    call: ReadCall, request: Request, project: str, deployment: str, kind: str
) -> Response:
    # What a replica takes, no more: refused while read, never forwarded.
    limit_body(
        request, call.settings.deployment_max_body_bytes, setting="GHAF_DEPLOYMENT_MAX_BODY_BYTES"
    )
    body = await request.body()
    incoming = flows.Incoming(kind=kind, body=body, headers=dict(request.headers))
    answer = await call.flow(flows.invoke, project, deployment, incoming)
    return Response(answer.body, status_code=answer.status, headers=answer.headers)


@router.post(DEPLOYMENT + "/predict", openapi_extra=_RAW_BODY)
async def predict(call: ReadCall, request: Request, project: str, deployment: str) -> Response:
    """The serving runtime's ``/predict`` through the deployment: records, columns, a
    2-D list or an Arrow stream; ``x-ghaf-variant`` names the variant that answered.
    Needs deployment:invoke."""
    return await _answer(call, request, project, deployment, "predict")


@router.post(DEPLOYMENT + "/infer", openapi_extra=_RAW_BODY)
async def infer(call: ReadCall, request: Request, project: str, deployment: str) -> Response:
    """An Open Inference Protocol v2 infer request through the deployment (JSON or the
    binary tensor extension); the answer's ``model_name`` is the deployment and its
    ``model_version`` the variant. Needs deployment:invoke."""
    return await _answer(call, request, project, deployment, "infer")


# --- the Open Inference Protocol at the server's root ----------------------------------
# OIP clients (tritonclient, KServe's) fix their paths at /v2: the deployment is the
# model, its project the x-ghaf-project header (or a service account token's own).

root_router = APIRouter(tags=["deployments"], include_in_schema=False)
OIP_ANONYMOUS = ("/v2/health/live", "/v2/health/ready")


@root_router.get("/v2")
async def oip_server_metadata() -> Response:
    """The OIP server metadata: no names of anyone's, so no token is asked."""
    from ghaf.core.version import __version__

    body = orjson.dumps(
        {"name": "ghaf", "version": __version__, "extensions": ["binary_tensor_data"]}
    )
    return Response(body, media_type="application/json")


@root_router.get("/v2/health/live")
@root_router.get("/v2/health/ready")
async def oip_health() -> Response:
    """The gateway is up (each deployment's readiness is its own route)."""
    return Response(b'{"live":true,"ready":true}', media_type="application/json")


@root_router.get("/v2/models/{deployment}")
async def oip_model_metadata(call: ReadCall, request: Request, deployment: str) -> Response:
    body = await call.flow(flows.oip_metadata, deployment, dict(request.headers))
    return Response(body, media_type="application/json")


@root_router.get("/v2/models/{deployment}/ready")
async def oip_model_ready(call: ReadCall, request: Request, deployment: str) -> Response:
    document = await call.flow(flows.oip_ready, deployment, dict(request.headers))
    return Response(orjson.dumps(document), media_type="application/json")


async def _oip_infer(
    call: ReadCall, request: Request, deployment: str, variant: str | None
) -> Response:
    limit_body(
        request, call.settings.deployment_max_body_bytes, setting="GHAF_DEPLOYMENT_MAX_BODY_BYTES"
    )
    body = await request.body()
    incoming = flows.Incoming(kind="infer", body=body, headers=dict(request.headers))
    answer = await call.flow(flows.oip_infer, deployment, incoming, variant=variant)
    return Response(answer.body, status_code=answer.status, headers=answer.headers)


@root_router.post("/v2/models/{deployment}/infer")
async def oip_infer(call: ReadCall, request: Request, deployment: str) -> Response:
    """OIP infer through the deployment (JSON or binary tensors); ``model_version`` in
    the answer names the variant. Needs deployment:invoke."""
    return await _oip_infer(call, request, deployment, None)


@root_router.post("/v2/models/{deployment}/versions/{variant}/infer")
async def oip_infer_variant(
    call: ReadCall, request: Request, deployment: str, variant: str
) -> Response:
    """OIP infer by one variant (its name as the version). Needs deployment:debug."""
    return await _oip_infer(call, request, deployment, variant)
