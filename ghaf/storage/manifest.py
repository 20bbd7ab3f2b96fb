"""The storage domain as the app, the CLI and the metadata see it (ghaf/domains.py)."""

from __future__ import annotations

from ghaf.platform.manifest import Domain
from ghaf.storage import api, cli

MANIFEST = Domain(
    name="storage",
    router=api.router,
    cli=(("artifacts", cli.artifacts), ("keys", cli.keys)),
    models=("ghaf.storage.models",),
)
