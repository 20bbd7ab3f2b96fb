"""REST route for the periodic tasks (thin: the listing is in service)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ghaf.platform.calls import Call
from ghaf.tasks import service
from ghaf.tasks.schemas import TaskOut

router = APIRouter(tags=["admin"])


@router.get("/admin/tasks")
async def list_tasks(call: Call, request: Request) -> list[TaskOut]:
    """The periodic tasks with their last run, its outcome, and their next run
    (platform admins)."""
    return await call(service.list_tasks, getattr(request.app.state, "tasks", []))
