"""Multi-step project actions: what the REST route, the CLI (through it) and the
scheduled task all call."""

from __future__ import annotations

from datetime import datetime

from ghaf.projects import service
from ghaf.security.context import Context
from ghaf.storage import service as storage


def purge(ctx: Context, *, now: datetime | None = None) -> list[str]:
    """Permanently remove deleted projects past their retention: their rows first (one
    transaction, audited), then every byte they stored. Returns their names.

    Needs ``platform:admin``: a platform admin, or ghaf's own scheduled work.
    """
    ctx.require("platform:admin", resource="projects")
    purged = service.purge_projects(ctx, now=now)
    for project in purged:
        storage.delete_project_objects(ctx, project.id)
    return [project.name for project in purged]
