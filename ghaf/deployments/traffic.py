"""What each variant's traffic looked like: requests, failures and a latency histogram.

The gateway counts every answer (and every shadow's) into a :class:`Tally` per variant,
exports the totals on ``/metrics`` and writes what it counted since the last write as
one ``deployment_traffic`` row per variant every few seconds (``TrafficWriter``), so a
canary rollout judges the same evidence whichever server served the requests, and a
restart loses at most the last few seconds.

Latencies go into geometric buckets (each 10% wider than the one before, from 0.1 ms
to two minutes) stored sparsely, so two tallies merge by adding counts and a p99 read
from them is at most 10% above the true one: a rollout's margin (e.g. "at most 25% slower")
is not lost in the bucket width, as it would be with Prometheus-style 2x buckets.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from starlette.concurrency import run_in_threadpool

log = logging.getLogger("ghaf.deployments")

_FIRST_S = 1e-4  # the first bucket's upper edge
_GROWTH = 1.1
_BUCKETS = 140  # 1e-4 * 1.1**140 ~ 6.3e1 .. the last one holds everything slower
_LOG_GROWTH = math.log(_GROWTH)

# The edges /metrics exports (a histogram of its own: fewer, fixed buckets).
EXPORTED_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

OK, ERROR, REFUSED = "ok", "error", "refused"
OUTCOMES = (OK, ERROR, REFUSED)


def _bucket(seconds: float) -> int:
    if seconds <= _FIRST_S:
        return 0
    return min(_BUCKETS, 1 + int(math.log(seconds / _FIRST_S) / _LOG_GROWTH))


def _upper(index: int) -> float:
    return _FIRST_S * _GROWTH**index


@dataclass
class Tally:
    """Requests, failures and latencies of one variant over some time.

    ``errors``: answers the variant failed to give (5xx, gone, timed out); ``refused``:
    bodies it refused (4xx) that the platform had let through.
    """

    requests: int = 0
    errors: int = 0
    refused: int = 0
    latency: dict[int, int] = field(default_factory=dict)  # bucket -> count
    seconds: float = 0.0  # the sum, for the exported histogram

    def add(self, seconds: float, outcome: str) -> None:
        self.requests += 1
        if outcome == ERROR:
            self.errors += 1
        elif outcome == REFUSED:
            self.refused += 1
        index = _bucket(seconds)
        self.latency[index] = self.latency.get(index, 0) + 1
        self.seconds += seconds

    def merge(self, other: Tally) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.refused += other.refused
        self.seconds += other.seconds
        for index, count in other.latency.items():
            self.latency[index] = self.latency.get(index, 0) + count

    @property
    def failed(self) -> int:
        return self.errors + self.refused

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.requests if self.requests else None

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile of the latencies in seconds (None with no requests): the
        upper edge of the bucket it falls in, so it never understates."""
        total = sum(self.latency.values())
        if not total:
            return None
        rank = max(1, math.ceil(q * total))
        seen = 0
        for index in sorted(self.latency):
            seen += self.latency[index]
            if seen >= rank:
                return _upper(index)
        return _upper(max(self.latency))  # pragma: no cover - the loop always returns

    def exported(self) -> list[tuple[str, float]]:
        """Cumulative counts at :data:`EXPORTED_BUCKETS` (Prometheus's ``le``)."""
        edges: list[float] = [*EXPORTED_BUCKETS, math.inf]
        counts = [0.0] * len(edges)
        for index, count in self.latency.items():
            upper = _upper(index)
            for i, edge in enumerate(edges):
                if upper <= edge * (1 + 1e-9):
                    counts[i] += count
                    break
        out: list[tuple[str, float]] = []
        running = 0.0
        for edge, within in zip(edges, counts, strict=True):
            running += within
            out.append(("+Inf" if edge == math.inf else repr(float(edge)), running))
        return out

    def to_row(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "refused": self.refused,
            "latency": {str(k): v for k, v in sorted(self.latency.items())},
            "latency_sum_s": self.seconds,
        }

    @classmethod
    def from_row(
        cls,
        *,
        requests: object,
        errors: object,
        refused: object,
        latency: Mapping[str, Any],
        latency_sum_s: object = 0.0,
    ) -> Tally | None:
        """A stored row's tally, or None when the row is not one (a count that is not a
        whole number >= 0, more failures than requests): a tampered row must neither
        break a rollout's judgement with an exception nor sway it. A bucket that is not
        a count in range is skipped."""
        counts = (requests, errors, refused)
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in counts):
            return None
        assert isinstance(requests, int) and isinstance(errors, int)
        assert isinstance(refused, int)
        if errors + refused > requests:
            return None
        buckets: dict[int, int] = {}
        for key, count in latency.items():
            try:
                index = int(key)
            except (TypeError, ValueError):
                continue
            if 0 <= index <= _BUCKETS and type(count) is int and count > 0:
                buckets[index] = count
        seconds = latency_sum_s
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            seconds = 0.0
        if not math.isfinite(seconds) or seconds < 0:
            seconds = 0.0
        return cls(
            requests=requests,
            errors=errors,
            refused=refused,
            latency=buckets,
            seconds=float(seconds),
        )


