"""The domain's logic: the only place that reads and writes its table."""

from __future__ import annotations

from pydantic import BaseModel

from ghaf.core.errors import NotFound
from ghaf.security.context import Context
from tests.server.notes.models import Note

SWEPT: list[str] = []


class NoteOut(BaseModel):
    name: str
    text: str


def get_note(ctx: Context, name: str) -> NoteOut:
    ctx.require("audit:read", resource=f"note/{name}")
    note = ctx.session.get(Note, name)
    if note is None:
        raise NotFound(f"no note {name!r}", field="name")
    return NoteOut(name=note.name, text=note.text)
