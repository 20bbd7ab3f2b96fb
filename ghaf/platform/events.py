"""In-process events between domains: a domain publishes what happened, in the same
transaction, and the domains above it that declared a listener in their manifest
(``Domain.listeners``) act on it, without the publisher importing them.

A listener runs inside the publisher's transaction with its context, so what it writes
commits or rolls back with the event itself; a listener that raises refuses the whole
action (e.g. a production deployment refusing an alias move to an unapproved version).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Listener = Callable[[Any, Mapping[str, Any]], None]
"""``listener(ctx, data)``: ``ctx`` is the publisher's project context."""

_listeners: dict[str, list[Listener]] = {}

MODEL_ALIAS = "model:alias"
"""A model alias was set: ``{"project", "model", "alias", "version", "previous"}``."""

MODEL_RETIRE = "model:retire"
"""A model version is about to be rejected or archived, or a whole model deleted
(``version`` None): ``{"project", "model", "version", "action", "field"}``. A listener
that still serves it refuses by raising."""


def subscribe(event: str, listener: Listener) -> None:
    """Call ``listener`` on every ``event`` (once, however often it is subscribed)."""
    found = _listeners.setdefault(event, [])
    if listener not in found:
        found.append(listener)


def publish(ctx: Any, event: str, data: Mapping[str, Any]) -> None:
    """Run each listener of ``event`` in order; the first that raises stops the rest."""
    for listener in _listeners.get(event, ()):
        listener(ctx, data)
