"""The deployments domain as the app, the CLI and the metadata see it (ghaf/domains.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ghaf.core.ids import new_id
from ghaf.core.settings import Settings
from ghaf.deployments import api, cli, gateway, rollouts, service
from ghaf.platform import events
from ghaf.platform.manifest import Domain, PeriodicTask

PRUNE_INTERVAL_S = 3600.0


def _advance(runtime: Any) -> str | None:
    with runtime.acting_as("system:rollouts", request_id=new_id()) as ctx:
        moved = rollouts.advance_rollouts(ctx)
    return "; ".join(moved) or None


def _prune(runtime: Any) -> str:
    with runtime.acting_as("system:rollouts", request_id=new_id()) as ctx:
        return f"pruned {rollouts.prune_traffic(ctx)} traffic tallies"


def _tasks(settings: Settings) -> Sequence[PeriodicTask[Any]]:
    return [
        PeriodicTask("deployments.rollouts", settings.deployment_rollout_interval_s, _advance),
        PeriodicTask("deployments.traffic-prune", PRUNE_INTERVAL_S, _prune),
    ]


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
    tasks=_tasks,
    root_router=api.root_router,
    root_prefix="/v2",
    root_anonymous=api.OIP_ANONYMOUS,
)
