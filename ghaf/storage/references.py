"""Who else holds blobs. Domains above storage declare a check in their manifest
(``Domain.references``); ghaf/domains.py registers each here, so storage never deletes
content that something still names, without importing them."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

ReferenceCheck = Callable[[Session, str], bool]
_checks: list[ReferenceCheck] = []


def register(check: ReferenceCheck) -> ReferenceCheck:
    """Add ``check(session, blob_id) -> bool`` (once, however often it is registered)."""
    if check not in _checks:
        _checks.append(check)
    return check


def is_referenced(session: Session, blob_id: str) -> bool:
    return any(check(session, blob_id) for check in _checks)
