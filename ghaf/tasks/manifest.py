"""The scheduler's records (``GET /admin/tasks``) as the app and the metadata see them
(ghaf/domains.py). The tasks themselves come from each domain's manifest."""

from __future__ import annotations

from ghaf.platform.manifest import Domain
from ghaf.tasks import api

MANIFEST = Domain(name="tasks", router=api.router, models=("ghaf.tasks.models",))
