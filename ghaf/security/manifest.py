"""The security domain (identities, tokens, the audit trail, the tenant tables) as the
app, the CLI and the metadata see it (ghaf/domains.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fastapi import APIRouter

from ghaf.core.database import Database
from ghaf.core.settings import Settings
from ghaf.platform.manifest import Domain, PeriodicTask
from ghaf.security import api, cli
from ghaf.security.audit import api as audit_api
from ghaf.security.audit import cli as audit_cli
from ghaf.security.audit.service import AuditWriter
from ghaf.security.audit.witness import witness_tip

router = APIRouter()
router.include_router(api.router)
router.include_router(audit_api.router)


class _Runtime(Protocol):
    """What the witness task needs of the runtime (ghaf/runtime.py sits above security)."""

    @property
    def database(self) -> Database: ...
    @property
    def audit(self) -> AuditWriter: ...


def _witness(runtime: _Runtime) -> str:
    return f"audit tip at row {witness_tip(runtime.database, runtime.audit)} witnessed"


def _tasks(settings: Settings) -> Sequence[PeriodicTask[_Runtime]]:
    return [PeriodicTask("audit.witness", settings.audit_witness_interval_s, _witness)]


MANIFEST = Domain(
    name="security",
    router=router,
    cli=(
        ("users", cli.users),
        ("groups", cli.groups),
        ("tokens", cli.tokens),
        ("audit", audit_cli.audit),
    ),
    models=("ghaf.security.models", "ghaf.security.tenancy", "ghaf.security.audit.models"),
    tasks=_tasks,
)
