"""REST routes for reading, verifying and exporting the audit trail."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from ghaf.core.clock import as_utc
from ghaf.core.paging import Page
from ghaf.security.audit import schemas, service
from ghaf.security.audit.models import AuditEvent
from ghaf.server.dependencies import DEFAULT_PAGE, Ctx, Cursor, Limit

router = APIRouter(tags=["audit"])


def _out(row: AuditEvent) -> schemas.AuditEventOut:
    return schemas.AuditEventOut(
        seq=row.seq,
        id=row.id,
        ts=as_utc(row.ts),
        actor=row.actor,
        project=row.project,
        action=row.action,
        resource=row.resource,
        outcome=row.outcome,
        request_id=row.request_id,
        client=row.client,
        detail=row.detail,
        hash=row.hash,
    )


@router.get("/audit")
def list_audit(
    ctx: Ctx,
    project: str | None = None,
    since: datetime | None = None,
    actor: str | None = None,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> Page[schemas.AuditEventOut]:
    """The trail in chain order; without ``project`` this needs a platform admin."""
    rows, next_cursor = service.list_events(
        ctx,
        project=project,
        since=as_utc(since) if since else None,
        actor=actor,
        limit=limit,
        cursor=cursor,
    )
    return Page(items=[_out(r) for r in rows], next_cursor=next_cursor)


@router.post("/audit/verify")
def verify(ctx: Ctx) -> schemas.VerifyResult:
    """Recompute the whole chain, checkpoints and signed head."""
    report = service.verify(ctx)
    return schemas.VerifyResult(**vars(report))


@router.get("/audit/export")
def export(ctx: Ctx) -> StreamingResponse:
    """The trail as JSON lines with checkpoints and head, for a SIEM or offline check."""
    lines = service.export_lines(ctx)

    def body() -> Iterator[bytes]:
        try:
            for line in lines:
                yield line.encode() + b"\n"
        finally:
            ctx.session.close()

    return StreamingResponse(body(), media_type="application/x-ndjson")