@dataclass(frozen=True)
class Where:
    """Which series a tally belongs to."""

    project: str
    deployment: str  # the name
    deployment_id: str
    variant: str
    shadow: bool = False


Write = Callable[[Where, int, Tally], None]
"""Store one tally of ``where`` at a revision (runs on a worker thread)."""


class Traffic:
    """Every variant's tally since the server started (for ``/metrics``) and since the
    last write (for the rows rollouts read), with the replica counts and shadow drops
    the gateway reports."""

    def __init__(self) -> None:
        self.total: dict[Where, Tally] = {}  # what the writer has taken so far
        self._pending: dict[tuple[Where, int], Tally] = {}
        self.shadow_dropped: dict[Where, int] = {}
        self.cold_starts: dict[Where, Tally] = {}
        self.restarts: dict[tuple[Where, str], int] = {}
        self.replicas: Callable[[], Mapping[Where, int]] = dict

    def record(self, where: Where, revision: int, seconds: float, outcome: str) -> None:
        """Count one answer (once: the totals take it in when the writer takes it)."""
        pending = self._pending.get((where, revision))
        if pending is None:
            pending = self._pending[(where, revision)] = Tally()
        pending.add(seconds, outcome)

    def cold_start(self, where: Where, seconds: float) -> None:
        self.cold_starts.setdefault(where, Tally()).add(seconds, OK)

    def restarted(self, where: Where, reason: str) -> None:
        self.restarts[(where, reason)] = self.restarts.get((where, reason), 0) + 1

    def dropped(self, where: Where) -> None:
        self.shadow_dropped[where] = self.shadow_dropped.get(where, 0) + 1

    def take(self) -> dict[tuple[Where, int], Tally]:
        """What was counted since the last take (for the writer), added to the totals."""
        pending, self._pending = self._pending, {}
        for (where, _), tally in pending.items():
            self.total.setdefault(where, Tally()).merge(tally)
        return pending

    def totals(self) -> dict[Where, Tally]:
        """Every variant's tally since the server started, what is not taken yet too."""
        found = {where: Tally() for where in list(self.total)}
        for where, tally in list(self.total.items()):
            found[where].merge(tally)
        for (where, _), tally in list(self._pending.items()):
            found.setdefault(where, Tally()).merge(tally)
        return found

    def forget(self, deployment_id: str) -> None:
        """A removed deployment's series leave ``/metrics``."""
        for table in (self.total, self.shadow_dropped, self.cold_starts):
            for where in [w for w in table if w.deployment_id == deployment_id]:
                del table[where]
        for key in [k for k in self.restarts if k[0].deployment_id == deployment_id]:
            del self.restarts[key]
        for taken in [k for k in self._pending if k[0].deployment_id == deployment_id]:
            del self._pending[taken]

    def collect(self, project: str | None = None) -> Iterator[Metric]:
        """The series for Prometheus: with ``project``, that project's by deployment and
        variant (for its own authenticated scrape); without, the server's totals, with
        no names (the anonymous ``/metrics``: deployment and variant names are tenants'
        data)."""
        labels = ["deployment", "variant"] if project is not None else []

        def key(where: Where) -> tuple[str, ...] | None:
            if project is None:
                return ()
            return (where.deployment, where.variant) if where.project == project else None

        def grouped(table: Mapping[Where, Tally]) -> dict[tuple[str, ...], dict[bool, Tally]]:
            out: dict[tuple[str, ...], dict[bool, Tally]] = {}
            for where, tally in list(table.items()):
                found = key(where)
                if found is not None:
                    out.setdefault(found, {}).setdefault(where.shadow, Tally()).merge(tally)
            return out

        requests = CounterMetricFamily(
            "ghaf_deployment_requests",
            "Requests deployments' variants answered, by outcome (ok; error: failed, gone "
            "or timed out; refused: a body the replica refused), shadows apart.",
            labels=[*labels, "shadow", "outcome"],
        )
        latency = HistogramMetricFamily(
            "ghaf_deployment_request_duration_seconds",
            "Time from a replica taking a request to its answer.",
            labels=[*labels, "shadow"],
        )
        for values, by_shadow in grouped(self.totals()).items():
            for is_shadow, tally in by_shadow.items():
                shadow = "true" if is_shadow else "false"
                ok = tally.requests - tally.failed
                for outcome, n in ((OK, ok), (ERROR, tally.errors), (REFUSED, tally.refused)):
                    requests.add_metric([*values, shadow, outcome], n)
                latency.add_metric([*values, shadow], tally.exported(), sum_value=tally.seconds)
        yield requests
        yield latency

        def summed(
            counts: Iterable[tuple[Where, tuple[str, ...], int]],
            start: dict[tuple[str, ...], int] | None = None,
        ) -> dict[tuple[str, ...], int]:
            """Counts added up by their series' label values (``key`` plus ``extra``)."""
            out = dict(start or {})
            for where, extra, n in counts:
                found = key(where)
                if found is not None:
                    out[(*found, *extra)] = out.get((*found, *extra), 0) + n
            return out

        replicas = GaugeMetricFamily(
            "ghaf_deployment_replicas", "Replica processes running.", labels=labels
        )
        # The totals always have a value (0 replicas is news too); a project's only its own.
        running = ((w, (), n) for w, n in self.replicas().items())
        for values, n in summed(running, {(): 0} if project is None else None).items():
            replicas.add_metric(list(values), n)
        yield replicas
        dropped = CounterMetricFamily(
            "ghaf_deployment_shadow_dropped",
            "Copies of requests shadow variants did not get: the queue was full.",
            labels=labels,
        )
        for values, n in summed((w, (), n) for w, n in list(self.shadow_dropped.items())).items():
            dropped.add_metric(list(values), n)
        yield dropped
        restarts = CounterMetricFamily(
            "ghaf_deployment_replica_restarts",
            "Replicas the server restarted, by reason (memory: over the variant's memory_mb).",
            labels=[*labels, "reason"],
        )
        for values, n in summed((w, (r,), n) for (w, r), n in list(self.restarts.items())).items():
            restarts.add_metric(list(values), n)
        yield restarts
        cold = HistogramMetricFamily(
            "ghaf_deployment_cold_start_seconds",
            "Time from a request finding no replica to a new one answering ready.",
            labels=labels,
        )
        for values, by_shadow in grouped(self.cold_starts).items():
            merged = Tally()
            for tally in by_shadow.values():
                merged.merge(tally)
            cold.add_metric(list(values), merged.exported(), sum_value=merged.seconds)
        yield cold


class TrafficWriter:
    """Writes what :class:`Traffic` counted, every ``every_s`` seconds, on a worker
    thread (a row per variant per write: a write per request would cost the gateway a
    database write each)."""

    def __init__(self, traffic: Traffic, write: Write, *, every_s: float) -> None:
        self._traffic = traffic
        self._write = write
        self._every_s = every_s
        self._task: asyncio.Task[None] | None = None
        self._writing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            await self.flush()

    async def flush(self) -> None:
        self._writing = True
        try:
            for (where, revision), tally in self._traffic.take().items():
                try:
                    await run_in_threadpool(self._write, where, revision, tally)
                except Exception:  # a deployment removed meanwhile, a database hiccup
                    log.exception("could not record the traffic of %s", where.deployment)
        finally:
            self._writing = False

    @property
    def idle(self) -> bool:
        """Whether everything counted so far is written (or failed to be)."""
        return not self._writing and not self._traffic._pending

    async def stop(self) -> None:
        # Not mid-write: a cancelled write loses the batch it took.
        while self._writing:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
        await self.flush()
