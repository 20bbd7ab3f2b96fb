"""The serving domain as the app, the CLI and the metadata see it (ghaf/domains.py):
the platform's invoke check (its router) and ``ghaf serve`` (a top-level command)."""

from __future__ import annotations

from ghaf.platform.manifest import Domain
from ghaf.serving import api, cli

MANIFEST = Domain(
    name="serving",
    router=api.router,
    cli=(("serve", cli.serve),),  # a command of its own, not a group
)
