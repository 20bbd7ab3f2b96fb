"""REST routes for reading, verifying and exporting the audit trail."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from ghaf.core.clock import as_utc
from ghaf.core.paging import DEFAULT_LIMIT, Page
from ghaf.platform.calls import Call, Cursor, PageSize, bytes_response
from ghaf.security.audit import schemas, service

router = APIRouter(tags=["audit"])


@router.get("/audit")
async def list_audit(
    call: Call,
    project: str | None = None,
    since: datetime | None = None,
    actor: str | None = None,
    page_size: PageSize = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[schemas.AuditEventOut]:
    """The trail in chain order; without ``project`` this needs a platform admin."""
    rows, next_cursor = await call(
        service.list_events,
        project=project,
        since=as_utc(since) if since else None,
        actor=actor,
        limit=page_size,
        cursor=cursor,
    )
    return Page(items=rows, next_cursor=next_cursor)


@router.post("/audit:verify")
async def verify(call: Call, anchor: str | None = None) -> schemas.VerifyResult:
    """Recompute the whole chain, checkpoints and signed head, against the newest
    witnessed checkpoint and, if given, an ``anchor`` (``SEQ:HASH`` kept elsewhere)."""
    report = await call(service.verify, anchor=anchor)
    return schemas.VerifyResult(**vars(report))


@router.get(
    "/audit:export",
    responses={200: bytes_response("JSON lines.", "application/x-ndjson")},
)
async def export(call: Call) -> StreamingResponse:
    """The trail as JSON lines with checkpoints and head, for a SIEM or offline check."""
    return StreamingResponse(
        await call.stream(service.export_lines), media_type="application/x-ndjson"
    )
