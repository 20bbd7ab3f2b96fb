"""Where a project's data lives, for residency policy checks."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ghaf.storage.models import Blob


def regions_in_use(session: Session, project_id: str) -> dict[str, tuple[int, int]]:
    """Region -> (objects, bytes) that the project stores there."""
    rows = session.execute(
        select(Blob.region, func.count(), func.coalesce(func.sum(Blob.size), 0))
        .where(Blob.project_id == project_id)
        .group_by(Blob.region)
    ).all()
    return {region: (int(n), int(total)) for region, n, total in rows}
