"""Domain counters: what the services count when a user action succeeds.

A service counts its action with one call (``metrics.RUNS_CREATED.inc()``) and knows
nothing else about monitoring: the server's ``/metrics`` (ghaf/server/metrics.py) turns
every counter of :data:`COUNTERS` into a Prometheus counter family when it is scraped.
Plain locked numbers, not ``prometheus_client`` objects, so that the services (which the
``ghaf`` command imports too) pay no import for them, and a count costs one lock.

The counts are per process: with ``ghaf server --workers N`` each worker counts what it
served (docs/operations.md, "Metrics").
"""

from __future__ import annotations

import threading

__all__ = [
    "ARTIFACT_BYTES",
    "COUNTERS",
    "LOGINS",
    "MODEL_REGISTRATIONS",
    "MODEL_REVIEWS",
    "POINTS_LOGGED",
    "RUNS_CREATED",
    "Counter",
]


class Counter:
    """A monotonically increasing count, optionally split by one label with a fixed set
    of values (every value is exported from the start, at zero, so rates and dashboards
    never see a series appear out of nothing)."""

    def __init__(
        self, name: str, documentation: str, *, label: str = "", values: tuple[str, ...] = ()
    ) -> None:
        if bool(label) != bool(values):
            raise ValueError(f"counter {name}: a label needs its values and values a label")
        self.name = name
        self.documentation = documentation
        self.label = label
        self._counts = dict.fromkeys(values or ("",), 0.0)
        self._lock = threading.Lock()
        COUNTERS.append(self)

    def inc(self, amount: float = 1, *, value: str = "") -> None:
        """Add ``amount`` (>= 0) to the series of the label's ``value``."""
        if amount < 0:
            raise ValueError(f"counter {self.name} can only go up (got {amount})")
        with self._lock:
            self._counts[value] += amount  # KeyError: not one of the declared values

    def samples(self) -> list[tuple[str, float]]:
        """(label value, count) of every series, read consistently."""
        with self._lock:
            return list(self._counts.items())


COUNTERS: list[Counter] = []
"""Every counter defined here, in definition order (what /metrics exports)."""

LOGINS = Counter(
    "ghaf_logins_total",
    "Password logins by outcome: success, failure (wrong name or password), locked "
    "(refused: the account is locked), throttled (refused: over a rate limit).",
    label="outcome",
    values=("success", "failure", "locked", "throttled"),
)
RUNS_CREATED = Counter("ghaf_runs_created_total", "Tracking runs created.")
POINTS_LOGGED = Counter(
    "ghaf_metric_points_logged_total", "Metric points logged to runs (applied batches only)."
)
MODEL_REGISTRATIONS = Counter(
    "ghaf_model_registrations_total", "Model versions registered (after every check passed)."
)
MODEL_REVIEWS = Counter(
    "ghaf_model_reviews_total",
    "Reviews of model versions by decision (approve, reject).",
    label="decision",
    values=("approve", "reject"),
)
ARTIFACT_BYTES = Counter(
    "ghaf_artifact_bytes_total",
    "Bytes of stored content by direction: in (uploads committed, duplicates included), "
    "out (download bodies sent to clients, pack frames included).",
    label="direction",
    values=("in", "out"),
)
