"""ghaf: a secure-by-default MLOps platform.

The public SDK entry points are :class:`ghaf.Client` and, for training code,
:func:`ghaf.start_run`::

    import ghaf
    client = ghaf.Client(url="http://127.0.0.1:8080", token="ghaf_...")
    client.projects.create("risk")
    with ghaf.start_run(experiment="churn", project="risk") as run:
        run.log_metric("loss", 0.3)
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ghaf.core.version import __version__

if TYPE_CHECKING:
    from ghaf.client.active_run import ActiveRun, active_run, start_run
    from ghaf.client.autolog import autolog
    from ghaf.client.client import Client
    from ghaf.client.shortcuts import models, runs
    from ghaf.core.errors import GhafError

# Every ``ghaf.*`` import (the ``ghaf`` command, the server, a worker) runs this file
# first, so it imports nothing heavy: each export is loaded on first use (PEP 562).
# tests/test_import_time.py holds ``import ghaf`` and ``ghaf --help`` to it.
_EXPORTS = {
    "ActiveRun": "ghaf.client.active_run",
    "Client": "ghaf.client.client",
    "GhafError": "ghaf.core.errors",
    "active_run": "ghaf.client.active_run",
    "autolog": "ghaf.client.autolog",
    "models": "ghaf.client.shortcuts",
    "runs": "ghaf.client.shortcuts",
    "start_run": "ghaf.client.active_run",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ghaf' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
