"""The registry domain as the app, the CLI and the metadata see it (ghaf/domains.py)."""

from __future__ import annotations

from ghaf.platform.manifest import Domain
from ghaf.registry import api, cli, sandbox, service

MANIFEST = Domain(
    name="registry",
    router=api.router,
    hot_routes=(api.get_version,),
    cli=(("models", cli.models), ("gates", cli.gates)),
    models=("ghaf.registry.models",),
    references=(service._names_blob,),
    # Model checker children never read the installation's secrets or data.
    on_open=sandbox.protect_installation,
)
