"""REST route for the periodic tasks (thin: the listing is in service)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ghaf.core.paging import DEFAULT_LIMIT, Page
from ghaf.platform.calls import Call, Cursor, PageSize
from ghaf.tasks import service
from ghaf.tasks.schemas import TaskOut

router = APIRouter(tags=["admin"])


@router.get("/admin/tasks")
async def list_tasks(
    call: Call, request: Request, page_size: PageSize = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[TaskOut]:
    """The periodic tasks by name, with their last run, its outcome, and their next run
    (platform admins)."""
    items, next_cursor = await call(
        service.list_tasks,
        getattr(request.app.state, "tasks", []),
        page_size=page_size,
        cursor=cursor,
    )
    return Page(items=items, next_cursor=next_cursor)
