"""The serving hot path: prediction requests answered without FastAPI's routing.

A serving app answers ``POST /v2/models/{model}[/versions/{version}]/infer`` and
``POST /predict`` thousands of times a second, and for a small model FastAPI's routing,
dependency solving and exception middleware cost several times the model call
(docs/adr/0021-serving-hot-path.md). :class:`ServingApp` is the FastAPI app that
:func:`ghaf.serving.app.create_serving_app` returns; it looks each request's path up in a
table of exact strings, built once from the served models, and sends a match through the
app's own middleware (the observer with its metrics and prediction log, then the invoke
guard, built from ``user_middleware`` in the same order as FastAPI builds them) straight
to the route's function. Everything else, unknown models included, goes through FastAPI
as before, so both ways give the same answers, headers and errors.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ghaf.core.errors import GhafError
from ghaf.serving import predict, protocol
from ghaf.serving.served import ModelTable, error_answer, json_answer

__all__ = ["ServingApp"]
log = logging.getLogger("ghaf.serving")
Handler = Callable[[Request], Awaitable[Response]]


def _infer(name: str, version: str | None) -> Handler:
    async def handle(request: Request) -> Response:
        table: ModelTable = request.app.state.models
        return await protocol.answer_infer(request, table.get(name, version))

    return handle


def hot_routes(table: ModelTable) -> dict[str, Handler]:
    """The POST paths the fast path answers, each with its handler."""
    routes: dict[str, Handler] = {"/predict": predict.predict}
    for served in table:
        routes[f"/v2/models/{served.name}/infer"] = _infer(served.name, None)
        routes[f"/v2/models/{served.name}/versions/{served.version}/infer"] = _infer(
            served.name, served.version
        )
    return routes


async def _answer(scope: Scope, receive: Receive, send: Send) -> None:
    """The innermost layer: the route's function, its errors answered as the app's
    exception handlers answer them."""
    handler: Handler = scope["ghaf.handler"]
    try:
        response = await handler(Request(scope, receive))
    except GhafError as error:
        response = error_answer(error)
    except Exception:
        log.exception("serving request failed")
        response = json_answer({"error": "internal error; see the server log"}, 500)
    await response(scope, receive, send)


class ServingApp(FastAPI):
    """FastAPI, with its hot routes answered by a direct path (module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hot: dict[str, Handler] | None = None
        self._direct: ASGIApp | None = None

    def _build_direct(self) -> tuple[dict[str, Handler], ASGIApp]:
        # Built on the first request, once every middleware and the models are in place.
        app: ASGIApp = _answer
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return hot_routes(self.state.models), app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not self.root_path:
            if self._hot is None or self._direct is None:
                self._hot, self._direct = self._build_direct()
            handler = self._hot.get(scope["path"])
            if handler is not None:
                scope["app"] = self
                scope["ghaf.handler"] = handler
                await self._direct(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
