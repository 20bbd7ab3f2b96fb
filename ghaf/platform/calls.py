"""How a route reaches a service: at most one worker-thread hop per request.

The request plumbing every domain's router uses; it sits below the domains and imports
nothing above ``core`` at run time.

Routes are ``async def`` and hand the service function to :class:`ServiceCall`, which,
in a single threadpool hop (or inline, for SQLite reads), opens a session, authenticates
the bearer token, runs the service with the resulting :class:`Context`, and rolls back
whatever the service left uncommitted. Sync dependencies would cost a hop each (enter,
endpoint, exit), which on a
small machine costs more than authentication itself.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, Concatenate, ParamSpec, TypeVar

import anyio
from fastapi import Depends, Query, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ghaf.core.paging import DEFAULT_LIMIT, MAX_LIMIT
from ghaf.core.settings import Settings

if TYPE_CHECKING:
    # Names only, for the type checker: at run time this module imports nothing above
    # core. The runtime (ghaf/runtime.py) is whatever the app keeps in ``app.state``.
    from ghaf.runtime import Resolved, Runtime
    from ghaf.security.context import Context

AUTH_STATE = "ghaf_auth"
"""Where the server's authentication guard leaves the request's resolved caller."""
P = ParamSpec("P")
R = TypeVar("R")
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ServiceCall:
    """Runs service functions for one request, as its authenticated caller."""

    def __init__(self, request: Request, *, write: bool | None = None) -> None:
        self.runtime: Runtime = request.app.state.runtime
        self._write = request.method not in _READ_METHODS if write is None else write
        # Reads on SQLite run on the event loop: they are sub-millisecond local-file reads
        # that never wait for writers (WAL), and a thread hop under the GIL costs more
        # than the query. Writes (which may wait for the write lock or hash a password)
        # and every PostgreSQL call, which waits on the network, go to a worker thread.
        self._inline = not self._write and self.runtime.database.is_sqlite
        self._authorization = request.headers.get("authorization")
        # Resolved before the body was read, by the server's guard (ghaf/server/guards.py).
        self._resolved: Resolved | None = getattr(request.state, AUTH_STATE, None)
        self._request_id = getattr(request.state, "request_id", None)
        self._client = request.client.host if request.client else None

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    def _open(self, *, authenticated: bool) -> Context:
        ctx = self.runtime.context(
            write=self._write, request_id=self._request_id, client=self._client
        )
        if authenticated:
            try:
                resolved = self._resolved
                if resolved is None or (self._write and resolved.epoch is not None):
                    # Not resolved yet, or through the read cache, which writes never use.
                    resolved = self.runtime.resolve_caller(
                        self._authorization,
                        write=self._write,
                        request_id=self._request_id,
                        client=self._client,
                    )
                    self._resolved = resolved
                ctx.caller = resolved.caller
                if ctx.cache is not None:
                    ctx.epoch = (
                        resolved.epoch
                        if resolved.epoch is not None
                        else ctx.cache.read_epoch(ctx.database)
                    )
            except BaseException:
                _close(ctx)
                raise
        return ctx

    def _run(
        self,
        authenticated: bool,
        fn: Callable[Concatenate[Context, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        ctx = self._open(authenticated=authenticated)
        try:
            return fn(ctx, *args, **kwargs)
        finally:
            _close(ctx)

    async def __call__(
        self, fn: Callable[Concatenate[Context, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """``fn(ctx, *args, **kwargs)`` as the authenticated caller."""
        if self._inline:
            return self._run(True, fn, *args, **kwargs)
        return await run_in_threadpool(lambda: self._run(True, fn, *args, **kwargs))

    async def flow(
        self,
        fn: Callable[Concatenate[Context, P], Awaitable[R]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Await the flow ``fn(ctx, *args, **kwargs)`` as the authenticated caller.

        For multi-step actions that stream (uploads): the flow runs its own steps on
        worker threads and ends its transactions itself; the context is closed after.
        """
        if self._inline:
            ctx = self._open(authenticated=True)
        else:
            ctx = await run_in_threadpool(self._open, authenticated=True)
        try:
            result = await fn(ctx, *args, **kwargs)
        except BaseException:
            # A failed step may leave a transaction to roll back: not on the event loop,
            # and not skipped when the request was cancelled (a client went away).
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(_close, ctx)
            raise
        _close(ctx)  # the flow committed: nothing is left to roll back
        return result

    async def require_visible(self, project: str) -> None:
        """Raise NotFound (audited) unless the caller can see ``project``.

        For refusing a bad body: it must not tell someone outside the project more than
        a missing project would (FastAPI and hand-parsed bodies are checked before the
        service's own door).
        """
        read = copy.copy(self)  # the same caller, as a read: no write lock for a refusal
        read._write, read._inline = False, self.runtime.database.is_sqlite
        await read(_visible, project)

    async def anonymous(
        self, fn: Callable[Concatenate[Context, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """For the few routes that establish identity themselves (password login)."""
        return await run_in_threadpool(lambda: self._run(False, fn, *args, **kwargs))

    async def stream(
        self,
        fn: Callable[Concatenate[Context, P], Iterator[str]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Iterator[bytes]:
        """Authorise now (so refusals are proper errors); stream lines afterwards."""
        ctx = await run_in_threadpool(self._open, authenticated=True)
        try:
            lines = await run_in_threadpool(fn, ctx, *args, **kwargs)
        except BaseException:
            _close(ctx)
            raise

        def body() -> Iterator[bytes]:
            try:
                for line in lines:
                    yield line.encode() + b"\n"
            finally:
                _close(ctx)

        return body()


def _visible(ctx: Context, project: str) -> None:
    ctx.in_project(project)


def _close(ctx: Context) -> None:
    ctx.close()  # rolls back whatever the service did not commit


async def service_call(request: Request) -> ServiceCall:
    return ServiceCall(request)


async def read_service_call(request: Request) -> ServiceCall:
    return ServiceCall(request, write=False)


async def audited_read_call(request: Request) -> ServiceCall:
    # A GET whose success is audited (a download) writes that row, and a read session
    # never writes: on SQLite it has no transaction, so two appenders could both bump
    # the audit chain's head.
    return ServiceCall(request, write=True)


CALL_DEPENDENCIES: dict[object, bool | None] = {
    service_call: None,
    read_service_call: False,
    audited_read_call: True,
}
"""The dependencies that make a ``ServiceCall``, with the ``write`` each passes (hot
routes build the same call: ghaf/server/hot_routes.py)."""

Call = Annotated[ServiceCall, Depends(service_call)]
# For POST routes that only read (queries with bodies too big for a URL): on SQLite
# they then neither take nor wait for the write lock.
ReadCall = Annotated[ServiceCall, Depends(read_service_call)]
# For GET routes that audit their success (downloads): a write transaction for the row.
AuditedReadCall = Annotated[ServiceCall, Depends(audited_read_call)]
PageSize = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page (1 to {MAX_LIMIT}).")
]
"""The ``page_size`` query parameter of every list (docs/conventions.md)."""
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page.")]
DEFAULT_PAGE = DEFAULT_LIMIT


def body_components(*models: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that parses its own body: the models' request
    schemas, which the app's OpenAPI document moves into ``components/schemas`` (see
    ghaf/server/openapi.py), so ``{"$ref": "#/components/schemas/<Model>"}`` resolves."""
    ref = "#/components/schemas/{model}"
    return {
        "x-ghaf-components": {
            model.__name__: model.model_json_schema(ref_template=ref) for model in models
        }
    }


def bytes_response(description: str, *media_types: str) -> dict[str, Any]:
    """A success response of raw bytes, for ``responses=`` of a route that streams them
    (FastAPI would document JSON): the OpenAPI document then names the real media type."""
    binary = {"type": "string", "format": "binary"}
    return {"description": description, "content": {m: {"schema": binary} for m in media_types}}


def json_response(body: bytes | BaseModel) -> Response:
    """A JSON answer from pre-rendered bytes or a response model (as FastAPI renders it)."""
    data = body if isinstance(body, bytes) else body.model_dump_json().encode()
    return Response(data, media_type="application/json")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime
