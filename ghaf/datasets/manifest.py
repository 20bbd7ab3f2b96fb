"""The datasets domain as the app, the CLI and the metadata see it (ghaf/domains.py)."""

from __future__ import annotations

from ghaf.datasets import api, cli, service
from ghaf.platform.manifest import Domain

MANIFEST = Domain(
    name="datasets",
    router=api.router,
    cli=(("datasets", cli.datasets),),
    models=("ghaf.datasets.models",),
    references=(service._names_blob,),
)
