"""A serving app's ``/metrics`` and the observer that feeds it and the prediction log.

:class:`Observation` is one request's bookkeeping, the same for the observer and the
hot path (ghaf/serving/fastpath.py): an id (a safe incoming ``X-Request-ID`` or a new
one, echoed in the answer), an :class:`~ghaf.serving.predlog.Exchange` for the routes to
fill, and when the request ends a count by model, version and status, its latency and,
for an answered prediction, the record for the prediction log (which never blocks). A
caller that went away before its answer counts as status 499 (nginx's "client closed
request"), not as a server error. :class:`ServingObserver` (pure ASGI, outermost) keeps
one around every other request.

:class:`ServingMetrics` holds the series, on a registry of the app's own (the process,
GC and platform collectors included: ghaf/platform/metrics.py):

- ``ghaf_serving_requests_total{model,version,status}`` and
  ``ghaf_serving_request_duration_seconds{model,version}`` (requests that named no
  served model have empty ``model`` and ``version``; health probes are not counted);
- ``ghaf_serving_batch_rows{model,version}``: rows per model call (from the batcher);
- ``ghaf_serving_queue_depth{model,version}``: requests waiting for a model call;
- ``ghaf_serving_prediction_log_*``: records logged and dropped, rows and files
  stored, failed writes, and records waiting for the writer.

Gauges and the log's counts are read when scraped, so nothing but two series updates
runs on a request.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ghaf.core.ids import new_request_id
from ghaf.core.logging import request_id_var
from ghaf.platform.metrics import LoopHistogram, LoopRequestSeries, process_registry
from ghaf.serving.auth import GRANT_STATE
from ghaf.serving.predlog import EXCHANGE, Exchange, PredictionLog
from ghaf.serving.schemas import InvokeGrant

if TYPE_CHECKING:
    from ghaf.serving.served import ModelTable, ServedModel

__all__ = ["CLIENT_GONE", "Observation", "ServingMetrics", "ServingObserver", "incoming_request_id"]
_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
CLIENT_GONE = 499  # the status a request counts as when its caller went away


class ServingMetrics:
    """The series of one serving app (see the module docstring)."""

    def __init__(self, models: ModelTable, prediction_log: PredictionLog | None = None) -> None:
        self.prediction_log = prediction_log
        self.registry: CollectorRegistry = process_registry()
        # Every update comes from the event loop (the observer, the hot path, the
        # batcher's calls end there too): lock-free series (ghaf/platform/metrics.py).
        self.series = LoopRequestSeries(
            self.registry,
            name="ghaf_serving",
            labels=("model", "version"),
            requests_help="Serving requests by model, version and status.",
            latency_help="Serving request latency (body read to answer sent), by model and "
            "version.",
            buckets=LATENCY_BUCKETS,
        )
        self.record = self.series.record
        self.batch_rows = LoopHistogram(
            self.registry,
            "ghaf_serving_batch_rows",
            "Rows per model call (requests merged by the batcher), by model and version.",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
        )
        for served in models:
            series = self.batch_rows.series((served.name, served.version))
            served.batcher.on_batch = partial(self.batch_rows.add, series)
        self.registry.register(_QueueCollector(models))
        if prediction_log is not None:
            self.registry.register(_LogCollector(prediction_log))

    def observe(
        self,
        exchange: Exchange,
        status: int,
        elapsed: float,
        grant: InvokeGrant | None,
        request_id: str,
    ) -> None:
        """Count one answered request and log its prediction (the observer, and the hot
        path that answers prediction requests without it: ghaf/serving/fastpath.py)."""
        served = exchange.model
        if served is None:
            self.record("", "", status, elapsed)
            return
        self.record(served.name, served.version, status, elapsed)
        if (
            self.prediction_log is not None
            and status == 200
            and exchange.outputs is not None
            and exchange.inputs is not None
            and served.loaded.info.project is not None
        ):
            self.prediction_log.log(
                project=served.loaded.info.project,
                model=served.name,
                version=served.version,
                request_id=request_id,
                caller=grant.principal if grant is not None else "",
                latency_s=elapsed,
                inputs=exchange.inputs,
                outputs=exchange.outputs,
            )


class _QueueCollector:
    def __init__(self, models: Iterable[ServedModel]) -> None:
        self.models = list(models)

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "ghaf_serving_queue_depth",
            "Requests waiting for a model call, by model and version.",
            labels=["model", "version"],
        )
        for served in self.models:
            depth.add_metric([served.name, served.version], served.batcher.depth)
        yield depth


class _LogCollector:
    def __init__(self, prediction_log: PredictionLog) -> None:
        self.log = prediction_log

    def collect(self) -> Iterator[Metric]:
        stats = self.log.stats
        prefix = "ghaf_serving_prediction_log"
        counts = {
            "records": ("Answered requests queued for the prediction log.", stats.logged),
            "dropped": (
                "Prediction log records lost: the queue was full, or their file could not "
                "be stored.",
                stats.dropped,
            ),
            "rows": ("Prediction rows stored in the log's Parquet files.", stats.rows),
            "files": ("Parquet files of the prediction log stored.", stats.files),
            "write_failures": (
                "Failed tries to store a prediction log file (each is retried).",
                stats.failures,
            ),
        }
        for name, (doc, value) in counts.items():
            yield CounterMetricFamily(f"{prefix}_{name}", doc, value=value)
        yield GaugeMetricFamily(
            f"{prefix}_queue_depth",
            "Prediction log records waiting for the writer.",
            value=self.log.depth,
        )


class Observation:
    """One request, from its start to its end (the ``with`` block): id, exchange and log
    context set for the routes, then counted and logged by :meth:`ServingMetrics.observe`.
    ``status`` (500 until an answer sets it) and ``grant`` are filled in as it runs."""

    __slots__ = (
        "_tokens",
        "exchange",
        "grant",
        "header",
        "metrics",
        "request_id",
        "started",
        "status",
    )

    def __init__(self, metrics: ServingMetrics, headers: list[tuple[bytes, bytes]]) -> None:
        self.metrics = metrics
        self.request_id = incoming_request_id(headers) or new_request_id()
        self.header = (b"x-request-id", self.request_id.encode())
        self.exchange = Exchange()
        self.status = 500
        self.grant: InvokeGrant | None = None

    def __enter__(self) -> Observation:
        self._tokens = (EXCHANGE.set(self.exchange), request_id_var.set(self.request_id))
        self.started = time.perf_counter()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        EXCHANGE.reset(self._tokens[0])
        request_id_var.reset(self._tokens[1])
        if kind is not None and issubclass(kind, ClientDisconnect):
            self.status = CLIENT_GONE
        elapsed = time.perf_counter() - self.started
        self.metrics.observe(self.exchange, self.status, elapsed, self.grant, self.request_id)


class ServingObserver:
    """Request ids, metrics and the prediction log, around everything else."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServingMetrics,
        quiet_paths: Iterable[str],
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.quiet_paths = frozenset(quiet_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.quiet_paths:
            await self.app(scope, receive, send)
            return
        with Observation(self.metrics, scope["headers"]) as seen:

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    seen.status = message["status"]
                    message["headers"] = [*message.get("headers", []), seen.header]
                await send(message)

            try:
                await self.app(scope, receive, send_with_id)
            finally:
                seen.grant = scope.get("state", {}).get(GRANT_STATE)


def incoming_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The caller's ``X-Request-ID`` when it is safe to echo and log, else None."""
    for name, value in headers:
        if name == b"x-request-id":
            return value.decode() if _SAFE_REQUEST_ID.fullmatch(value) else None
    return None
