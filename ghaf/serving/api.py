"""The serving domain's platform route: the invoke check a standalone ``ghaf serve``
asks (with the caller's own token) before it runs a request."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ghaf.platform.calls import ReadCall
from ghaf.serving import service
from ghaf.serving.schemas import InvokeGrant

router = APIRouter(tags=["serving"])


@router.get("/projects/{project}/deployments:check-invoke")
async def check_invoke(
    call: ReadCall,
    project: str,
    model: Annotated[str | None, Query(description="The model the caller wants to call.")] = None,
) -> InvokeGrant:
    """200 when the token may invoke served models of the project (deployment:invoke)."""
    return await call(service.check_invoke, project, model)
