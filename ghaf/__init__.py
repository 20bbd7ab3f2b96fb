"""ghaf: a secure-by-default MLOps platform.

The public SDK entry points are :class:`ghaf.Client` and, for training code,
:func:`ghaf.start_run`::

    import ghaf
    client = ghaf.Client(url="http://127.0.0.1:8080", token="ghaf_...")
    client.projects.create("risk")
    with ghaf.start_run(experiment="churn", project="risk") as run:
        run.log_metric("loss", 0.3)
"""

from ghaf.client.active_run import ActiveRun, active_run, start_run
from ghaf.client.autolog import autolog
from ghaf.client.client import Client
from ghaf.client.shortcuts import models, runs
from ghaf.core.errors import GhafError
from ghaf.core.version import __version__

__all__ = [
    "ActiveRun",
    "Client",
    "GhafError",
    "__version__",
    "active_run",
    "autolog",
    "models",
    "runs",
    "start_run",
]
