"""A few read routes served before FastAPI's routing, for lookups on a latency budget.

FastAPI (>= 0.160) matches a request by walking every included router's routes, binds
dependencies and validates the response model: about two thirds of a cached lookup's
cost. A hot route matches one compiled pattern and calls its endpoint directly.

A domain's manifest names the endpoints of its router that are hot (ghaf/domains.py);
:func:`hot_routes_of` finds each one's FastAPI route and serves the *same function*, so
a hot path has exactly one handler and cannot drift from its OpenAPI twin. The endpoint
gets the same ``ServiceCall`` its ``Call``/``ReadCall`` dependency would make
(authentication, the service's authorisation, the epoch-checked cache), and an error
leaves as the same problem document, through the same handler (ghaf/server/problems.py).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ghaf.platform.calls import CALL_DEPENDENCIES, ServiceCall, json_response
from ghaf.platform.manifest import Endpoint
from ghaf.server.problems import problem_for

Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]


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


def hot_route(route: APIRoute, prefix: str) -> HotRoute:
    """``route``'s endpoint as a hot route. Refuses (``ValueError``) an endpoint that
    needs more than FastAPI's routing would hand it here: its parameters must be ``str``
    path parameters and one ``ServiceCall`` dependency."""
    dependant = route.dependant
    name = route.endpoint.__qualname__
    extra = dependant.query_params + dependant.header_params + dependant.cookie_params
    methods = sorted(route.methods or ())
    if extra or dependant.body_params or len(methods) != 1:
        raise ValueError(f"hot route {name}: only GET-style endpoints with path parameters")
    if any(p.field_info.annotation is not str for p in dependant.path_params):
        raise ValueError(f"hot route {name}: path parameters must be str")
    calls = [d for d in dependant.dependencies if d.call in CALL_DEPENDENCIES]
    if len(calls) != 1 or len(dependant.dependencies) != 1 or calls[0].name is None:
        raise ValueError(f"hot route {name}: needs exactly one Call or ReadCall dependency")
    call_name, write = calls[0].name, CALL_DEPENDENCIES[calls[0].call]
    endpoint = route.endpoint

    async def handler(request: Request, params: dict[str, str]) -> Response:
        result: Any = await endpoint(**{call_name: ServiceCall(request, write=write)}, **params)
        if isinstance(result, Response):
            return result
        if isinstance(result, BaseModel):
            return json_response(result)
        raise TypeError(f"hot route {name} returned {type(result).__name__}")

    return HotRoute(methods[0], prefix + route.path, handler)


def hot_routes_of(router: APIRouter, endpoints: Iterable[Endpoint], prefix: str) -> list[HotRoute]:
    """The hot routes for ``endpoints``, each found among ``router``'s routes."""
    by_endpoint = {r.endpoint: r for r in router.routes if isinstance(r, APIRoute)}
    found = []
    for endpoint in endpoints:
        route = by_endpoint.get(endpoint)
        if route is None:
            raise ValueError(f"hot route {endpoint.__qualname__} is not a route of its router")
        found.append(hot_route(route, prefix))
    return found


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
        except Exception as error:
            response = problem_for(error, request)
        await response(scope, receive, send)
