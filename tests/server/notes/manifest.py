"""The one declaration that plugs the domain in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ghaf.core.settings import Settings
from ghaf.platform.manifest import Domain, PeriodicTask
from tests.server.notes import api, cli, service


def _sweep(runtime: Any) -> str:
    service.SWEPT.append("swept")
    return "swept the notes"


def _tasks(_settings: Settings) -> Sequence[PeriodicTask[Any]]:
    return [PeriodicTask("notes.sweep", 3600.0, _sweep)]


MANIFEST = Domain(
    name="notes",
    router=api.router,
    hot_routes=(api.get_note,),
    cli=(("notes", cli.notes),),
    models=("tests.server.notes.models",),
    tasks=_tasks,
)
