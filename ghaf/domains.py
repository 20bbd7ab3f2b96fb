"""The list of domains: the one place that names them.

The app (ghaf/server/app.py: routers, hot routes, periodic tasks), the ``ghaf`` command
(ghaf/cli/main.py: sub-command groups), the metadata (models, for migrations and
checks) and storage's reference checks loop over :data:`DOMAINS`. Adding a domain is
its folder, with a ``manifest.py``, plus one line here (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Iterable

from ghaf.core import migrate
from ghaf.core.database import load_models as _load_model_modules
from ghaf.core.settings import Settings
from ghaf.datasets.manifest import MANIFEST as datasets
from ghaf.deployments.manifest import MANIFEST as deployments
from ghaf.platform import events
from ghaf.platform.manifest import Domain, PeriodicTask
from ghaf.projects.manifest import MANIFEST as projects
from ghaf.registry.manifest import MANIFEST as registry
from ghaf.runtime import Runtime
from ghaf.security.manifest import MANIFEST as security
from ghaf.serving.manifest import MANIFEST as serving
from ghaf.storage import references
from ghaf.storage.manifest import MANIFEST as storage
from ghaf.tasks.manifest import MANIFEST as tasks
from ghaf.tracking.manifest import MANIFEST as tracking

# Routers are mounted, and CLI groups added, in this order.
DOMAINS: tuple[Domain, ...] = (
    projects,
    storage,
    datasets,
    tracking,
    registry,
    security,
    tasks,
    serving,
    deployments,
)


def register_references(domains: Iterable[Domain] = DOMAINS) -> None:
    """Give storage each domain's reference checks (idempotent)."""
    for domain in domains:
        for check in domain.references:
            references.register(check)


def register_listeners(domains: Iterable[Domain] = DOMAINS) -> None:
    """Subscribe each domain's listeners to the events they declare (idempotent)."""
    for domain in domains:
        for event, listener in domain.listeners:
            events.subscribe(event, listener)


def register_migrations(domains: Iterable[Domain] = DOMAINS) -> None:
    """Add each domain's revision scripts to the one migration history (idempotent)."""
    for domain in domains:
        if domain.migrations is not None:
            migrate.register_location(domain.migrations)


def load_models(domains: Iterable[Domain] = DOMAINS) -> None:
    """Register every domain's tables on ``Base.metadata``."""
    _load_model_modules(module for domain in domains for module in domain.models)


def periodic_tasks(
    settings: Settings, domains: Iterable[Domain] = DOMAINS
) -> list[PeriodicTask[Runtime]]:
    """Every domain's periodic tasks, with the intervals ``settings`` give them."""
    found: list[PeriodicTask[Runtime]] = []
    for domain in domains:
        found.extend(domain.tasks(settings))
    names = [t.name for t in found]
    if len(set(names)) != len(names):
        raise ValueError(f"periodic task names must be unique: {sorted(names)}")
    return found


def open_runtime(settings: Settings, domains: Iterable[Domain] = DOMAINS) -> Runtime:
    """Run each domain's ``on_open`` hook, then open the installation."""
    for domain in domains:
        if domain.on_open is not None:
            domain.on_open(settings)
    return Runtime.open(settings)


register_references()  # storage must never delete what a domain still names
register_listeners()
register_migrations()
