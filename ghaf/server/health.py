"""Liveness, readiness and Prometheus metrics endpoints (no authentication)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from ghaf.core.errors import GhafError, Unavailable
from ghaf.core.migrate import check_schema
from ghaf.core.version import __version__
from ghaf.platform.calls import get_runtime

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz")
def readyz(request: Request) -> dict[str, str]:  # sync: its database ping may block
    """The database answers and its schema matches this code."""
    runtime = get_runtime(request)
    try:
        with runtime.database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        check_schema(runtime.database)
    except GhafError as exc:
        raise Unavailable(f"not ready: {exc.detail}") from None
    except Exception as exc:
        raise Unavailable(f"not ready: database unreachable ({type(exc).__name__})") from None
    return {"status": "ready", "database": runtime.database.engine.dialect.name}


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus text exposition of request counts and latencies."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
