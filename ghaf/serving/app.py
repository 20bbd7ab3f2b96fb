"""The standalone serving app: one or more loaded versions behind OIP v2 and /predict.

:func:`create_serving_app` is what ``ghaf serve`` runs under uvicorn, and what a
deployment will run; tests build it in-process. Outermost first: the observer (request
ids, ``/metrics`` series, the prediction log; ghaf/serving/metrics.py), the invoke
guard (every path but the health probes needs a token holding ``deployment:invoke``
or the server's invoke key; ghaf/serving/auth.py), then FastAPI's routing; each route
reads its body within ``max_body_bytes`` and answers errors as ``{"error": "..."}``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import Response

from ghaf.core.errors import GhafError
from ghaf.core.version import __version__
from ghaf.serving import predict, protocol
from ghaf.serving.auth import Authorizer, InvokeGuard
from ghaf.serving.batching import BatchingOptions
from ghaf.serving.fastpath import HotPath, ServingApp
from ghaf.serving.metrics import ServingMetrics, ServingObserver
from ghaf.serving.predlog import PredictionLog
from ghaf.serving.runtime import LoadedModel
from ghaf.serving.served import ModelTable, ServedModel, error_answer, json_answer

__all__ = ["ServingOptions", "create_serving_app"]
log = logging.getLogger("ghaf.serving")


@dataclass(frozen=True)
class ServingOptions:
    """How the app batches and what it accepts."""

    batching: BatchingOptions = field(default_factory=BatchingOptions)
    max_body_bytes: int = 32 * 1024 * 1024


def create_serving_app(
    models: Sequence[LoadedModel],
    *,
    authorizer: Authorizer,
    options: ServingOptions | None = None,
    prediction_log: PredictionLog | None = None,
) -> ServingApp:
    """An ASGI app serving ``models`` (the first is ``/predict``'s default), every
    request but the health probes checked by ``authorizer``; every answered prediction
    goes to ``prediction_log`` (None: not logged), which the app starts and stops."""
    options = options or ServingOptions()
    table = ModelTable([ServedModel(m, options.batching) for m in models])
    metrics = ServingMetrics(table, prediction_log)
    unlogged = [m for m in table if m.loaded.info.project is None]
    if prediction_log is not None and unlogged:
        log.warning(
            "the prediction log needs a model's project; not logging %s",
            ", ".join(f"{m.name} v{m.version}" for m in unlogged),
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        table.start()
        if prediction_log is not None:
            prediction_log.start()
        app.state.ready = True
        names = ", ".join(f"{m.name} v{m.version} ({m.loaded.device})" for m in table)
        log.info("serving %s", names)
        try:
            yield
        finally:
            app.state.ready = False
            await table.stop()
            if prediction_log is not None:
                # Stores what is still buffered: file writes block, so off the loop.
                await run_in_threadpool(prediction_log.stop)
            await authorizer.aclose()

    # A FastAPI app whose prediction routes skip FastAPI's routing (fastpath.py).
    app = ServingApp(
        title="ghaf serving",
        version=__version__,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.models = table
    app.state.ready = False
    app.state.max_body_bytes = options.max_body_bytes
    app.state.metrics = metrics
    app.state.prediction_log = prediction_log
    app.include_router(protocol.router)
    app.include_router(predict.router)
    app.add_api_route("/metrics", _metrics, methods=["GET"], include_in_schema=False)
    app.add_exception_handler(GhafError, _ghaf_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(InvokeGuard, authorizer=authorizer, open_paths=protocol.OPEN_PATHS)
    # Added last, so outermost: it also counts what the guard refuses.
    app.add_middleware(
        ServingObserver, metrics=metrics, quiet_paths=(*protocol.OPEN_PATHS, "/metrics")
    )
    # The prediction routes, with what the two middlewares above do, in one step each.
    app.hot = HotPath(
        table, authorizer=authorizer, metrics=metrics, max_body_bytes=options.max_body_bytes
    )
    return app


async def _metrics(request: Request) -> Response:
    """Prometheus text exposition (docs/serving.md, "Metrics"); behind the guard, as
    every route but the probes."""
    metrics: ServingMetrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _ghaf_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, GhafError)
    return error_answer(error)


async def _http_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    if error.status_code == 404:
        return json_answer({"error": "no such route; see /v2 and /predict"}, 404)
    return json_answer({"error": str(error.detail)}, error.status_code)


async def _validation_error(_request: Request, error: Exception) -> Response:
    return json_answer({"error": f"invalid request: {error}"}, 400)


async def _unexpected(_request: Request, error: Exception) -> Response:
    log.error("serving request failed", exc_info=error)
    return json_answer({"error": "internal error; see the server log"}, 500)
