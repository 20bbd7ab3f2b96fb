"""A few read routes served before FastAPI's routing, for lookups on a latency budget.

FastAPI (>= 0.160) matches a request by walking every included router's routes, binds
dependencies and validates the response model: about two thirds of a cached lookup's
cost. A hot route here matches one compiled pattern and calls its handler directly. The
handler goes through the same door as every route (``ServiceCall``: authentication, the
service's authorisation, the epoch-checked cache) and errors leave as the same problem
documents. The FastAPI route of the same path stays declared, for the OpenAPI document.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ghaf.core.errors import GhafError
from ghaf.server.problems import problem_response

Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]


def json_response(body: bytes | BaseModel) -> Response:
    """A JSON answer from pre-rendered bytes or a response model (as FastAPI renders it)."""
    data = body if isinstance(body, bytes) else body.model_dump_json().encode()
    return Response(data, media_type="application/json")


log = logging.getLogger("ghaf.server")


@dataclass(frozen=True)
class HotRoute:
    method: str
    path: str  # a template such as /api/v1/projects/{project}/models/{name}
    handler: Handler

    def pattern(self) -> re.Pattern[str]:
        parts = re.split(r"\{(\w+)\}", self.path)  # literal, name, literal, name, ...
        return re.compile(
            "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
            + "$"
        )


class HotRoutes:
    """Pure ASGI: dispatch matching requests to their handler, pass the rest on."""

    def __init__(self, app: ASGIApp, routes: list[HotRoute]) -> None:
        self.app = app
        self.routes = [(r, r.pattern()) for r in routes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route, pattern in self.routes:
                if scope["method"] != route.method:
                    continue
                found = pattern.match(scope["path"])
                if found is not None:
                    scope["route"] = route  # its .path labels the request's metrics
                    await self._serve(route, found.groupdict(), scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _serve(
        self, route: HotRoute, params: dict[str, str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        request = Request(scope, receive)
        try:
            response = await route.handler(request, params)
        except GhafError as error:
            response = problem_response(error, request)
        except Exception:
            log.exception("unhandled error")
            response = problem_response(
                GhafError("internal server error; see the server log with this request_id"),
                request,
            )
        await response(scope, receive, send)
