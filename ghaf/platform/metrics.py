"""The Prometheus registry every ghaf process's ``/metrics`` starts from: the platform
server (ghaf/server/metrics.py) and a serving app (ghaf/serving/metrics.py) add their
own series to it."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from ghaf.core.version import __version__

__all__ = ["RequestSeries", "process_registry"]


def process_registry() -> CollectorRegistry:
    """A registry of its own (never the global one, so two apps in one process never
    clash) with the process, garbage-collector and Python platform collectors
    (``process_*``, ``python_gc_*``, ``python_info``) and ``ghaf_build_info{version}``."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
    Info("ghaf_build", "The ghaf version this process runs.", registry=registry).info(
        {"version": __version__}
    )
    return registry


class RequestSeries:
    """A request counter and a latency histogram on two labels (the counter also by
    status), e.g. (route, method) for the platform and (model, version) for serving."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        name: str,
        labels: tuple[str, str],
        requests_help: str,
        latency_help: str,
        buckets: Sequence[float],
    ) -> None:
        self.requests = Counter(
            f"{name}_requests_total", requests_help, [*labels, "status"], registry=registry
        )
        self.latency = Histogram(
            f"{name}_request_duration_seconds",
            latency_help,
            list(labels),
            registry=registry,
            buckets=buckets,
        )
        # ``labels()`` validates, locks and looks up on every call: the series of each
        # label set are looked up once. Label values are templates and registered names,
        # so this stays as small as the label sets themselves.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def record(self, first: str, second: str, status: int, seconds: float) -> None:
        """Count one request and observe its latency."""
        series = self._series.get((first, second, status))
        if series is None:
            series = (
                self.requests.labels(first, second, str(status)),
                self.latency.labels(first, second),
            )
            self._series[(first, second, status)] = series
        series[0].inc()
        series[1].observe(seconds)
