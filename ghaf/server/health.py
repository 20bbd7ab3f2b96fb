"""Liveness, readiness and Prometheus metrics endpoints (no authentication).

``/readyz`` is polled every few seconds by load balancers: on its happy path it reads
the schema's revision with one query and compares it with the code's head (computed once),
so Alembic neither parses its scripts nor logs its INFO lines per probe. Only a database
that is not at the head goes through :func:`~ghaf.core.migrate.check_schema`, for its
message, with Alembic's chatter filtered out.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from functools import cache

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ghaf.core.database import Database
from ghaf.core.errors import GhafError, Unavailable
from ghaf.core.migrate import check_schema, head_revision, version_locations
from ghaf.core.version import __version__
from ghaf.platform.calls import get_runtime

router = APIRouter(tags=["health"])
_REVISION = text("SELECT version_num FROM alembic_version")
_probing: ContextVar[bool] = ContextVar("ghaf_probing", default=False)


class _NotWhileProbing(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _probing.get()


# Logger filters see only their own logger's records: this is the one Alembic's
# MigrationContext announces itself on ("Context impl ...", "Will assume ...").
logging.getLogger("alembic.runtime.migration").addFilter(_NotWhileProbing())


@cache
def _head(locations: tuple[str, ...]) -> str:
    # Keyed by the folders of revisions: a domain registering one changes the head.
    return head_revision()


def _schema_is_current(database: Database) -> bool:
    """Raises when the database does not answer; False when its schema is not the head."""
    with database.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        try:
            revisions = connection.execute(_REVISION).scalars().all()
        except SQLAlchemyError:
            return False  # no ghaf schema yet: check_schema says so
    return revisions == [_head(tuple(map(str, version_locations())))]


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz")
def readyz(request: Request) -> dict[str, str]:  # sync: its database ping may block
    """The database answers and its schema matches this code."""
    runtime = get_runtime(request)
    token = _probing.set(True)
    try:
        if not _schema_is_current(runtime.database):
            check_schema(runtime.database)  # raises, naming what is wrong
    except GhafError as exc:
        raise Unavailable(f"not ready: {exc.detail}") from None
    except Exception as exc:
        raise Unavailable(f"not ready: database unreachable ({type(exc).__name__})") from None
    finally:
        _probing.reset(token)
    return {"status": "ready", "database": runtime.database.engine.dialect.name}


@router.get(
    "/metrics",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(request: Request) -> Response:
    """Prometheus text exposition: requests, process, database pool, security cache,
    domain counters (docs/operations.md, "Metrics")."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
