"""The deployments domain as the app, the CLI and the metadata see it (ghaf/domains.py)."""

from __future__ import annotations

from pathlib import Path

from ghaf.deployments import api, cli, gateway, service
from ghaf.platform import events
from ghaf.platform.manifest import Domain

MANIFEST = Domain(
    name="deployments",
    router=api.router,
    cli=(("deploy", cli.deploy),),
    models=("ghaf.deployments.models",),
    listeners=(
        (events.MODEL_ALIAS, service.follow_alias),
        (events.MODEL_RETIRE, service.refuse_retiring_served),
    ),
    migrations=Path(__file__).parent / "migrations",
    lifespan=gateway.serving,
)
