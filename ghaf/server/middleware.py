"""Pure-ASGI middleware (cheaper than BaseHTTPMiddleware): request ids, metrics and
the access log.

The access log (logger ``ghaf.access``, ``GHAF_ACCESS_LOG``) writes one line per request
when it ends: method, route template (never the raw path, which may name things),
status, duration, body bytes in and out, the principal's name (never a token) and the
client address. With ``GHAF_LOG_FORMAT=json`` each of these is a field of its own, next
to the time and the request id. Probes and scrapes (``/healthz``, ``/readyz``,
``/metrics``) log at DEBUG, so a load balancer's polling does not drown the log.
"""

from __future__ import annotations

import logging
import re
import time

from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ghaf.core.ids import new_request_id
from ghaf.core.logging import FIELDS, request_id_var
from ghaf.platform.calls import AUTH_STATE
from ghaf.platform.metrics import RequestSeries
from ghaf.platform.uploads import BODY_STATE
from ghaf.runtime import Resolved

_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
access_log = logging.getLogger("ghaf.access")
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Paths polled by machines: their access lines are DEBUG, not INFO."""
_ACCESS_TEXT = "%s %s %d %.1fms in=%d out=%d principal=%s client=%s"
# Built once: the record carries the arguments, and only a handler that emits the line
# formats it (text) or names them (JSON). Nothing is formatted for a disabled logger.
_ACCESS_EXTRA = {
    FIELDS: (
        "method",
        "route",
        "status",
        "duration_ms",
        "bytes_in",
        "bytes_out",
        "principal",
        "client",
    )
}


class RequestMetrics(RequestSeries):
    """The Prometheus series the server exports at /metrics, by route template."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        super().__init__(
            registry,
            name="ghaf_http",
            labels=("route", "method"),
            requests_help="HTTP requests by route, method and status.",
            latency_help="HTTP request latency by route.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


class RequestContextMiddleware:
    """Gives every request an id (echoed in ``X-Request-ID``), records its metrics and
    writes its access line (unless ``access_log`` is off)."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics, *, access_log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        sent = 0
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            self.metrics.record(route, scope["method"], status, elapsed)
            if self.access_log:
                _log_access(scope, state, route, status, elapsed, sent)
            request_id_var.reset(token)  # after the access line, which carries it


def _log_access(
    scope: Scope, state: dict[str, object], route: str, status: int, elapsed: float, sent: int
) -> None:
    level = logging.DEBUG if scope["path"] in QUIET_PATHS else logging.INFO
    if not access_log.isEnabledFor(level):
        return
    # The guards left what they learned in the request's state: the caller
    # (ghaf/server/guards.py Authenticate) and the body bytes read (BodyLimit).
    resolved = state.get(AUTH_STATE)
    budget = state.get(BODY_STATE)
    client = scope.get("client")
    args = (
        scope["method"],
        route,
        status,
        round(elapsed * 1000, 3),
        getattr(budget, "received", 0),
        sent,
        resolved.caller.name if isinstance(resolved, Resolved) else "-",
        client[0] if client else "-",
    )
    # The record is made directly: Logger.log would walk the stack for a caller's file
    # and line, which every access line shares, on every request.
    access_log.handle(
        access_log.makeRecord(
            access_log.name, level, __file__, 0, _ACCESS_TEXT, args, None, extra=_ACCESS_EXTRA
        )
    )


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
