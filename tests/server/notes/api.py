"""The domain's router: HTTP in, a service call, HTTP out."""

from __future__ import annotations

from fastapi import APIRouter

from ghaf.platform.calls import ReadCall
from tests.server.notes import service

router = APIRouter(tags=["notes"])


@router.get("/notes/{name}")
async def get_note(call: ReadCall, name: str) -> service.NoteOut:
    return await call(service.get_note, name)
