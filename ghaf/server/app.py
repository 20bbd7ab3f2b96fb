"""The application factory."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from ghaf.core.migrate import check_schema
from ghaf.core.settings import Settings
from ghaf.core.version import __version__
from ghaf.domains import DOMAINS, open_runtime, periodic_tasks, register_references
from ghaf.platform.manifest import Domain
from ghaf.runtime import Runtime
from ghaf.security.audit.witness import witness_tip
from ghaf.server import docs, health, openapi, problems
from ghaf.server.encoding import RefuseInvalidEncoding
from ghaf.server.guards import Authenticate, BodyLimit
from ghaf.server.hot_routes import HotRoute, HotRoutes, hot_routes_of
from ghaf.server.metrics import app_registry
from ghaf.server.middleware import RequestContextMiddleware, RequestMetrics
from ghaf.tasks import Scheduler

__all__ = ["app_from_environment", "create_app"]

API_PREFIX = "/api/v1"
DOCS_URL = f"{API_PREFIX}/docs"
# The only /api/v1 paths served without a token (health and metrics live outside it):
# the login, the OpenAPI document, and the docs page with its assets (ghaf/server/docs.py).
ANONYMOUS_PATHS = (
    f"{API_PREFIX}/auth/login",
    f"{API_PREFIX}/openapi.json",
    *docs.paths(DOCS_URL),
)
log = logging.getLogger("ghaf.server")


async def _to_docs() -> RedirectResponse:
    """307 to the API docs (temporary: ``/`` may serve the web UI one day)."""
    return RedirectResponse(DOCS_URL)


def create_app(
    settings: Settings,
    *,
    runtime: Runtime | None = None,
    domains: Sequence[Domain] = DOMAINS,
) -> FastAPI:
    """Build the ASGI app from ``domains`` (their routers, hot routes and periodic tasks).
    Refuses to start on a missing or outdated schema."""
    runtime = runtime or open_runtime(settings, domains)
    check_schema(runtime.database)
    register_references(domains)
    tasks = periodic_tasks(settings, domains)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        log.info("ghaf %s serving, region %s", __version__, settings.region)
        scheduler = Scheduler(runtime, tasks)  # purges, stale runs, audit checkpoints
        scheduler.start()
        running = AsyncExitStack()
        for domain in domains:
            if domain.lifespan is not None:
                await running.enter_async_context(domain.lifespan(runtime))
        # Everything loaded so far (modules, the app, mappers) lives as long as the
        # process: move it out of the collector's sight. Requests make short-lived,
        # mostly acyclic garbage (freed by reference counting), so young collections can
        # be rare: with the default 700-allocation threshold they ran every request or
        # two and set the p99 of cached lookups (bench/registry.py: 5.4 -> 3.5 ms).
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 50, 100)
        yield
        await running.aclose()  # each domain's lifespan, newest first
        await scheduler.stop()
        # A signed, witnessed checkpoint at the tip on every clean shutdown bounds what a
        # silent truncation of the trail could remove.
        seq = witness_tip(runtime.database, runtime.audit)
        log.info("audit checkpoint written at row %s", seq)

    app = FastAPI(
        title="ghaf",
        version=__version__,
        description="Secure-by-default MLOps platform API.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # served from a package, not a CDN: docs.install below
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.tasks = tasks
    app.state.metrics = RequestMetrics(app_registry(runtime))
    problems.install(app)
    openapi.install(app, prefix=API_PREFIX, anonymous=ANONYMOUS_PATHS)
    docs.install(app, docs_url=DOCS_URL, openapi_url=f"{API_PREFIX}/openapi.json", title=app.title)
    app.include_router(health.router)
    # Someone who opens the server's address (or /docs) in a browser lands on the API
    # docs. Outside /api/v1, so served without a token, like the docs page itself.
    for path in ("/", "/docs"):
        app.add_api_route(path, _to_docs, methods=["GET"], include_in_schema=False)
    hot: list[HotRoute] = []
    root_prefixes: list[str] = []
    root_anonymous: list[str] = []
    for domain in domains:
        if domain.root_router is not None:
            # A protocol's own paths (OIP's /v2), guarded like /api/v1 below.
            app.include_router(domain.root_router)
            if domain.root_prefix is not None:
                root_prefixes.append(domain.root_prefix)
            root_anonymous += domain.root_anonymous
        if domain.router is not None:
            app.include_router(domain.router, prefix=API_PREFIX)
            hot += hot_routes_of(domain.router, domain.hot_routes, API_PREFIX)
        elif domain.hot_routes:
            raise ValueError(f"domain {domain.name} declares hot routes but no router")
    app.add_middleware(HotRoutes, routes=hot)
    # Outermost last: request id -> body limit -> authentication -> hot routes -> FastAPI.
    app.add_middleware(
        Authenticate,
        runtime=runtime,
        prefix=API_PREFIX,
        anonymous=(*ANONYMOUS_PATHS, *root_anonymous),
        login=f"{API_PREFIX}/auth/login",
        more_prefixes=root_prefixes,
    )
    app.add_middleware(
        BodyLimit,
        default=settings.max_body_bytes,
        most=settings.max_upload_bytes,
        timeout_s=settings.body_timeout_s,
        min_rate=settings.body_min_rate,
    )
    app.add_middleware(RefuseInvalidEncoding)  # inside the request id, outside hot routes
    app.add_middleware(
        RequestContextMiddleware, metrics=app.state.metrics, access_log=settings.access_log
    )
    return app


def app_from_environment() -> FastAPI:
    """The app built from GHAF_* settings: what each of ``ghaf server --workers N``'s
    processes serves."""
    from ghaf.core.logging import configure_logging
    from ghaf.core.settings import load_settings

    settings = load_settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    return create_app(settings)
