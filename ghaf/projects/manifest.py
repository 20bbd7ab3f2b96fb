"""The projects domain as the app, the CLI and the metadata see it (ghaf/domains.py).

Its tables (projects, role grants) live in ``ghaf.security.tenancy``, below it."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ghaf.core.settings import Settings
from ghaf.platform.manifest import Domain, PeriodicTask
from ghaf.projects import api, cli, flows
from ghaf.runtime import Runtime

log = logging.getLogger("ghaf.projects")

PURGE_INTERVAL_S = 3600.0


def purge_due_projects(runtime: Runtime) -> list[str]:
    """Purge deleted projects past their retention, as ghaf itself (audited)."""
    with runtime.acting_as("system:purge", request_id="scheduled-purge") as ctx:
        return flows.purge(ctx)


def _purge(runtime: Runtime) -> str:
    purged = purge_due_projects(runtime)
    if purged:
        log.info("purged deleted projects past retention: %s", ", ".join(purged))
    return f"purged {len(purged)} project(s)" + (f": {', '.join(purged)}" if purged else "")


def _tasks(_settings: Settings) -> Sequence[PeriodicTask[Runtime]]:
    return [PeriodicTask("projects.purge", PURGE_INTERVAL_S, _purge)]


MANIFEST = Domain(
    name="projects",
    router=api.router,
    hot_routes=(api.get_project,),
    cli=(
        ("projects", cli.projects),
        ("members", cli.members),
        ("service-accounts", cli.service_accounts),
    ),
    tasks=_tasks,
)
