"""The tracking domain as the app, the CLI and the metadata see it (ghaf/domains.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ghaf.core.settings import Settings
from ghaf.platform.manifest import Domain, PeriodicTask
from ghaf.runtime import Runtime
from ghaf.tracking import api, cli, service

log = logging.getLogger("ghaf.tracking")


def fail_stale(runtime: Runtime) -> list[str]:
    """Mark failed the runs whose heartbeat stopped, as ghaf itself (audited)."""
    with runtime.acting_as("system:runs", request_id="run-heartbeats") as ctx:
        return service.fail_stale_runs(ctx, timeout_s=runtime.settings.run_heartbeat_timeout_s)


def _reap(runtime: Runtime) -> str:
    ended = fail_stale(runtime)
    if ended:
        log.warning("runs marked failed after a lost heartbeat: %s", ", ".join(ended))
    return f"marked {len(ended)} run(s) failed" + (f": {', '.join(ended)}" if ended else "")


def _tasks(settings: Settings) -> Sequence[PeriodicTask[Runtime]]:
    reap_every = min(settings.run_heartbeat_timeout_s / 4, 30.0)
    # Held back one interval after start-up: clients whose server was away get a moment
    # to heartbeat again before their runs count as lost.
    return [PeriodicTask("tracking.reap-stale-runs", reap_every, _reap, start_delay_s=reap_every)]


MANIFEST = Domain(
    name="tracking",
    router=api.router,
    cli=(("experiments", cli.experiments), ("runs", cli.runs)),
    models=("ghaf.tracking.models",),
    tasks=_tasks,
    references=(service._names_blob,),
)
