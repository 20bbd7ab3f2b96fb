"""Pure-ASGI middleware (cheaper than BaseHTTPMiddleware): request ids and metrics."""

from __future__ import annotations

import re
import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ghaf.core.ids import new_request_id
from ghaf.core.logging import request_id_var

_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


class RequestMetrics:
    """The Prometheus series the server exports at /metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "ghaf_http_requests_total",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "ghaf_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["route", "method"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        # ``labels()`` validates, locks and looks up on every call: the series of each
        # (route, method, status) are looked up once. Routes are templates, so this stays
        # as small as the label sets themselves.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request and observe its latency."""
        series = self._series.get((route, method, status))
        if series is None:
            series = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, method),
            )
            self._series[(route, method, status)] = series
        series[0].inc()
        series[1].observe(seconds)


class RequestContextMiddleware:
    """Gives every request an id (echoed in ``X-Request-ID``) and records its metrics."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
            elapsed = time.perf_counter() - started
            self.metrics.record(_route_template(scope), scope["method"], status, elapsed)


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return value.decode() if _SAFE_REQUEST_ID.fullmatch(value) else None
    return None


def _route_template(scope: Scope) -> str:
    # Templates, not raw paths, keep the label set bounded. FastAPI >= 0.160 keeps
    # included routers nested, so the full template lives in its effective route.
    fastapi_state = scope.get("fastapi")
    effective = (
        fastapi_state.get("effective_route_context") if isinstance(fastapi_state, dict) else None
    )
    path = getattr(effective, "path", None) or getattr(scope.get("route"), "path", None)
    return str(path) if path else "unmatched"
