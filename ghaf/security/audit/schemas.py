"""Audit request and response shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class AuditEventOut(BaseModel):
    seq: int
    id: str
    ts: datetime
    actor: str | None
    project: str | None
    """The project's current name (None once it is purged)."""
    project_id: str | None = None
    """What the row records: projects are named by id, so a reused name is a new project."""
    action: str
    resource: str
    outcome: str
    request_id: str | None
    client: str | None
    detail: dict[str, Any]
    hash: str


class VerifyResult(BaseModel):
    ok: bool
    rows: int
    checkpoints: int
    last_seq: int
    first_bad_seq: int | None = None
    problem: str | None = None
    signatures_checked: bool = True
    notes: list[str] = []
    witnessed: str | None = None
    """``SEQ:HASH`` of the newest witnessed checkpoint; keep it elsewhere as an anchor."""
    witness: str | None = None
    anchor: str | None = None
