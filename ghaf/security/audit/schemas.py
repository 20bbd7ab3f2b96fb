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
