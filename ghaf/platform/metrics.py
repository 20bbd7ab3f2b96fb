"""The Prometheus registry every ghaf process's ``/metrics`` starts from: the platform
server (ghaf/server/metrics.py) and a serving app (ghaf/serving/metrics.py) add their
own series to it."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from ghaf.core.version import __version__

__all__ = ["LoopHistogram", "LoopRequestSeries", "RequestSeries", "process_registry"]


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


# --- series written by one event loop -----------------------------------------------------
# prometheus_client's counters and histograms take a lock on every update, walk their
# buckets in Python and look their labels up again: 3-4 us of a serving request that
# costs about 100 (ADR 0022). Where every update comes from one thread (an event loop),
# these keep plain lists and render them only when scraped, on that same thread.


class LoopHistogram:
    """A histogram by label values, observed and collected on one thread only."""

    def __init__(
        self,
        registry: CollectorRegistry,
        name: str,
        documentation: str,
        labels: Sequence[str],
        *,
        buckets: Sequence[float],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self._bounds = tuple(float(b) for b in buckets)
        self._series: dict[tuple[str, ...], list[float]] = {}
        registry.register(self)

    def series(self, values: tuple[str, ...]) -> list[float]:
        """The counts of ``values`` (one per bucket, then +Inf, then the sum)."""
        found = self._series.get(values)
        if found is None:
            found = self._series[values] = [0.0] * (len(self._bounds) + 2)
        return found

    def observe(self, values: tuple[str, ...], amount: float) -> None:
        self.add(self.series(values), amount)

    def add(self, series: list[float], amount: float) -> None:
        """One observation into a :meth:`series` (``le`` is inclusive, as Prometheus's)."""
        series[bisect_left(self._bounds, amount)] += 1
        series[-1] += amount

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        edges = [*(floatToGoString(b) for b in self._bounds), "+Inf"]  # type: ignore[no-untyped-call]
        for values, series in list(self._series.items()):
            total, buckets = 0.0, []
            for edge, count in zip(edges, series[:-1], strict=True):
                total += count
                buckets.append((edge, total))
            family.add_metric(list(values), buckets, sum_value=series[-1])
        yield family


class LoopRequestSeries:
    """:class:`RequestSeries` (the same series and names) for one event loop's requests:
    ``record`` is two list updates."""

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
        self._name = f"{name}_requests"
        self._help = requests_help
        self._labels = [*labels, "status"]
        self.latency = LoopHistogram(
            registry, f"{name}_request_duration_seconds", latency_help, labels, buckets=buckets
        )
        self._cells: dict[tuple[str, str, int], tuple[list[float], list[float]]] = {}
        registry.register(self)

    def record(self, first: str, second: str, status: int, seconds: float) -> None:
        """Count one request and observe its latency."""
        key = (first, second, status)
        cells = self._cells.get(key)
        if cells is None:
            cells = self._cells[key] = ([0.0], self.latency.series((first, second)))
        cells[0][0] += 1
        self.latency.add(cells[1], seconds)

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._help, labels=self._labels)
        for (first, second, status), (count, _) in list(self._cells.items()):
            family.add_metric([first, second, str(status)], count[0])
        yield family
