"""The application factory."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from ghaf import __version__
from ghaf.core.migrate import check_schema
from ghaf.core.settings import Settings
from ghaf.datasets.api import router as datasets_router
from ghaf.projects.api import HOT_ROUTES as project_hot_routes
from ghaf.projects.api import router as projects_router
from ghaf.projects.service import purge_projects
from ghaf.registry.api import HOT_ROUTES as registry_hot_routes
from ghaf.registry.api import router as registry_router
from ghaf.security.api import router as security_router
from ghaf.security.audit.api import router as audit_router
from ghaf.security.audit.witness import witness_periodically, witness_tip
from ghaf.server import health, problems
from ghaf.server.encoding import RefuseInvalidEncoding
from ghaf.server.guards import Authenticate, BodyLimit
from ghaf.server.hot_routes import HotRoutes
from ghaf.server.middleware import RequestContextMiddleware, RequestMetrics
from ghaf.server.runtime import Runtime
from ghaf.storage.api import router as storage_router
from ghaf.storage.service import delete_project_objects
from ghaf.tracking.api import router as tracking_router
from ghaf.tracking.service import fail_stale_runs

API_PREFIX = "/api/v1"
# The only /api/v1 paths served without a token (health and metrics live outside it).
ANONYMOUS_PATHS = (
    f"{API_PREFIX}/auth/login",
    f"{API_PREFIX}/openapi.json",
    f"{API_PREFIX}/docs",
    f"{API_PREFIX}/docs/oauth2-redirect",
)
log = logging.getLogger("ghaf.server")


def create_app(settings: Settings, *, runtime: Runtime | None = None) -> FastAPI:
    """Build the ASGI app. Refuses to start on a missing or outdated schema."""
    runtime = runtime or Runtime.open(settings)
    check_schema(runtime.database)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        log.info("ghaf %s serving, region %s", __version__, settings.region)
        purger = asyncio.create_task(_purge_periodically(runtime))
        reaper = asyncio.create_task(_fail_stale_runs_periodically(runtime))
        auditor = asyncio.create_task(
            witness_periodically(runtime.database, runtime.audit, settings.audit_witness_interval_s)
        )
        # Everything loaded so far (modules, the app, mappers) lives as long as the
        # process: move it out of the collector's sight. Requests make short-lived,
        # mostly acyclic garbage (freed by reference counting), so young collections can
        # be rare: with the default 700-allocation threshold they ran every request or
        # two and set the p99 of cached lookups (bench/registry.py: 5.4 -> 3.5 ms).
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        yield
        purger.cancel()
        reaper.cancel()
        auditor.cancel()
        # A signed, witnessed checkpoint at the tip on every clean shutdown bounds what a
        # silent truncation of the trail could remove.
        seq = witness_tip(runtime.database, runtime.audit)
        log.info("audit checkpoint written at row %s", seq)

    app = FastAPI(
        title="ghaf",
        version=__version__,
        description="Secure-by-default MLOps platform API.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.metrics = RequestMetrics(CollectorRegistry())
    problems.install(app)
    app.include_router(health.router)
    for router in (
        projects_router,
        storage_router,
        datasets_router,
        tracking_router,
        registry_router,
        security_router,
        audit_router,
    ):
        app.include_router(router, prefix=API_PREFIX)
    app.add_middleware(HotRoutes, routes=[*project_hot_routes, *registry_hot_routes])
    # Outermost last: request id -> body limit -> authentication -> hot routes -> FastAPI.
    app.add_middleware(
        Authenticate,
        runtime=runtime,
        prefix=API_PREFIX,
        anonymous=ANONYMOUS_PATHS,
        login=f"{API_PREFIX}/auth/login",
    )
    app.add_middleware(BodyLimit, default=settings.max_body_bytes, most=settings.max_upload_bytes)
    app.add_middleware(RefuseInvalidEncoding)  # inside the request id, outside hot routes
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    return app


PURGE_INTERVAL_S = 3600.0


def purge_due_projects(runtime: Runtime) -> list[str]:
    """Purge deleted projects past their retention, as ghaf itself (audited)."""
    ctx = runtime.context(write=True, request_id="scheduled-purge", system_actor="system:purge")
    try:
        return purge_projects(
            ctx, on_purge=lambda project_id: delete_project_objects(runtime.store, project_id)
        )
    finally:
        ctx.close()


async def _purge_periodically(runtime: Runtime) -> None:
    """At start-up and then hourly; several servers may race, which is harmless."""
    while True:
        try:
            purged = await asyncio.to_thread(purge_due_projects, runtime)
            if purged:
                log.info("purged deleted projects past retention: %s", ", ".join(purged))
        except Exception:  # a failed purge must never take the server down
            log.exception("scheduled purge failed; retrying in %.0fs", PURGE_INTERVAL_S)
        await asyncio.sleep(PURGE_INTERVAL_S)


def fail_stale(runtime: Runtime) -> list[str]:
    """Mark failed the runs whose heartbeat stopped, as ghaf itself (audited)."""
    ctx = runtime.context(write=True, request_id="run-heartbeats", system_actor="system:runs")
    try:
        return fail_stale_runs(ctx, timeout_s=runtime.settings.run_heartbeat_timeout_s)
    finally:
        ctx.close()


async def _fail_stale_runs_periodically(runtime: Runtime) -> None:
    """Every quarter of the heartbeat timeout (at most every 30 s)."""
    interval = min(runtime.settings.run_heartbeat_timeout_s / 4, 30.0)
    while True:
        await asyncio.sleep(interval)
        try:
            ended = await asyncio.to_thread(fail_stale, runtime)
            if ended:
                log.warning("runs marked failed after a lost heartbeat: %s", ", ".join(ended))
        except Exception:  # never take the server down
            log.exception("checking run heartbeats failed")


def app_from_environment() -> FastAPI:
    """The app built from GHAF_* settings: what each of ``ghaf server --workers N``'s
    processes serves."""
    from ghaf.core.logging import configure_logging
    from ghaf.core.settings import load_settings

    settings = load_settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    return create_app(settings)
