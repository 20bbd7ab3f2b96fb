"""The serving hot path: prediction requests answered without FastAPI's routing.

A serving app answers ``POST /v2/models/{model}[/versions/{version}]/infer`` and
``POST /predict`` thousands of times a second, and for a small model FastAPI's routing,
dependency solving and middleware cost several times the model call
(docs/adr/0021-serving-hot-path.md). :class:`HotPath` holds a table of those paths as
exact strings, built once from the served models, and answers a :class:`Call` to one of
them with everything the app's middleware does on other routes, in the same order: a
request id (the caller's safe ``X-Request-ID`` or a new one, echoed), the invoke check
(ghaf/serving/auth.py), the route's function, its errors answered as the exception
handlers answer them, and the metrics and prediction log (ghaf/serving/metrics.py).

Two doors lead to it: :class:`ServingApp` (the FastAPI app that
:func:`ghaf.serving.app.create_serving_app` returns) sends a matching ASGI request
there, and ``ghaf serve`` reads it straight off the connection (ghaf/serving/wire.py).
Everything else, unknown models included, goes through FastAPI, so every way gives the
same answers, headers and errors.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from ghaf.core.errors import GhafError
from ghaf.serving import predict, protocol
from ghaf.serving.auth import Refused, admit
from ghaf.serving.calls import Answer, Call
from ghaf.serving.metrics import Observation
from ghaf.serving.served import ModelTable, error_reply, json_reply

if TYPE_CHECKING:
    from ghaf.serving.auth import Authorizer
    from ghaf.serving.metrics import ServingMetrics

__all__ = ["HotPath", "ServingApp", "hot_routes"]
log = logging.getLogger("ghaf.serving")
Handler = Callable[[Call], Awaitable[Answer]]


def hot_routes(table: ModelTable, limit: int) -> dict[str, Handler]:
    """The POST paths the hot path answers, each with its handler (``limit``: the most
    body bytes a request may send)."""

    def infer(name: str, version: str | None) -> Handler:
        async def handle(call: Call) -> Answer:
            return await protocol.answer_infer(call, table.get(name, version), limit=limit)

        return handle

    async def predict_call(call: Call) -> Answer:
        return await predict.predict(call, table, limit=limit)

    routes: dict[str, Handler] = {"/predict": predict_call}
    for served in table:
        routes[f"/v2/models/{served.name}/infer"] = infer(served.name, None)
        routes[f"/v2/models/{served.name}/versions/{served.version}/infer"] = infer(
            served.name, served.version
        )
    return routes


INTERNAL = "internal error; see the server log"


class HotPath:
    """The prediction routes and what runs around them (module docstring)."""

    def __init__(
        self,
        table: ModelTable,
        *,
        authorizer: Authorizer,
        metrics: ServingMetrics,
        max_body_bytes: int,
    ) -> None:
        self.routes = hot_routes(table, max_body_bytes)
        self.max_body_bytes = max_body_bytes
        self.authorizer = authorizer
        self.metrics = metrics

    async def answer(self, handler: Handler, call: Call) -> Answer:
        """``call`` answered by ``handler``: checked, counted and logged (the observer's
        bookkeeping, :class:`~ghaf.serving.metrics.Observation`). A failure to count
        or log it raises: each door answers that as uvicorn answers an app's error."""
        with Observation(self.metrics, call.raw_headers) as seen:
            try:
                seen.grant = await admit(
                    self.authorizer, call.headers.get("authorization"), call.client
                )
                answer = await handler(call)
            except Refused as refused:
                answer = json_reply({"error": refused.message}, refused.status)
                answer.headers.extend(refused.headers)
            except GhafError as error:
                answer = error_reply(error)
            except ClientDisconnect:
                raise  # counted as such; nobody to answer
            except Exception:
                log.exception("serving request failed")
                answer = json_reply({"error": INTERNAL}, 500)
            seen.status = answer.status
        answer.headers.append(seen.header)
        return answer


class ServingApp(FastAPI):
    """FastAPI, with its prediction routes answered by the hot path (module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hot: HotPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.hot is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and not self.root_path
        ):
            handler = self.hot.routes.get(scope["path"])
            if handler is not None:
                try:
                    answer = await self.hot.answer(handler, Call.of_asgi(scope, receive))
                except ClientDisconnect:
                    return  # nobody to answer
                await answer.send(send)
                return
        await super().__call__(scope, receive, send)
